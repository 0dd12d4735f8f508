//! `250` only after durable, proven over a real socket: an SMTP core whose spool holds its
//! commit until the test releases it. While held, the client gets no reply; once released,
//! `250 2.6.0` arrives and the message is in the spool file.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ringrelay::config::Config;
use ringrelay::runtime::handoff::{ToDelivery, mailbox};
use ringrelay::runtime::shared::Shared;
use ringrelay::runtime::smtp_core::{self, CoreStart};

#[test]
fn queued_reply_waits_for_the_spool_commit() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let text = common::DEFAULT_CONFIG
        .replace("{port}", &port.to_string())
        .replace("{admin}", &common::free_port().to_string())
        .replace("{spool}", &dir.path().join("spool").display().to_string())
        .replace("{sink}", &common::free_port().to_string())
        .replace("{nodns}", &common::free_port().to_string());
    let loaded = Config::from_text(&text, Path::new("test.toml")).unwrap();
    let shared = Arc::new(Shared::build(loaded.config).unwrap());
    let bind = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = ringrelay::runtime::net::reuseport_listener(bind, 16).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (delivery_tx, delivery_rx) = mailbox::<ToDelivery>();
    let (_smtp_tx, smtp_rx) = mailbox();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(smtp_core::RUNNING);
    let (drained_tx, _drained_rx) = crossbeam_channel::unbounded();
    let start = CoreStart {
        index: 0,
        shared,
        listeners: vec![(bind, listener)],
        recovered: Default::default(),
        adopted: Vec::new(),
        delivery: vec![delivery_tx],
        inbox: smtp_rx,
        shutdown: stop_rx,
        drained: drained_tx,
        spool_gate: Some(Arc::clone(&gate)),
    };
    let core = std::thread::spawn(move || tokio_uring::start(smtp_core::run(start)));

    let mut c = common::Client::connect(bind, None);
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: held\r\n\r\nwaiting for the disk\r\n.\r\n");
    c.stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let early = c.try_reply();
    assert!(early.is_err(), "a reply came before the spool committed: {early:?}");
    assert!(delivery_rx.try_recv().is_none(), "nothing handed to delivery before durable");
    gate.add_permits(1);
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text().starts_with("2.6.0"));
    let stored = common::spool_messages(&dir.path().join("spool"));
    assert!(stored.contains_key(&r.queue_id().unwrap()));
    match delivery_rx.try_recv() {
        Some(ToDelivery::Job(job)) => assert_eq!(job.spool_ref.queue_id.to_string(), r.queue_id().unwrap()),
        other => panic!("expected a delivery job, got {other:?}"),
    }
    gate.add_permits(1000);
    let t0 = common::now();
    stop_tx.send(smtp_core::FINAL).unwrap();
    let bye = c.reply();
    eprintln!("421 after {:?}", t0.elapsed());
    assert_eq!(bye.code, 421, "an idle session is closed at shutdown: {bye:?}");
    core.join().unwrap().unwrap();
    eprintln!("joined after {:?}", t0.elapsed());
}
