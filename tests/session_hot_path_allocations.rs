//! No allocation per command or per message on the session's hot path (issue 2: "reused
//! buffers, no per-command allocation"): after a warm-up, pipelined transactions through the
//! sans-IO session (EHLO, MAIL with ESMTP and DSN parameters, RCPTs with NOTIFY/ORCPT, DATA
//! with dot-stuffing, BDAT, RSET, NOOP) allocate nothing. A counting global allocator, per
//! thread, counts every alloc and realloc made while the measured transactions run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use ringrelay::smtp::reply::Reply;
use ringrelay::smtp::scanner::BareLf;
use ringrelay::smtp::{Action, Envelope, Host, Output, QueueId, QueueIdGen, Session, SessionConfig};

thread_local! {
    /// Allocations made by this thread (const-initialised, no destructor: safe to touch from
    /// inside the allocator).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A host as cheap as the runtime's: a cached date written as bytes, ids from a generator.
struct QuietHost {
    ids: QueueIdGen,
    date: &'static [u8],
}

impl Host for QuietHost {
    fn now_ms(&self) -> u64 {
        1_764_000_000_000
    }
    fn date_rfc5322(&self) -> String {
        panic!("the session asks for the date with write_date_rfc5322")
    }
    fn write_date_rfc5322(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.date);
    }
    fn next_queue_id(&mut self) -> QueueId {
        self.ids.next(1_764_000_000_000)
    }
    fn check_mail(&mut self, _: &Envelope) -> Result<(), Reply> {
        Ok(())
    }
    fn check_rcpt(&mut self, _: &Envelope, _: &str) -> Result<(), Reply> {
        Ok(())
    }
    fn check_auth(&mut self, _: IpAddr) -> Result<(), Reply> {
        Ok(())
    }
    fn may_send_as(&self, _: &str, _: &str) -> bool {
        true
    }
}

/// Two pipelined transactions, one by DATA and one by BDAT, as one client write.
fn conversation() -> Vec<u8> {
    let mut c = b"EHLO client.example.test\r\nNOOP\r\n\
        MAIL FROM:<app@example.test> SIZE=2000 BODY=8BITMIME RET=HDRS ENVID=job+2D42\r\n\
        RCPT TO:<ops@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops@dest.test\r\n\
        RCPT TO:<oncall@dest.test>\r\nRCPT TO:<audit@other.test> NOTIFY=NEVER\r\nDATA\r\n\
        Subject: disk almost full\r\nFrom: app@example.test\r\n\r\n"
        .to_vec();
    for i in 0..12 {
        c.extend_from_slice(format!("..{i} a line of notification text, about as long as usual\r\n").as_bytes());
    }
    // The first RCPT has an ORCPT in both transactions: a recipient's buffers are reused in
    // RCPT order, and an ORCPT buffer is given up when its place gets none.
    c.extend_from_slice(
        b".\r\nRSET\r\nMAIL FROM:<app@example.test>\r\nRCPT TO:<ops@dest.test> ORCPT=rfc822;ops@dest.test\r\n\
          RCPT TO:<x@dest.test>\r\nBDAT 27\r\nSubject: chunked\r\n\r\nfirst\r\n",
    );
    c.extend_from_slice(b"BDAT 12 LAST\r\nsecond part\n");
    c
}

/// Feeds `input` as the runtime does and completes every Persist; returns messages queued.
fn run(s: &mut Session, host: &mut QuietHost, input: &[u8], out: &mut Output, stored: &mut usize) {
    let mut pos = 0;
    loop {
        pos += s.receive(&input[pos..], host, out);
        match out.action.take() {
            Some(Action::Persist) => {
                *stored += s.message().len();
                s.persisted(Ok(()), out);
            }
            None if pos == input.len() => break,
            other => panic!("unexpected {other:?} at {pos}: {}", String::from_utf8_lossy(&out.wire)),
        }
    }
}

#[test]
fn pipelined_transactions_allocate_nothing_after_warm_up() {
    let cfg = Rc::new(SessionConfig {
        hostname: "relay.example.test".into(),
        connector: "default".into(),
        max_command_line: 2048,
        max_message_size: 25 << 20,
        max_recipients: 100,
        max_bad_commands: 20,
        bare_lf: BareLf::Normalize,
        starttls: true,
        require_tls: false,
        auth: Vec::new(),
        anonymous: true,
    });
    let mut host = QuietHost { ids: QueueIdGen::new(0, QueueId(0)), date: b"Tue, 25 Nov 2025 10:00:00 +0000" };
    let mut s = Session::new(cfg, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), false);
    let mut out = Output::default();
    let input = conversation();
    let mut stored = 0;
    // Warm-up: buffers grow to their working size.
    for _ in 0..3 {
        run(&mut s, &mut host, &input, &mut out, &mut stored);
        out.wire.clear();
    }
    let replies = String::from_utf8(out.wire.clone()).unwrap_or_default();
    run(&mut s, &mut host, &input, &mut out, &mut stored);
    let wire = String::from_utf8(std::mem::take(&mut out.wire)).unwrap();
    assert_eq!(wire.matches("250 2.6.0 <").count(), 2, "both transactions queued: {wire}{replies}");
    assert!(wire.contains("250-PIPELINING\r\n") && wire.contains("250 2.0.0 27 octets received\r\n"), "{wire}");
    out.wire.reserve(wire.len());

    let before = allocations();
    let mut transactions = 0;
    for _ in 0..200 {
        run(&mut s, &mut host, &input, &mut out, &mut stored);
        transactions += 2;
        out.wire.clear();
    }
    let made = allocations() - before;
    assert!(stored > 0);
    assert_eq!(made, 0, "{made} allocations over {transactions} pipelined transactions");
}
