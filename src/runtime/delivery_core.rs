//! A delivery core (interim: holds jobs until the delivery engine lands).

use std::sync::Arc;

use super::handoff::{Inbox, Mailbox, ToDelivery, ToSmtp};
use super::shared::Shared;

/// What a delivery core is given at start.
pub struct DeliveryStart {
    /// Delivery core number.
    pub index: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Jobs and control.
    pub inbox: Inbox<ToDelivery>,
    /// Mailboxes of the SMTP cores, by core number (outcomes go to a message's owner).
    pub smtp: Vec<Mailbox<ToSmtp>>,
}

/// Runs the delivery core until told to stop.
pub async fn run(start: DeliveryStart) -> std::io::Result<()> {
    let mut held = Vec::new();
    let mut batch = Vec::new();
    while start.inbox.recv_batch(&mut batch, 256).await {
        for m in batch.drain(..) {
            match m {
                ToDelivery::Job(j) => held.push(j),
                ToDelivery::Stop => return Ok(()),
            }
        }
    }
    Ok(())
}
