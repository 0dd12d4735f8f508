//! `--source-ip` spreads connections over the given local addresses, round robin: the sink
//! records each message's client address (in `--save`'s envelope files), and both sources show
//! up, equally often.

mod common;

use std::collections::BTreeMap;

use common::{Sink, count, run_ok};

#[test]
fn connections_come_from_each_source_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&["--save", dir.path().to_str().unwrap()]);
    let run = run_ok(&[
        "--target",
        &sink.target(),
        "--source-ip",
        "127.0.0.2,127.0.0.3",
        "--concurrency",
        "2",
        "--threads",
        "1",
        "--messages",
        "20",
        "--duration",
        "60s",
    ]);
    assert_eq!(count(&run, "ok"), 20);
    sink.stop();
    let mut by_ip: BTreeMap<String, u32> = BTreeMap::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            *by_ip.entry(v["client_ip"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, u32> = [("127.0.0.2".to_string(), 10), ("127.0.0.3".to_string(), 10)].into();
    assert_eq!(by_ip, expected);
}
