//! The envelope follows the patterns: `--from` with `{n}` (message number) and `{k}` (client
//! thread), `--to` with `{r}` (recipient index) and `{d}` (domain number), and `--domains`
//! spreads the recipients evenly over the domains (recipient `r` of message `n` goes to domain
//! `(n·rcpts + r) mod domains`). Checked on what `sink --save` wrote, message by message.

mod common;

use std::collections::BTreeMap;

use common::{Sink, count, run_ok};

#[test]
fn from_and_to_patterns_and_the_domain_spread() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("saved");
    let sink = Sink::start(&["--save", save.to_str().unwrap()]);
    let target = sink.target();
    let run = run_ok(&[
        "--target",
        &target,
        "--messages",
        "30",
        "--duration",
        "60s",
        "--concurrency",
        "2",
        "--threads",
        "2",
        "--per-connection",
        "5",
        "--rcpts",
        "2",
        "--domains",
        "3",
        "--from",
        "src{n}.t{k}@from.test",
        "--to",
        "r{r}.m{n}@dest{d}.test",
    ]);
    assert_eq!(count(&run, "ok"), 30);
    assert_eq!(sink.stop()["messages"], 30);
    let mut per_domain: BTreeMap<String, u32> = BTreeMap::new();
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(&save).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let env: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let eml = std::fs::read_to_string(path.with_extension("eml")).unwrap();
        // The message number, from the header ringload stamps: `X-Ringload-Id: <run>.<n>`.
        let id = eml.lines().find_map(|l| l.strip_prefix("X-Ringload-Id: ")).expect("X-Ringload-Id");
        let n: u64 = id.rsplit_once('.').unwrap().1.parse().unwrap();
        numbers.push(n);
        let from = env["from"].as_str().unwrap();
        let thread = from
            .strip_prefix(&format!("src{n}.t"))
            .and_then(|rest| rest.strip_suffix("@from.test"))
            .unwrap_or_else(|| panic!("message {n}: from {from}"));
        assert!(["0", "1"].contains(&thread), "message {n}: thread {thread} of 2");
        let rcpts: Vec<&str> = env["rcpts"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        let expected: Vec<String> = (0..2).map(|r| format!("r{r}.m{n}@dest{}.test", (n * 2 + r) % 3)).collect();
        assert_eq!(rcpts, expected, "message {n}");
        for r in rcpts {
            *per_domain.entry(r.split_once('@').unwrap().1.to_string()).or_default() += 1;
        }
    }
    numbers.sort();
    assert_eq!(numbers, (0..30).collect::<Vec<u64>>(), "every message number once");
    let spread: Vec<(&str, u32)> = per_domain.iter().map(|(d, c)| (d.as_str(), *c)).collect();
    assert_eq!(spread, [("dest0.test", 20), ("dest1.test", 20), ("dest2.test", 20)]);
}
