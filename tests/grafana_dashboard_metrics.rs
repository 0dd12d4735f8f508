//! Every metric name the Grafana dashboard (dist/grafana-ringrelay.json) queries is one that
//! `/metrics` of a running relay exposes, so the dashboard cannot silently go blank after a
//! rename. Names come from every `expr` and template `query` in the JSON.

mod common;

use common::ops::scrape;
use common::{DEFAULT_CONFIG, Relay};

fn strings<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == key
                    && let Some(s) = v.as_str()
                {
                    out.push(s);
                }
                strings(v, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, key, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_only_exposed_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/grafana-ringrelay.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    strings(&dash, "expr", &mut exprs);
    strings(&dash, "query", &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard has its queries: {}", exprs.len());
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = *e;
        while let Some(i) = rest.find("ringrelay_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            used.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    let relay = Relay::start(DEFAULT_CONFIG);
    let exposed = scrape(&relay).names();
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "dashboard queries metrics /metrics does not expose: {missing:?}");
    // And the dashboard covers what an operator needs first.
    for must in [
        "ringrelay_messages_accepted_total",
        "ringrelay_smtp_rejects_total",
        "ringrelay_deliveries_total",
        "ringrelay_accept_latency_seconds_bucket",
        "ringrelay_delivery_latency_seconds_bucket",
        "ringrelay_queue_messages",
        "ringrelay_queue_oldest_age_seconds",
        "ringrelay_spool_bytes",
        "ringrelay_spool_batches_total",
        "ringrelay_spool_syncs_total",
    ] {
        assert!(used.contains(must), "the dashboard does not show {must}");
    }
}
