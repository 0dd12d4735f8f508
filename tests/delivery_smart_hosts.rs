//! Smart hosts (the Microsoft 365 case: `domains = ["*"]` to one provider relay): every domain
//! routed to a connector's smart hosts shares one pool of connections, capped by the
//! connector's `max_connections_per_domain`, and one transaction per message carries every
//! recipient routed there, whatever their domains. Smart hosts fail over in order. The queue
//! figures stay per recipient domain.

mod common;

use std::collections::BTreeSet;

use common::Relay;
use common::ops;
use common::sink::{Sink, SinkOptions};

fn config(smart_hosts: &str, extra: &str) -> String {
    let cfg = common::DEFAULT_CONFIG
        .replace("smart_hosts = [\"127.0.0.1:{sink}\"]", &format!("smart_hosts = [{smart_hosts}]\n{extra}"))
        .replace("max_recipients = 5", "max_recipients = 100");
    assert!(cfg.contains(smart_hosts), "config template changed");
    cfg
}

#[test]
fn many_domains_share_the_smart_host_pool_and_its_cap() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = Relay::start(&config(&format!("\"127.0.0.1:{}\"", sink.addr.port()), "max_connections_per_domain = 2"));
    let port = relay.port;
    let (threads, per_thread, domains) = (4, 25, 20);
    let clients: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = common::Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)), None);
                c.hello();
                for n in 0..per_thread {
                    let to = format!("u{t}-{n}@d{}.test", (t * per_thread + n) % domains);
                    let r = c.send_mail("app@example.test", &[&to], &format!("Subject: {t}-{n}\r\n\r\nx\r\n"));
                    assert_eq!(r.code, 250, "{r:?}");
                }
            })
        })
        .collect();
    for t in clients {
        t.join().unwrap();
    }
    let total = threads * per_thread;
    let got = sink.wait_for(total, 60);
    let seen: BTreeSet<&str> = got.iter().map(|m| m.rcpts[0].split('@').nth(1).unwrap()).collect();
    assert_eq!(seen.len(), domains, "mail for {domains} domains");
    let connections = sink.connections();
    assert!(connections <= 2, "{total} messages for {domains} domains took {connections} connections (cap 2)");
}

#[test]
fn one_transaction_per_message_carries_every_domain() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = Relay::start(&config(&format!("\"127.0.0.1:{}\"", sink.addr.port()), ""));
    let mut c = relay.client();
    c.hello();
    let rcpts: Vec<String> = (0..5).flat_map(|d| (0..3).map(move |u| format!("u{u}@d{d}.test"))).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    assert_eq!(c.send_mail("app@example.test", &refs, "Subject: fan out\r\n\r\nhi\r\n").code, 250);
    let got = sink.wait_for(1, 30);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sink.count(), 1, "one transaction to the smart host: {:#?}", sink.wait_for(1, 1));
    let mut delivered = got[0].rcpts.clone();
    delivered.sort();
    let mut want = rcpts.clone();
    want.sort();
    assert_eq!(delivered, want, "every recipient, all five domains");
}

#[test]
fn the_next_smart_host_takes_over_from_a_dead_one() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let dead = common::free_port(); // nothing listens there
    let hosts = format!("\"127.0.0.1:{dead}\", \"127.0.0.1:{}\"", sink.addr.port());
    let relay = Relay::start(&config(&hosts, "connect_timeout = \"5s\""));
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["a@dest.test"], "Subject: failover\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(1, 30);
    assert_eq!(got[0].rcpts, ["a@dest.test"]);
    let delivered = ops::track_until(&relay, &["--event", "DELIVER"], 20, |e| !e.is_empty());
    assert_eq!(delivered[0]["remote_host"], "127.0.0.1");
}

#[test]
fn queue_figures_stay_per_recipient_domain_behind_a_smart_host() {
    // Nothing listens on the smart host port: everything is deferred.
    let relay = Relay::start(&config("\"127.0.0.1:{sink}\"", ""));
    let mut c = relay.client();
    c.hello();
    let first = c.send_mail("app@example.test", &["a@one.test", "b@two.test"], "Subject: 1\r\n\r\nx\r\n");
    assert_eq!(first.code, 250);
    assert_eq!(c.send_mail("app@example.test", &["c@one.test"], "Subject: 2\r\n\r\nx\r\n").code, 250);
    ops::track_until(&relay, &["--event", "DEFER"], 20, |e| e.len() == 2);
    let (status, body) = ops::http(&relay, "GET", "/queue");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let domain = |d: &str| v["domains"].as_array().unwrap().iter().find(|x| x["domain"] == d).cloned().unwrap();
    let one = domain("one.test");
    assert_eq!((&one["messages"], &one["recipients"], &one["deferred"]), (&2.into(), &2.into(), &2.into()), "{v:#}");
    let two = domain("two.test");
    assert_eq!((&two["messages"], &two["recipients"], &two["deferred"]), (&1.into(), &1.into(), &1.into()), "{v:#}");
    // The message with two domains lists, for one of them, only that domain's recipient.
    let (_, body) = ops::http(&relay, "GET", "/queue?domain=two.test");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{v:#}");
    assert_eq!(msgs[0]["queue_id"], first.queue_id().unwrap().as_str());
    assert_eq!(msgs[0]["recipients"], serde_json::json!(["b@two.test"]));
    // Retry by domain finds the shared entry that holds a recipient of that domain.
    let (status, body) = ops::http(&relay, "POST", "/queue/retry?domain=two.test");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["retried"], 1, "{body}");
}
