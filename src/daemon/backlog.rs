//! Files ready and waiting for an upload slot: a queue of [`Found`] values in the main loop,
//! handed to a handler task only together with a slot, so that a backlog of 100,000 files
//! costs 100,000 small queue entries rather than 100,000 live futures.
//!
//! Invariants:
//! - Arrival order: files leave the queue in the order they became ready, and the queue waits
//!   for slots in the semaphore's own first-come order, with the handlers that wait to retry.
//! - A queued file is still unclaimed in its inbox, and its path is held in
//!   [`crate::watch::Busy`] (by the tracker that handed it out), so it is never handed out
//!   twice and `status` counts it as waiting. Dropping the queue (at shutdown) claims nothing.
//! - [`Backlog::next`] is cancel-safe: the slot it waits for is kept across calls, so the
//!   queue keeps its place in line however often the main loop's `select!` drops it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::watch::Found;

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Ready files waiting for an upload slot.
pub(super) struct Backlog {
    waiting: VecDeque<Found>,
    slots: Arc<Semaphore>,
    /// The wait for a slot for the file at the head, once begun.
    acquiring: Option<Acquiring>,
}

impl Backlog {
    /// An empty backlog drawing on `slots`.
    pub(super) fn new(slots: Arc<Semaphore>) -> Backlog {
        Backlog {
            waiting: VecDeque::new(),
            slots,
            acquiring: None,
        }
    }

    /// Queues a ready file behind the others.
    pub(super) fn push(&mut self, found: Found) {
        self.waiting.push_back(found);
    }

    /// Whether no file waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The head file with a slot, without waiting: `None` when no file waits, no slot is
    /// free, or the queue already waits in line for one (then [`Backlog::next`] gets it).
    pub(super) fn try_next(&mut self) -> Option<(Found, OwnedSemaphorePermit)> {
        if self.waiting.is_empty() || self.acquiring.is_some() {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.waiting.pop_front().map(|found| (found, permit))
    }

    /// Waits for a slot for the head file and hands both out; never returns while no file
    /// waits. Cancel-safe (see the module's invariants).
    pub(super) async fn next(&mut self) -> (Found, OwnedSemaphorePermit) {
        if self.waiting.is_empty() {
            return std::future::pending().await;
        }
        let slots = &self.slots;
        let acquiring = self
            .acquiring
            .get_or_insert_with(|| Box::pin(slots.clone().acquire_owned()));
        let acquired = acquiring.await;
        self.acquiring = None;
        match (acquired, self.waiting.pop_front()) {
            (Ok(permit), Some(found)) => (found, permit),
            // The slots are never closed, and only this function takes from the queue.
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn found(name: &str) -> Found {
        let text = r#"
[codearts]
endpoint = "http://127.0.0.1:9"
domain_id = "ce8df55870164338a72d7e828a966a2a"
[auth]
token = "t"
[[watch]]
name = "w"
inbox = "/srv/in"
done = "/srv/done"
failed = "/srv/failed"
[[watch.rule]]
template = "{plugin_name}__{business_type}.zip"
"#;
        let config = crate::config::Config::parse(text, std::path::Path::new("/etc/x.toml"))
            .unwrap_or_else(|e| panic!("the test configuration: {e}"));
        let watch = config.watches.into_iter().next().expect("a watch");
        Found {
            watch: Arc::new(watch),
            rel_path: name.to_owned(),
            path: name.into(),
            exact_name: true,
            first_seen: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn files_get_slots_in_arrival_order_and_wait_while_none_is_free() {
        let slots = Arc::new(Semaphore::new(1));
        let mut backlog = Backlog::new(slots.clone());
        for name in ["a", "b", "c"] {
            backlog.push(found(name));
        }
        let (first, permit) = backlog.try_next().expect("a free slot");
        assert_eq!(first.rel_path, "a");
        assert!(backlog.try_next().is_none(), "no slot is free");
        // Dropped while waiting (as `select!` does), it keeps its place in line.
        let waited = tokio::time::timeout(Duration::from_millis(20), backlog.next()).await;
        assert!(waited.is_err(), "no slot until one is given back");
        drop(permit);
        let (second, _permit) = backlog.next().await;
        assert_eq!(second.rel_path, "b");
        assert!(!backlog.is_empty(), "c still waits");
    }
}
