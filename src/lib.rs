//! # ringrelay
//!
//! A high-throughput SMTP relay for applications and devices, on io_uring.
//!
//! ## The data path in ten lines
//!
//! 1. `runtime::cores` starts pinned SMTP threads, each with its own tokio-uring runtime and one
//!    SO_REUSEPORT listener per bind address (`runtime::listener`).
//! 2. `runtime::conn` reads bytes into a reused owned buffer and feeds them to a sans-IO
//!    `smtp::Session`, which frames them with the memchr `smtp::scanner` and answers with replies
//!    from one table (`smtp::reply`). Policy questions go to `policy` through the `smtp::Host` trait.
//! 3. At end of data the session asks to persist; the core's `spool` appends the message to its
//!    append log and group-commits (one fdatasync for many sessions). Only then does the session
//!    send `250 2.6.0 <QUEUEID> Queued mail for delivery`.
//! 4. The spool hands a reference to the durable record to a delivery core over crossbeam-channel;
//!    `delivery` batches by destination domain, routes (`policy::route`), and delivers over pooled
//!    outbound connections driven by the sans-IO `delivery::client`.
//! 5. Outcomes flow back to the owning SMTP core, which appends them to its log; finished segments
//!    are deleted. Bounces (`delivery::dsn`) are queued durably like any other message.
//!
//! ## Modules
//!
//! - `smtp`: the sans-IO SMTP server core: scanner, commands, replies, session. No sockets, no
//!   clocks, no disk. Always compiled (the fuzz targets build only this).
//! - `config`: TOML configuration (spec section 3), validation, the embedded default.
//! - `policy`: receive-connector choice, relay rights, send-as, users, abuse limits, routing.
//! - `spool`: the per-core append log: record format, group commit, recovery.
//! - `queue`: delivery scheduling: per-domain queues, retry schedule (pure, clock injected).
//! - `delivery`: delivery cores, the sans-IO SMTP client, connection pool, MX lookup, DSN.
//! - `runtime`: the only io_uring, thread and socket code.
//! - `obs`: metrics, admin endpoint, message tracking log, protocol log.
//! - `clock`: the only caller of `Instant::now` / `SystemTime::now`.

pub mod smtp;

#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod delivery;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod queue;
#[cfg(feature = "server")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod spool;
#[cfg(feature = "server")]
pub mod tls;
