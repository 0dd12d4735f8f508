//! Who may do what: pure decisions over the configuration. Receive-connector choice
//! (`receive`), relay rights and accepted domains (`relay`), users and send-as (`users`),
//! abuse limits (`limits`), and outbound routing (`route`). No I/O here; the runtime asks.

pub mod receive;
pub mod relay;
pub mod route;
pub mod users;
