//! The only code that touches io_uring, threads and sockets. It knows nothing of SMTP
//! grammar: it moves bytes between sockets and sans-IO state machines, runs timers, and
//! hands work between cores.
//!
//! - `cores`: process topology, start and shutdown;
//! - `smtp_core`: one SMTP core's state and accept loops;
//! - `conn`: one connection driving one `smtp::Session`;
//! - `content`: message content on delivery cores, read from the spool through io_uring;
//! - `delivery_core`: one delivery core (queues, retries, DSNs, admin answers);
//! - `outbound`: one pooled outbound connection of a delivery core;
//! - `handoff`: the messages between cores and their mailboxes;
//! - `shared`: read-only state built once from the configuration;
//! - `stream`, `net`: sockets and TLS over owned buffers;
//! - `probe`: the io_uring start-up check.

pub mod conn;
pub(crate) mod content;
pub mod cores;
pub mod delivery_core;
pub mod handoff;
pub mod net;
pub mod outbound;
pub mod probe;
pub mod shared;
pub mod smtp_core;
pub mod stream;
