//! The sans-IO SMTP server core: framing (`scanner`), grammar (`command`), the reply table
//! (`reply`), SASL decoding (`auth`), header reading (`headers`), the envelope (`envelope`)
//! and the session state machine (`session`). No sockets, no clocks, no threads, no disk:
//! everything here is a pure function of its inputs, which is what lets the tests and the
//! fuzzer drive it byte by byte.

pub mod auth;
pub mod command;
pub mod envelope;
pub mod headers;
pub mod reply;
pub mod scanner;
pub mod session;

pub use envelope::{Envelope, QueueId, QueueIdGen, Recipient};
pub use reply::Reply;
pub use session::{Action, Host, Output, Session, SessionConfig, TimeoutKind};
