//! SIGHUP reads the configuration file again and replaces the receive-side policy (here: a
//! connector's `remote_ip_ranges` and relay right, and the accepted domains) for connections
//! accepted after it, without dropping anything: a session opened before the reload goes on
//! under the rules it was accepted with. A file that changes what needs a restart (a
//! connector's `bind`), or that does not parse, leaves the policy in force.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Client, DEFAULT_CONFIG, Relay};

fn hup(relay: &Relay) {
    let pid = relay.child.as_ref().unwrap().id() as i32;
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGHUP) };
}

fn wait_log(relay: &Relay, needle: &str, count: usize) {
    let deadline = common::now() + Duration::from_secs(10);
    while relay.log_text().matches(needle).count() < count {
        assert!(common::now() < deadline, "no {needle:?} ×{count} in the log:\n{}", relay.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rewrites the relay's configuration file with `from` replaced by `to`.
fn edit(relay: &Relay, from: &str, to: &str) {
    let text = std::fs::read_to_string(&relay.config_path).unwrap();
    assert!(text.contains(from), "{from:?} not in the configuration:\n{text}");
    std::fs::write(&relay.config_path, text.replace(from, to)).unwrap();
}

fn connect(relay: &Relay, source: [u8; 4]) -> Client {
    Client::connect(SocketAddr::from(([127, 0, 0, 1], relay.port)), Some(IpAddr::from(source)))
}

/// A connection from `source`: its first reply, and the client for more when it was a greeting.
fn greeting(relay: &Relay, source: [u8; 4]) -> (u16, String, Client) {
    let mut c = connect(relay, source);
    let r = c.reply();
    (r.code, r.line(), c)
}

#[test]
fn sighup_applies_new_ranges_and_domains_to_new_connections_only() {
    let relay = Relay::start(
        &DEFAULT_CONFIG
            .replace("hostname = \"relay.test\"", "hostname = \"relay.test\"\naccepted_domains = [\"corp.test\"]"),
    );

    // Before: 127.0.0.2 is in no connector's ranges.
    let (code, line, _) = greeting(&relay, [127, 0, 0, 2]);
    assert_eq!(code, 554, "{line}");

    // A session from 127.0.0.1, open across the reloads.
    let (code, _, mut before) = greeting(&relay, [127, 0, 0, 1]);
    assert_eq!(code, 220);
    assert_eq!(before.cmd("EHLO client.test").code, 250);

    // A second connector is a restart: the reload is refused and the policy stays.
    let port = relay.port.to_string();
    let original = std::fs::read_to_string(&relay.config_path).unwrap();
    let send = original.find("[[send_connector]]").unwrap();
    let branch = format!(
        "[[receive_connector]]\nname = \"branch\"\nbind = [\"127.0.0.1:{port}\"]\nremote_ip_ranges = [\"127.0.0.2/32\"]\n\
         permission_groups = [\"anonymous\"]\nrelay = \"accepted\"\n"
    );
    std::fs::write(&relay.config_path, format!("{}{branch}{}", &original[..send], &original[send..])).unwrap();
    hup(&relay);
    wait_log(&relay, "the configuration was not reloaded", 1);
    assert!(relay.log_text().contains("adding or removing a connector needs a restart"), "{}", relay.log_text());
    assert_eq!(greeting(&relay, [127, 0, 0, 2]).0, 554, "a refused reload changes nothing");

    // The one connector, now for both addresses but relaying to accepted domains only, which
    // now include branch.test. A [limits] change in the same file is reported, not applied.
    let text = original
        .replace("remote_ip_ranges = [\"127.0.0.1/32\"]", "remote_ip_ranges = [\"127.0.0.1/32\", \"127.0.0.2/32\"]")
        .replace("relay = \"any\"", "relay = \"accepted\"")
        .replace("accepted_domains = [\"corp.test\"]", "accepted_domains = [\"corp.test\", \"branch.test\"]")
        .replace("max_recipients = 5", "max_recipients = 7");
    std::fs::write(&relay.config_path, &text).unwrap();
    hup(&relay);
    wait_log(&relay, "SIGHUP: configuration reloaded", 1);
    let log = relay.log_text();
    assert!(
        log.lines().any(|l| l.contains("they are not applied") && l.contains("limits")),
        "the [limits] change is reported as not applied:\n{log}"
    );

    // New connections follow the new file, on every core (cores.smtp = 2: several tries).
    for _ in 0..6 {
        let (code, line, mut c) = greeting(&relay, [127, 0, 0, 2]);
        assert_eq!(code, 220, "127.0.0.2 is in the ranges now: {line}");
        assert_eq!(c.cmd("EHLO client.test").code, 250);
        assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<a@branch.test>").code, 250, "branch.test is accepted now");
        let r = c.cmd("RCPT TO:<b@elsewhere.test>");
        assert_eq!(r.line(), "550 5.7.54 Unable to relay recipient in non-accepted domain", "relay = accepted now");
        for i in 1..5 {
            assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@corp.test>")).code, 250);
        }
        // [limits] is not reloaded: max_recipients is still 5, not the file's 7.
        assert_eq!(c.cmd("RCPT TO:<r5@corp.test>").line(), "452 4.5.3 Too many recipients");
        c.cmd("QUIT");
    }

    // The session accepted before the reloads still has relay = "any", and is not dropped.
    let r = before.send_mail("app@corp.test", &["x@elsewhere.test"], "Subject: before\r\n\r\nstill here\r\n");
    assert_eq!(r.code, 250, "{r:?}");

    // A file that changes a listener is refused; one that does not parse too. Neither touches
    // the policy in force.
    edit(&relay, &format!("bind = [\"127.0.0.1:{port}\"]"), "bind = [\"127.0.0.1:1\"]");
    hup(&relay);
    wait_log(&relay, "the configuration was not reloaded", 2);
    assert!(relay.log_text().contains("receive_connector[0].bind changed"), "{}", relay.log_text());
    std::fs::write(&relay.config_path, "this is = not [valid toml").unwrap();
    hup(&relay);
    wait_log(&relay, "the configuration was not reloaded", 3);
    let (code, line, mut c) = greeting(&relay, [127, 0, 0, 2]);
    assert_eq!(code, 220, "the last good policy stays: {line}");
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    c.cmd("QUIT");
}

#[test]
fn a_session_keeps_the_policy_it_was_accepted_under() {
    let relay = Relay::start(
        &DEFAULT_CONFIG.replace("remote_ip_ranges = [\"127.0.0.1/32\"]", "remote_ip_ranges = [\"127.0.0.0/30\"]"),
    );
    let (code, _, mut open) = greeting(&relay, [127, 0, 0, 2]);
    assert_eq!(code, 220);
    assert_eq!(open.cmd("EHLO client.test").code, 250);

    // 127.0.0.2 is dropped from the ranges.
    edit(&relay, "remote_ip_ranges = [\"127.0.0.0/30\"]", "remote_ip_ranges = [\"127.0.0.1/32\"]");
    hup(&relay);
    wait_log(&relay, "SIGHUP: configuration reloaded", 1);
    for _ in 0..4 {
        assert_eq!(greeting(&relay, [127, 0, 0, 2]).0, 554, "new connections from 127.0.0.2 are refused");
    }
    // The session it already had goes on to the end.
    let r = open.send_mail("app@corp.test", &["x@elsewhere.test"], "Subject: s\r\n\r\naccepted before\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(open.cmd("QUIT").code, 221);
}
