//! Outbound delivery, the pure half: everything a delivery core needs that can be decided
//! without a socket, a clock or the disk. The runtime (delivery cores, connection pool, DNS)
//! drives these with bytes, times and lookup answers, and does what they say.
//!
//! - `reply`: server replies (multi-line, RFC 3463 enhanced codes), EHLO capabilities, and the
//!   table of replies the client makes up itself.
//! - `data`: the DATA encoder: dot-stuffing and canonical CRLF, chunk by chunk; the outbound
//!   half of the SMTP-smuggling defence.
//! - `client`: the sans-IO SMTP client session: greeting, EHLO/HELO, STARTTLS, AUTH, then any
//!   number of (pipelined) MAIL/RCPT/DATA transactions on one connection, with per-recipient
//!   outcomes.
//! - `dsn`: RFC 3464 delivery status notifications, and whether one is wanted (RFC 3461).
//!
//! Routing (which connector, which hosts, what a failure means for the next attempt) is in
//! `policy::route`; the retry schedule and the deferred set are in `queue::retry`.

pub mod client;
pub mod data;
pub mod dsn;
pub mod reply;

pub use client::{ClientConfig, ClientSession, Event, Output, Stage, TimeoutKind, Tls, Transaction};
pub use data::DataEncoder;
pub use reply::{Capabilities, EnhancedCode, Response};
