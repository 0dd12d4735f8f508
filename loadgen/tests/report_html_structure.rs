//! `ringload report` turns run, sweep and sink JSON into one self-contained HTML page. Checked
//! without a browser: the page is well formed where it matters (balanced chart, table and
//! figure elements), holds the expected SVG charts with their data points inside the plot
//! area, embeds the input JSON unchanged, and refers to nothing outside itself.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Sink, ringload, ringload_in};
use serde_json::Value;

/// Renders `json_path` and returns the HTML.
fn render(json_path: &Path) -> String {
    let html_path = json_path.with_extension("html");
    let out =
        ringload(&["report", json_path.to_str().unwrap(), "-o", html_path.to_str().unwrap()], Duration::from_secs(30));
    assert!(out.status.success(), "report failed: {}", out.stderr);
    std::fs::read_to_string(html_path).unwrap()
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

/// The structural checks every report must pass; returns the number of charts.
fn check_page(html: &str, input: &Value) -> usize {
    assert!(html.starts_with("<!DOCTYPE html>"), "doctype");
    for tag in ["html", "head", "body", "style", "title"] {
        assert_eq!(count(html, &format!("<{tag}")), count(html, &format!("</{tag}>")), "<{tag}> balanced");
    }
    for tag in ["svg", "figure", "table", "polyline", "g class=\"series\""] {
        let close = if tag.starts_with('g') { "</g>".to_string() } else { format!("</{tag}>") };
        assert_eq!(count(html, &format!("<{tag}")), count(html, &close), "<{tag}> balanced");
    }
    // Self-contained: no external scripts, styles, images, fonts or links.
    for forbidden in ["http://", "https://", " src=", " href=", "@import", "url("] {
        assert!(!html.contains(forbidden), "the page refers outside itself: {forbidden}");
    }
    // The data is embedded, unchanged.
    let start = html.find(r#"<script type="application/json" id="ringload-data">"#).expect("embedded data");
    let rest = &html[start..];
    let body = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
    let embedded: Value = serde_json::from_str(&body.replace("<\\/", "</")).expect("embedded JSON parses");
    assert_eq!(&embedded, input, "embedded data equals the input");
    // Every chart: a viewBox, and polylines whose points lie inside it.
    let charts = count(html, "<svg class=\"plot\"");
    for chunk in html.split("<polyline").skip(1) {
        let pts = chunk.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        let pairs: Vec<(f64, f64)> = pts
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(!pairs.is_empty(), "a polyline without points");
        for (x, y) in pairs {
            assert!((0.0..=880.0).contains(&x) && (0.0..=360.0).contains(&y), "point {x},{y} outside the chart");
        }
    }
    charts
}

#[test]
fn run_sweep_and_sink_reports_are_complete_and_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let sink_json = dir.path().join("sink.json");
    let sink = Sink::start(&["--json", sink_json.to_str().unwrap(), "--latency", "1ms", "--tempfail", "0.1"]);
    let target = sink.target();

    // A run with failures (the sink tempfails 10 %), so the failure table appears.
    let out = ringload_in(
        dir.path(),
        &["run", "--quiet", "--no-pin", "--target", &target, "--rate", "300/s", "--duration", "2s", "--rcpts", "2"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let run = out.json.unwrap();
    let run_path = dir.path().join("run.json");
    std::fs::write(&run_path, serde_json::to_string(&run).unwrap()).unwrap();
    let html = render(&run_path);
    assert_eq!(check_page(&html, &run), 3, "run: percentiles, throughput, latency over time");
    for id in ["percentiles", "throughput", "latency-time"] {
        assert!(html.contains(&format!("<figure class=\"chart\" id=\"{id}\">")), "chart {id}");
    }
    // The percentile axis and one curve per measured phase.
    assert!(html.contains(">99%</text>") && html.contains(">99.9%</text>"));
    for phase in ["connect", "greeting", "ehlo", "mail_rcpt", "submission", "message"] {
        assert!(html.contains(&format!("data-series=\"{phase}\"")), "curve for {phase}");
    }
    assert!(html.contains(&format!("<td>{target}</td>")), "summary table");
    assert!(html.contains("<h3>Failures</h3>") && html.contains("451 4.3.0"), "failure table");

    // A sweep of two steps.
    let out = ringload_in(
        dir.path(),
        &[
            "sweep",
            "--quiet",
            "--no-pin",
            "--target",
            &target,
            "--start",
            "200",
            "--step",
            "200",
            "--step-duration",
            "1s",
            "--pause",
            "0s",
            "--warmup",
            "0",
            "--p99-target",
            "500ms",
            "--max-steps",
            "2",
            "--max-errors",
            "50%",
            "--min-achieved",
            "50%",
        ],
        Duration::from_secs(60),
    );
    // Exit 0, or 2 if no step held on a very busy machine: either way a result is written,
    // and the report must render it.
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", out.stderr);
    let sweep = out.json.unwrap();
    // Two steps, or one if the first already broke a limit on a very busy machine.
    let steps = sweep["steps"].as_array().unwrap().len();
    assert!((1..=2).contains(&steps), "{steps} steps");
    let sweep_path = dir.path().join("sweep.json");
    std::fs::write(&sweep_path, serde_json::to_string(&sweep).unwrap()).unwrap();
    let html = render(&sweep_path);
    assert_eq!(check_page(&html, &sweep), 2 + 3, "sweep: knee, rates, then the capacity step's three");
    assert!(html.contains("id=\"sweep-knee\"") && html.contains("id=\"sweep-rate\""));
    assert!(html.contains("target 500ms"), "the target line");
    assert_eq!(count(&html, "<tr class=\"pass\">") + count(&html, "<tr class=\"fail\">"), steps, "one row per step");

    // The sink's own report.
    sink.stop();
    let sink_result: Value = serde_json::from_str(&std::fs::read_to_string(&sink_json).unwrap()).unwrap();
    assert_eq!(sink_result["kind"], "sink");
    let html = render(&sink_json);
    assert_eq!(check_page(&html, &sink_result), 1, "sink: end-to-end delay percentiles");

    // Not a ringload result: a clear error, no page.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"kind\": \"something\"}").unwrap();
    let out = ringload(&["report", bad.to_str().unwrap()], Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(out.stderr.contains("unknown result kind"), "{}", out.stderr);
}
