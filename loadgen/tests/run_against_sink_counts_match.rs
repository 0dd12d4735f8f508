//! `ringload run` against `ringload sink`: every message the run reports as accepted is one the
//! sink counted, no more, no less, in each connection model (a connection per message, many
//! messages per connection with pipelining and BDAT, open loop), and the recipients and bytes
//! add up too.

mod common;

use common::{Sink, count, run_ok};

#[test]
fn one_connection_per_message() {
    let sink = Sink::start(&[]);
    let run = run_ok(&["--target", &sink.target(), "--concurrency", "8", "--messages", "600", "--duration", "60s"]);
    let fin = sink.stop();
    assert_eq!(count(&run, "ok"), 600);
    assert_eq!(count(&run, "failed"), 0);
    assert_eq!(count(&run, "connections"), 600);
    assert_eq!(fin["messages"], 600);
    assert_eq!(fin["connections"], 600);
    assert_eq!(fin["transactions"], 600);
    assert_eq!(fin["recipients"], 600);
    // Generated messages have exactly the requested size (1k by default).
    assert_eq!(fin["bytes"], 600 * 1024);
    assert_eq!(count(&run, "bytes"), 600 * 1024);
}

#[test]
fn many_messages_per_connection_with_recipients_domains_and_bdat() {
    let sink = Sink::start(&[]);
    let run = run_ok(&[
        "--target",
        &sink.target(),
        "--concurrency",
        "4",
        "--messages",
        "400",
        "--duration",
        "60s",
        "--per-connection",
        "50",
        "--rcpts",
        "3",
        "--domains",
        "3",
        "--size",
        "1k:80,10k:15,30k:5",
        "--bdat",
    ]);
    let fin = sink.stop();
    assert_eq!(count(&run, "ok"), 400);
    assert_eq!(fin["messages"], 400);
    assert_eq!(fin["recipients"], 1200);
    assert_eq!(count(&run, "rcpts_ok"), 1200);
    assert_eq!(fin["bytes"].as_u64(), Some(count(&run, "bytes")));
    // 400 messages, 50 per connection: at least 8 connections (a slot may open a new one for
    // the last tickets while another slot's connection still has room), and few more.
    let conns = count(&run, "connections");
    assert!((8..=12).contains(&conns), "{conns} connections");
    assert_eq!(fin["connections"].as_u64(), Some(conns));
}

#[test]
fn open_loop_with_a_message_count() {
    let sink = Sink::start(&[]);
    let run = run_ok(&[
        "--target",
        &sink.target(),
        "--rate",
        "500/s",
        "--messages",
        "300",
        "--duration",
        "30s",
        "--per-connection",
        "20",
        "--no-pipelining",
    ]);
    let fin = sink.stop();
    assert_eq!(count(&run, "ok"), 300);
    assert_eq!(run["unsent"], 0);
    assert_eq!(fin["messages"], 300);
}
