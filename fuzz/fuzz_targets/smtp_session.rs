//! The whole sans-IO session (scanner + command parser + state machine) on arbitrary client
//! bytes, split at an arbitrary point: no panic, bounded output, and the same replies however
//! the input is split. Inputs are also folded into an SMTP-ish alphabet of whole commands.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use ringrelay::smtp::auth::Mechanism;
use ringrelay::smtp::reply::Reply;
use ringrelay::smtp::scanner::BareLf;
use ringrelay::smtp::{Action, Envelope, Host, Output, QueueId, QueueIdGen, Session, SessionConfig};

struct FuzzHost(QueueIdGen);

impl Host for FuzzHost {
    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }
    fn date_rfc5322(&self) -> String {
        "Tue, 14 Nov 2023 22:13:20 +0000".into()
    }
    fn next_queue_id(&mut self) -> QueueId {
        self.0.next(1_700_000_000_000)
    }
    fn check_mail(&mut self, _: &Envelope) -> Result<(), Reply> {
        Ok(())
    }
    fn check_rcpt(&mut self, _: &Envelope, a: &str) -> Result<(), Reply> {
        if a.ends_with(".deny") { Err(ringrelay::smtp::reply::RELAY_DENIED) } else { Ok(()) }
    }
    fn check_auth(&mut self, _: IpAddr) -> Result<(), Reply> {
        Ok(())
    }
    fn may_send_as(&self, _: &str, a: &str) -> bool {
        a.starts_with('a')
    }
}

fn run(input: &[u8], cut: usize, bare_lf: BareLf) -> Vec<u8> {
    let cfg = Rc::new(SessionConfig {
        hostname: "fuzz.test".into(),
        connector: "c".into(),
        max_command_line: 512,
        max_message_size: 4096,
        max_recipients: 4,
        max_bad_commands: 1000,
        bare_lf,
        starttls: true,
        require_tls: false,
        auth: vec![Mechanism::Plain, Mechanism::Login],
        anonymous: true,
    });
    let mut s = Session::new(cfg, IpAddr::V4(Ipv4Addr::LOCALHOST), false);
    let mut host = FuzzHost(QueueIdGen::new(0, QueueId(0)));
    let mut wire = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let cut = cut % (input.len() + 1);
    for part in [&input[..cut], &input[cut..]] {
        pending.extend_from_slice(part);
        loop {
            let mut out = Output::default();
            let used = s.receive(&pending, &mut host, &mut out);
            assert!(used <= pending.len());
            pending.drain(..used);
            wire.extend_from_slice(&out.wire);
            match out.action {
                Some(Action::Persist) => {
                    let mut o = Output::default();
                    s.persisted(Ok(()), &mut o);
                    wire.extend_from_slice(&o.wire);
                }
                Some(Action::Authenticate) => {
                    let mut o = Output::default();
                    s.authenticated(s.credentials().0 == "ok", &mut o);
                    wire.extend_from_slice(&o.wire);
                }
                Some(Action::StartTls) => {
                    pending.clear(); // what the runtime does: discard, then handshake
                    s.tls_started();
                }
                Some(Action::Close) => return wire,
                None => {
                    // Waiting for input: never more than one partial command line is held.
                    assert!(pending.len() < 512, "holds {} unconsumed bytes", pending.len());
                    break;
                }
            }
        }
    }
    wire
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().copied().unwrap_or(0) as usize;
    let mode = if data.get(1).is_some_and(|b| b % 2 == 1) { BareLf::Normalize } else { BareLf::Reject };
    // STARTTLS discards pending input, so splitting changes what is discarded: compare only
    // inputs without it.
    let plain = !data.windows(8).any(|w| w.eq_ignore_ascii_case(b"STARTTLS"));
    let a = run(data, cut, mode);
    if plain {
        assert_eq!(a, run(data, data.len(), mode));
    }
    const WORDS: [&[u8]; 12] = [
        b"EHLO x\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<c@d.test>\r\n", b"DATA\r\n", b"\r\n.\r\n",
        b"BDAT 5\r\n", b"BDAT 3 LAST\r\n", b"RSET\r\n", b"AUTH LOGIN\r\n", b"b2s=\r\n", b"\n.\n", b".",
    ];
    let mut folded = Vec::new();
    for b in data {
        folded.extend_from_slice(WORDS[(*b as usize) % WORDS.len()]);
    }
    let _ = run(&folded, cut, mode);
});
