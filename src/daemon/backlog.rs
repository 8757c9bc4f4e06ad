//! The place in line of the ready files waiting for a claim slot (`CLAIMS_AHEAD`; a claimed
//! file then waits for an upload slot in its own task). The files themselves wait
//! in the readiness tracker ([`crate::watch::Tracker`]) as compact entries in arrival order;
//! the main loop takes the first one out ([`crate::watch::Tracker::take_ready`]) only once
//! this has a slot for it, and hands both to a handler task, so that a backlog of 100,000
//! files costs 100,000 small entries rather than 100,000 live futures, paths or [`Found`]s.
//!
//! Invariants:
//! - Arrival order: the main loop takes files in the order they became ready, and waits for
//!   slots in the semaphore's own first-come order, with the handlers that wait to retry.
//! - A waiting file is still unclaimed in its inbox and the tracker counts it as waiting;
//!   only a file taken with a slot is held in [`crate::watch::Busy`], so it is never handed
//!   out twice. Dropping the tracker or this (at shutdown) claims nothing.
//! - [`Backlog::next`] is cancel-safe: the slot it waits for is kept across calls, so the
//!   line keeps its place however often the main loop's `select!` drops it. When no file
//!   waits any more (a reload dropped them), [`Backlog::leave_line`] gives the place up, so
//!   that a slot is never kept from the handlers for no file.
//!
//! [`Found`]: crate::watch::Found

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// The ready files' place in line for an upload slot.
pub(super) struct Backlog {
    slots: Arc<Semaphore>,
    /// The wait for a slot for the file first in line, once begun.
    acquiring: Option<Acquiring>,
}

impl Backlog {
    /// A backlog drawing on `slots`.
    pub(super) fn new(slots: Arc<Semaphore>) -> Backlog {
        Backlog {
            slots,
            acquiring: None,
        }
    }

    /// A slot for the file first in line, without waiting: `None` when no slot is free or the
    /// line already waits for one (then [`Backlog::next`] gets it).
    pub(super) fn try_next(&mut self) -> Option<OwnedSemaphorePermit> {
        if self.acquiring.is_some() {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Waits for a slot for the file first in line. Call it only while a file waits; never
    /// returns if the slots are closed (they never are). Cancel-safe (see the module's
    /// invariants).
    pub(super) async fn next(&mut self) -> OwnedSemaphorePermit {
        let slots = &self.slots;
        let acquiring = self
            .acquiring
            .get_or_insert_with(|| Box::pin(slots.clone().acquire_owned()));
        let acquired = acquiring.await;
        self.acquiring = None;
        match acquired {
            Ok(permit) => permit,
            // The slots are never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// No file waits any more: gives up the place in line (and a slot it may already have
    /// been granted but not yet taken), so the handlers are not kept waiting for nothing.
    pub(super) fn leave_line(&mut self) {
        self.acquiring = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_line_gets_slots_first_come_and_keeps_its_place_when_dropped() {
        let slots = Arc::new(Semaphore::new(1));
        let mut backlog = Backlog::new(slots.clone());
        let permit = backlog.try_next().expect("a free slot");
        assert!(backlog.try_next().is_none(), "no slot is free");
        // Dropped while waiting (as `select!` does), it keeps its place in line: a handler
        // that asks after it waits.
        let waited = tokio::time::timeout(Duration::from_millis(20), backlog.next()).await;
        assert!(waited.is_err(), "no slot until one is given back");
        assert!(backlog.try_next().is_none(), "the line waits already");
        drop(permit);
        assert!(
            slots.clone().try_acquire_owned().is_err(),
            "the slot given back went to the line, first in it"
        );
        let _permit = backlog.next().await;
    }

    #[tokio::test]
    async fn leaving_the_line_gives_a_granted_slot_back() {
        let slots = Arc::new(Semaphore::new(1));
        let mut backlog = Backlog::new(slots.clone());
        let permit = backlog.try_next().expect("a free slot");
        let waited = tokio::time::timeout(Duration::from_millis(20), backlog.next()).await;
        assert!(waited.is_err(), "no slot until one is given back");
        drop(permit);
        backlog.leave_line();
        assert!(
            slots.clone().try_acquire_owned().is_ok(),
            "the slot is free for the handlers"
        );
    }
}
