//! The only code that touches io_uring, threads and sockets. It knows nothing of SMTP
//! grammar: it moves bytes between sockets and sans-IO state machines, runs timers, and
//! hands work between cores.

pub mod net;
pub mod stream;
