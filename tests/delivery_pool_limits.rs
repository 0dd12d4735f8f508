//! The limits of a pooled outbound connection, seen from the server's side: at most
//! `max_messages_per_connection` transactions per connection (then QUIT and a new one), a QUIT
//! once the connection has been idle for `idle_timeout`, and the one-command-at-a-time path to
//! a server that does not offer PIPELINING (no command is sent before the previous one was
//! answered).

mod common;

use std::collections::BTreeMap;

use common::Relay;
use common::sink::{Sink, SinkOptions};

fn relay(sink: &Sink, settings: &str) -> Relay {
    let cfg = common::DEFAULT_CONFIG
        .replace("{sink}", &sink.addr.port().to_string())
        .replace("name = \"nowhere\"", &format!("name = \"nowhere\"\n{settings}"))
        .replace("max_recipients = 5", "max_recipients = 10");
    Relay::start(&cfg)
}

#[test]
fn messages_per_connection_cap_opens_a_new_connection() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = relay(&sink, "max_messages_per_connection = 3\nmax_connections_per_domain = 1\nidle_timeout = \"1h\"");
    let mut c = relay.client();
    c.hello();
    let total = 10;
    for n in 0..total {
        let r = c.send_mail("app@example.test", &["user@dest.test"], &format!("Subject: {n}\r\n\r\nx\r\n"));
        assert_eq!(r.code, 250);
    }
    let got = sink.wait_for(total, 60);
    let mut per_connection: BTreeMap<usize, usize> = BTreeMap::new();
    for m in &got {
        *per_connection.entry(m.connection).or_default() += 1;
    }
    assert!(per_connection.values().all(|&n| n <= 3), "at most 3 per connection: {per_connection:?}");
    let connections = sink.connections();
    assert!(connections >= total.div_ceil(3), "{connections} connections for {total} messages, 3 each at most");
    // Every connection that reached the cap ended with QUIT (the last may still be open).
    sink.wait_until(20, "QUIT after each full connection", |s| s.quits >= s.connections - 1);
}

#[test]
fn an_idle_connection_quits_after_idle_timeout_and_a_new_one_is_opened() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = relay(&sink, "idle_timeout = \"1s\"");
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["user@dest.test"], "Subject: 1\r\n\r\nx\r\n").code, 250);
    sink.wait_for(1, 30);
    // Nothing more to send: the pooled connection says QUIT once idle for a second.
    sink.wait_until(30, "QUIT of the idle connection", |s| s.quits == 1);
    assert_eq!(sink.connections(), 1);
    assert_eq!(c.send_mail("app@example.test", &["user@dest.test"], "Subject: 2\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(2, 30);
    assert_eq!(sink.connections(), 2, "the closed connection is not reused");
    assert_ne!(got[0].connection, got[1].connection);
}

#[test]
fn without_pipelining_every_command_waits_for_its_reply() {
    let send = |relay: &Relay| {
        let mut c = relay.client();
        c.hello();
        for n in 0..3 {
            let r = c.send_mail(
                "app@example.test",
                &[&format!("a{n}@dest.test"), &format!("permfail{n}@dest.test"), &format!("b{n}@dest.test")],
                &format!("Subject: {n}\r\n\r\n.dot line\r\nx\r\n"),
            );
            assert_eq!(r.code, 250);
        }
    };
    let plain = Sink::start("127.0.0.1:0", SinkOptions { no_pipelining: true, ..Default::default() });
    let relay_plain = relay(&plain, "");
    send(&relay_plain);
    // Three messages, and three bounces for the refused recipients.
    let got = plain.wait_for(6, 30);
    let messages: Vec<_> = got.iter().filter(|m| !m.from.is_empty()).collect();
    assert_eq!(messages.len(), 3);
    for m in messages {
        assert_eq!(m.rcpts.len(), 2, "the refused recipient is left out, the others go: {:?}", m.rcpts);
        assert!(common::strip_received(&m.data).ends_with(b"\r\n.dot line\r\nx\r\n"), "dot-stuffed and unstuffed");
    }
    assert_eq!(plain.state.lock().unwrap().pipelined, 0, "no command sent before the previous reply");
    // The same with a server that offers PIPELINING: the sink does see pipelined commands,
    // so the count above means something.
    let piped = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay_piped = relay(&piped, "");
    send(&relay_piped);
    piped.wait_for(6, 30);
    assert!(piped.state.lock().unwrap().pipelined > 0, "MAIL, RCPT and DATA in one write");
}
