//! Operator-facing refusals happen before any traffic, with a message that says what to do:
//! a non-loopback target without --allow-remote (0.0.0.0 is not loopback even though Linux
//! would route it locally), an unbounded run, an address pattern with an unknown variable,
//! --domains without `{d}`.

mod common;

use std::time::Duration;

use common::ringload;

fn refused(args: &[&str], expect: &str) {
    let out = ringload(args, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{args:?} should be refused:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(expect), "{args:?}: stderr lacks `{expect}`:\n{}", out.stderr);
    assert!(out.json.is_none(), "no result for a refused run");
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    refused(&["run", "--target", "0.0.0.0:25", "--messages", "1"], "--allow-remote");
    refused(
        &["sweep", "--target", "0.0.0.0:25", "--start", "10", "--step", "10", "--p99-target", "1s"],
        "--allow-remote",
    );
    refused(&["run", "--target", "127.0.0.1:25"], "--duration and/or --messages");
    refused(&["run", "--target", "127.0.0.1:25", "--messages", "1", "--to", "a{x}@b"], "unknown variable");
    refused(&["run", "--target", "127.0.0.1:25", "--messages", "1", "--domains", "3", "--to", "a@b"], "has no {d}");
    refused(&["run", "--target", "127.0.0.1:25", "--messages", "1", "--size", "1q"], "unknown size unit");
    refused(&["run", "--target", "nowhere", "--messages", "1"], "HOST:PORT");
    let help = ringload(&["run", "--help"], Duration::from_secs(30));
    assert!(help.stdout.contains("--allow-remote") && help.stdout.contains("denial-of-service"), "{}", help.stdout);
}
