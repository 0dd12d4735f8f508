//! # ringload
//!
//! The load generator and sink bundled with ringrelay, for load tests and capacity planning
//! of SMTP servers. Four commands (`main.rs`):
//!
//! - `run`: drives SMTP load, closed loop (`--concurrency`) or open loop (`--rate`, latency
//!   measured from each message's intended send time: no coordinated omission), and reports
//!   throughput, failures by reply and HDR latency percentiles per phase;
//! - `sink`: a fast SMTP server standing in for remote MX hosts, with failure and latency
//!   knobs, counting what it receives and measuring end-to-end delay;
//! - `sweep`: steps the offered rate up until a latency or error limit breaks: the capacity;
//! - `report`: a self-contained HTML page from any of their JSON results.
//!
//! ## Modules
//!
//! - `client`: the sans-IO SMTP client session (bytes and time in, commands and measurements
//!   out); `worker`: the io_uring thread that drives it; `run`: threads, aggregation, output.
//! - `message`: message sizes, address patterns, message bytes (reused buffers).
//! - `sink`: the sink, on the relay's own sans-IO `ringrelay::smtp::Session`.
//! - `sweep`, `report`: capacity search and the HTML report.
//! - `hist`, `stats`: HDR histograms (summaries, V2 encoding, interval logs) and counters.
//! - `ptimer`: microsecond-precise sleeps (timerfd) for schedules and the sink's latency.
//! - `clock`, `rng`, `units`: time, a seedable PRNG, the operator's units.

#![warn(missing_docs)]

pub mod client;
pub mod clock;
pub mod hist;
pub mod message;
pub mod ptimer;
pub mod report;
pub mod rng;
pub mod run;
pub mod sink;
pub mod stats;
pub mod sweep;
pub mod units;
pub mod worker;
