//! Who may do what: pure decisions over the configuration. Receive-connector choice
//! (`receive`), the PROXY protocol (`proxy`), relay rights and accepted domains (`relay`),
//! users and send-as (`users`), the cache of verified credentials (`auth_cache`), abuse limits
//! (`limits`), and outbound routing (`route`). No I/O here; the runtime asks, and passes the
//! time in.

pub mod auth_cache;
pub mod limits;
pub mod proxy;
pub mod receive;
pub mod relay;
pub mod route;
pub mod users;
