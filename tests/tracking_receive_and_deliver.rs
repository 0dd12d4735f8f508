//! Message tracking of accepted and delivered mail: an anonymous client (127.0.0.1, connector
//! "loopback") and an authenticated one (127.0.0.2, STARTTLS + AUTH PLAIN, connector "auth")
//! each send a message; the tracking log gets RECEIVE events with the right connector,
//! auth_source, auth_user and client_ip, then DELIVER events naming the next hop and its 250
//! reply; and `ringrelay track --json` finds them by queue id, sender, recipient and event.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::ops::{self, TlsClient, events};
use common::pki::Pki;
use common::sink::{Sink, SinkOptions};
use common::{DEFAULT_CONFIG, Relay};

#[test]
fn receive_and_deliver_are_tracked_for_anonymous_and_authenticated_clients() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), &["relay.test"]);
    let cfg = DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string())
        + &ops::auth_connector(&pki.cert_file, &pki.key_file, "s3cret pass", false);
    let relay = Relay::start(&cfg);

    let mut c = relay.client();
    c.hello();
    let body = "Message-ID: <anon-1@example.test>\r\nSubject: anonymous\r\n\r\nhello\r\n";
    let r = c.send_mail("app@example.test", &["alice@dest.test"], body);
    assert_eq!(r.code, 250, "{r:?}");
    let anon_id = r.queue_id().unwrap();

    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut t = TlsClient::connect(addr, IpAddr::from([127, 0, 0, 2]), &pki.ca_file, "relay.test");
    assert_eq!(t.auth_plain("svc", "s3cret pass").code, 235);
    let body = "Message-ID: <auth-1@example.test>\r\nFrom: svc@example.test\r\nSubject: authenticated\r\n\r\nhi\r\n";
    let r = t.send_mail("svc@example.test", &["bob@dest.test", "carol@dest.test"], body);
    assert_eq!(r.code, 250, "{r:?}");
    let auth_id = r.queue_id().unwrap();
    sink.wait_for(2, 20);

    // Each core flushes its own file every 100 ms: wait for all of them.
    let all = ops::track_until(&relay, &[], 20, |all| {
        events(all, "RECEIVE").len() == 2
            && events(all, "DELIVER").iter().map(|e| e["recipients"].as_array().unwrap().len()).sum::<usize>() == 3
    });
    let receive = events(&all, "RECEIVE");
    assert_eq!(receive.len(), 2, "{all:#?}");
    let anon = receive.iter().find(|e| e["queue_id"] == anon_id.as_str()).expect("RECEIVE of the anonymous message");
    assert_eq!(anon["connector"], "loopback");
    assert_eq!(anon["auth_source"], "Anonymous");
    assert_eq!(anon["auth_user"], serde_json::Value::Null);
    assert_eq!(anon["client_ip"], "127.0.0.1");
    assert_eq!(anon["sender"], "app@example.test");
    assert_eq!(anon["recipients"], serde_json::json!(["alice@dest.test"]));
    assert_eq!(anon["message_id"], "<anon-1@example.test>");
    assert_eq!(anon["remote_host"], "client.test", "the client's EHLO name");
    assert_eq!(anon["reply"], format!("250 2.6.0 <{anon_id}> Queued mail for delivery"));
    assert!(anon["size"].as_u64().unwrap() > body.len() as u64, "size as stored, Received: included");
    assert!(anon["latency_ms"].is_u64());
    assert!(ringrelay::clock::parse_rfc3339(anon["time"].as_str().unwrap()).is_some(), "RFC 3339 time");

    let auth =
        receive.iter().find(|e| e["queue_id"] == auth_id.as_str()).expect("RECEIVE of the authenticated message");
    assert_eq!(auth["connector"], "auth");
    assert_eq!(auth["auth_source"], "Authenticated");
    assert_eq!(auth["auth_user"], "svc");
    assert_eq!(auth["client_ip"], "127.0.0.2");
    assert_eq!(auth["recipients"], serde_json::json!(["bob@dest.test", "carol@dest.test"]));

    let deliver = events(&all, "DELIVER");
    let d = deliver.iter().find(|e| e["queue_id"] == auth_id.as_str()).expect("DELIVER of the authenticated message");
    assert_eq!(d["recipients"], serde_json::json!(["bob@dest.test", "carol@dest.test"]), "one transaction, one event");
    assert_eq!(d["remote_host"], "127.0.0.1");
    assert_eq!(d["reply"], "250 2.0.0 queued by sink");
    assert_eq!(d["message_id"], "<auth-1@example.test>");
    assert_eq!(d["connector"], "auth", "DELIVER keeps the message's origin");
    assert_eq!(d["auth_source"], "Authenticated");

    // The query side.
    let by_id = ops::track(&relay, &["--queue-id", &anon_id]);
    let kinds: Vec<&str> = by_id.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["RECEIVE", "DELIVER"], "merged by time: {by_id:#?}");
    let by_sender = ops::track(&relay, &["--sender", "SVC@example.test"]);
    assert!(by_sender.len() >= 2 && by_sender.iter().all(|e| e["queue_id"] == auth_id.as_str()), "{by_sender:#?}");
    let by_rcpt = ops::track(&relay, &["--recipient", "carol@dest.test", "--event", "deliver"]);
    assert_eq!(by_rcpt.len(), 1);
    assert_eq!(by_rcpt[0]["queue_id"], auth_id.as_str());
    assert_eq!(ops::track(&relay, &["--recipient", "@dest.test", "--event", "RECEIVE", "--since", "10m"]).len(), 2);
    assert!(ops::track(&relay, &["--sender", "nobody@example.test"]).is_empty());

    // People get a table.
    let config = relay.config_path.display().to_string();
    let (code, out, _) = ops::ringrelay(&["track", "--config", &config, "--queue-id", &auth_id]);
    assert_eq!(code, 0);
    assert!(out.starts_with("TIME"), "{out}");
    assert!(out.contains(&auth_id) && out.contains("DELIVER") && out.contains("auth (svc)"), "{out}");
    let (code, _, err) = ops::ringrelay(&["track", "--config", &config, "--event", "BOUNCE"]);
    assert_eq!(code, 2, "unknown events are refused: {err}");
}
