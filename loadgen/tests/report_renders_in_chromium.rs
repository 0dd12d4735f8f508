//! The HTML report really renders in a browser: `scripts/check-report.sh` takes a headless
//! Chromium screenshot and dumps the DOM after load, checking the charts are there. Where
//! Chromium is not installed the test prints a `SKIP` line and passes (`.ci/run` installs it
//! with apt-get when it can); where it is installed, every failure of the check fails the test,
//! the script's "not installed" exit status (77) included.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Sink, ringload, run_ok};

#[test]
fn report_renders_in_headless_chromium() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-report.sh");
    let have_chromium = ["chromium", "chromium-browser", "google-chrome"].iter().any(|b| {
        Command::new("sh").args(["-c", &format!("command -v {b}")]).output().is_ok_and(|o| o.status.success())
    });
    if !have_chromium {
        // Written to the stderr descriptor itself, not through eprintln!, which the test
        // harness captures: the SKIP shows in a plain `cargo test` run.
        let line = format!(
            "SKIP report_renders_in_headless_chromium: chromium is not installed (apt-get install -y chromium); \
             {script} not run\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        return;
    }
    let sink = Sink::start(&[]);
    let run = run_ok(&["--target", &sink.target(), "--rate", "200/s", "--duration", "2s"]);
    drop(sink);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let html = dir.path().join("run.html");
    let png = dir.path().join("run.png");
    std::fs::write(&json, serde_json::to_string(&run).unwrap()).unwrap();
    let out = ringload(&["report", json.to_str().unwrap(), "-o", html.to_str().unwrap()], Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.stderr);
    let check = Command::new(script).arg(&html).arg(&png).output().expect("run check-report.sh");
    let stdout = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    // Chromium was found above, so 77 ("not installed") is a failure like any other here.
    assert!(check.status.success(), "check-report.sh failed ({:?}):\n{stdout}\n{stderr}", check.status);
    assert!(stdout.contains("check-report: OK"), "{stdout}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}
