//! Microsecond-precise sleeps for one io_uring thread. Tokio's timer wheel has millisecond
//! ticks and rounds every deadline up to the next one, so a sleep of 5 ms lasts 5 to 6 ms and
//! an open-loop schedule of 20 000 messages per second would leave in bursts of 20 every
//! millisecond, adding up to 1 ms of client-made latency to every measurement. Here one
//! `timerfd` per thread (an hrtimer, no timer slack) is armed for the earliest deadline of a
//! heap of sleepers; its expiry wakes every sleeper that is due. One `timerfd_settime` per
//! new earliest deadline, one read per expiry.
//!
//! Used where precision is the point: the open-loop schedule (`run --rate`) and the sink's
//! `--latency`. Timeouts, where a millisecond does not matter, stay on tokio's timer.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::clock;

/// One sleeper waiting in the heap.
struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    /// The deadline the timerfd is armed for, if any.
    armed_for: Option<Instant>,
    seq: u64,
}

/// The precise-timer service of one thread. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Timers {
    state: Rc<RefCell<State>>,
    fd: Rc<AsyncFd<OwnedFd>>,
}

impl Timers {
    /// Creates the service and spawns its driver task on the current tokio-uring runtime.
    pub fn start() -> io::Result<Timers> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd is open for as long as it lives and always returns the same
        // descriptor; the AsyncFd owns it until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| io::Error::other(format!("cannot register the timerfd: {e}")))?;
        let fd = Rc::new(fd);
        let state = Rc::new(RefCell::new(State { heap: BinaryHeap::new(), armed_for: None, seq: 0 }));
        let timers = Timers { state, fd };
        let driver = timers.clone();
        tokio_uring::spawn(async move { driver.drive().await });
        Ok(timers)
    }

    /// Sleeps until `at` (returns at once if it has passed).
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        Sleep { timers: self.clone(), at }
    }

    /// Sleeps for `d`.
    pub fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(clock::now() + d)
    }

    fn register(&self, at: Instant, waker: Waker) {
        let mut s = self.state.borrow_mut();
        s.seq += 1;
        let seq = s.seq;
        s.heap.push(Reverse(Entry { at, seq, waker }));
        if s.armed_for.is_none_or(|armed| at < armed) {
            s.armed_for = Some(at);
            drop(s);
            self.arm(at);
        }
    }

    /// Arms the timerfd to expire at `at` (relative to now; at least 1 ns so it fires).
    fn arm(&self, at: Instant) {
        let d = at.saturating_duration_since(clock::now()).max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long },
        };
        // SAFETY: the descriptor is ours and open; `spec` is a valid itimerspec.
        let rc = unsafe { libc::timerfd_settime(self.fd.get_ref().as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        debug_assert_eq!(rc, 0, "timerfd_settime: {}", io::Error::last_os_error());
    }

    async fn drive(self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else { return };
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from our own descriptor.
            let _ = unsafe {
                libc::read(self.fd.get_ref().as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len())
            };
            guard.clear_ready();
            let now = clock::now();
            let mut due = Vec::new();
            let next = {
                let mut s = self.state.borrow_mut();
                while s.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                    if let Some(Reverse(e)) = s.heap.pop() {
                        due.push(e.waker);
                    }
                }
                s.armed_for = s.heap.peek().map(|Reverse(e)| e.at);
                s.armed_for
            };
            if let Some(at) = next {
                self.arm(at);
            }
            for w in due {
                w.wake();
            }
        }
    }
}

/// A precise sleep; see `Timers`.
pub struct Sleep {
    timers: Timers,
    at: Instant,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if clock::now() >= self.at {
            return Poll::Ready(());
        }
        // A sleeper is woken only by its own entry (or spuriously by its task); register again
        // after a wake that came too early, so it cannot be forgotten.
        self.timers.register(self.at, cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_are_precise_and_ordered() {
        tokio_uring::start(async {
            let timers = Timers::start().unwrap();
            let t0 = clock::now();
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut handles = Vec::new();
            for (i, ms) in [3u64, 1, 2].into_iter().enumerate() {
                let t = timers.clone();
                let o = Rc::clone(&order);
                handles.push(tokio_uring::spawn(async move {
                    t.sleep_until(t0 + Duration::from_millis(ms)).await;
                    o.borrow_mut().push(i);
                    clock::now().duration_since(t0)
                }));
            }
            let mut lates = Vec::new();
            for h in handles {
                lates.push(h.await.unwrap());
            }
            assert_eq!(*order.borrow(), vec![1, 2, 0]);
            assert!(lates[0] >= Duration::from_millis(3));
            // Generous bound: the point is sub-millisecond lateness, not a scheduling guarantee.
            assert!(lates[0] < Duration::from_millis(50), "{lates:?}");
            // A deadline in the past returns at once.
            timers.sleep_until(t0).await;
        });
    }
}
