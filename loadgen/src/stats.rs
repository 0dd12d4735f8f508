//! What one client thread of `ringload run` measures, and how the main thread adds it up:
//! message and connection counters, failures by stage and reply, and one latency histogram
//! per phase. Each thread owns its recorder (no sharing, no locks); once a second it hands a
//! `Snapshot` of the last interval to the main thread over a channel and starts afresh.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{Cause, Outcome, Phase, Recorder, Stage};
use crate::clock;
use crate::hist;

/// Message and connection counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Messages attempted (finished, well or not).
    pub attempted: u64,
    /// Messages accepted by the server.
    pub ok: u64,
    /// Messages that failed (refused, or the connection failed).
    pub failed: u64,
    /// Recipients accepted.
    pub rcpts_ok: u64,
    /// Recipients refused.
    pub rcpts_refused: u64,
    /// TCP connections established.
    pub connections: u64,
    /// TCP connections that could not be established.
    pub connections_failed: u64,
    /// Message bytes sent in accepted and refused transactions.
    pub bytes: u64,
}

impl Counts {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Counts) {
        self.attempted += o.attempted;
        self.ok += o.ok;
        self.failed += o.failed;
        self.rcpts_ok += o.rcpts_ok;
        self.rcpts_refused += o.rcpts_refused;
        self.connections += o.connections;
        self.connections_failed += o.connections_failed;
        self.bytes += o.bytes;
    }
}

/// A failure kind and how often it happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorCount {
    /// Where: `connect`, `greeting`, `ehlo`, `starttls`, `auth`, `mail`, `rcpt`, `data`,
    /// `end-of-data`, `rset`, `quit`.
    pub stage: String,
    /// What: the reply (`451 4.3.0`) or the connection failure (`connection refused`).
    pub cause: String,
    /// Occurrences.
    pub count: u64,
}

/// One interval of one thread's measurements.
pub struct Snapshot {
    /// One histogram per `Phase`, in `Phase::ALL` order.
    pub hists: Vec<Histogram<u64>>,
    /// Counters of the interval.
    pub counts: Counts,
    /// Failures of the interval.
    pub errors: Vec<((Stage, Cause), u64)>,
}

/// The recorder of one client thread.
pub struct ThreadRecorder {
    hists: Vec<Histogram<u64>>,
    counts: Counts,
    errors: HashMap<(Stage, Cause), u64>,
}

impl Default for ThreadRecorder {
    fn default() -> Self {
        ThreadRecorder::new()
    }
}

impl ThreadRecorder {
    /// An empty recorder.
    pub fn new() -> ThreadRecorder {
        ThreadRecorder {
            hists: (0..Phase::COUNT).map(|_| hist::new_histogram()).collect(),
            counts: Counts::default(),
            errors: HashMap::new(),
        }
    }

    /// A connection was established.
    pub fn connected(&mut self) {
        self.counts.connections += 1;
    }

    /// A connection could not be established.
    pub fn connect_failed(&mut self) {
        self.counts.connections_failed += 1;
    }

    /// Open loop: a message that was due but never sent, `waited` from its intended send time
    /// to the end of the run. It counts in the message latency (that is what it would have
    /// measured at the very least), not in the counters: it was never attempted.
    pub fn unsent(&mut self, waited: Duration) {
        hist::record(&mut self.hists[Phase::Message.index()], clock::micros(waited));
    }

    /// Hands over the interval's measurements and starts a new interval.
    pub fn take(&mut self) -> Snapshot {
        let hists = self
            .hists
            .iter_mut()
            .map(|h| {
                let copy = h.clone();
                h.reset();
                copy
            })
            .collect();
        Snapshot { hists, counts: std::mem::take(&mut self.counts), errors: self.errors.drain().collect() }
    }
}

impl Recorder for ThreadRecorder {
    fn latency(&mut self, phase: Phase, elapsed: Duration) {
        hist::record(&mut self.hists[phase.index()], clock::micros(elapsed));
    }

    fn refused(&mut self, stage: Stage, cause: Cause) {
        *self.errors.entry((stage, cause)).or_insert(0) += 1;
    }

    fn message_done(&mut self, outcome: &Outcome) {
        let c = &mut self.counts;
        c.attempted += 1;
        if outcome.ok {
            c.ok += 1;
        } else {
            c.failed += 1;
        }
        c.rcpts_ok += u64::from(outcome.rcpts_ok);
        c.rcpts_refused += u64::from(outcome.rcpts_refused);
        c.bytes += outcome.bytes;
    }
}

/// Failures summed over threads and intervals.
#[derive(Default)]
pub struct ErrorTable {
    counts: HashMap<(Stage, Cause), u64>,
}

impl ErrorTable {
    /// Adds one snapshot's failures.
    pub fn add(&mut self, errors: &[((Stage, Cause), u64)]) {
        for (k, n) in errors {
            *self.counts.entry(*k).or_insert(0) += n;
        }
    }

    /// Total failures.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The table, most frequent first.
    pub fn rows(&self) -> Vec<ErrorCount> {
        let mut rows: Vec<_> = self.counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        rows.into_iter()
            .map(|((stage, cause), n)| ErrorCount {
                stage: stage.name().to_string(),
                cause: cause.to_string(),
                count: *n,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ReplyCode;

    #[test]
    fn recorder_counts_and_resets() {
        let mut r = ThreadRecorder::new();
        r.connected();
        r.latency(Phase::Message, Duration::from_micros(1500));
        r.message_done(&Outcome { ok: true, rcpts_ok: 2, rcpts_refused: 1, bytes: 100 });
        let code = ReplyCode { code: 451, enhanced: [4, 3, 0] };
        r.refused(Stage::Submission, Cause::Reply(code));
        r.refused(Stage::Submission, Cause::Reply(code));
        r.message_done(&Outcome::default());
        let s = r.take();
        assert_eq!(s.counts.attempted, 2);
        assert_eq!(s.counts.ok, 1);
        assert_eq!(s.counts.failed, 1);
        assert_eq!(s.counts.rcpts_ok, 2);
        assert_eq!(s.counts.connections, 1);
        assert_eq!(s.hists[Phase::Message.index()].len(), 1);
        let mut table = ErrorTable::default();
        table.add(&s.errors);
        assert_eq!(table.rows(), vec![ErrorCount { stage: "end-of-data".into(), cause: "451 4.3.0".into(), count: 2 }]);
        let empty = r.take();
        assert_eq!(empty.counts, Counts::default());
        assert!(empty.hists.iter().all(|h| h.is_empty()));
    }
}
