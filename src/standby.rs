//! Standby: `extdrop run` on inboxes that another extdrop process already handles (a second
//! host sharing an NFS inbox, or a second service on one host) waits for them instead of
//! exiting, so that systemd does not restart it in a loop, and takes over the moment the
//! active one is gone.
//!
//! Invariants: a process handles an inbox only while it holds the inbox lock (an `flock` on
//! `<inbox>/.extdrop/lock`, released by the kernel however the holder ends); locks are taken
//! all at once or not at all, so two processes on standby can never each hold half of the
//! inboxes and wait for each other. While on standby the process reports READY, with a status
//! that names the holder, and touches nothing in the inboxes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{Config, Watch};
use crate::daemon::Control;
use crate::store::{self, InboxLock, LockError};

/// How often a process on standby tries the locks again: how long a take-over can lag behind
/// the active process's end.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// The end of a standby.
#[derive(Debug)]
pub enum Standby {
    /// Every inbox lock is held: the process is active, with this (possibly reloaded)
    /// configuration.
    Active {
        /// The configuration to run with.
        config: Box<Config>,
        /// The inbox locks, by inbox.
        locks: HashMap<PathBuf, InboxLock>,
    },
    /// A stop was asked for while on standby.
    Stopped,
}

/// Takes every inbox lock of `watches`, or none.
pub fn lock_all<'a>(
    watches: impl IntoIterator<Item = &'a Watch>,
) -> Result<HashMap<PathBuf, InboxLock>, LockError> {
    let mut locks = HashMap::new();
    for watch in watches {
        if !locks.contains_key(&watch.inbox) {
            // On an error the locks taken so far are dropped, that is, released.
            locks.insert(watch.inbox.clone(), store::lock_inbox(watch)?);
        }
    }
    Ok(locks)
}

/// Waits until this process holds every inbox lock of `config`, on standby meanwhile. A
/// reload on standby replaces the configuration waited with; a shutdown ends the wait. Errors
/// other than a lock held elsewhere (an unusable folder) end it too.
pub async fn until_active(
    mut config: Config,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<Standby, LockError> {
    let mut announced: Option<String> = None;
    let mut control_open = true;
    loop {
        match lock_all(&config.watches) {
            Ok(locks) => {
                if announced.is_some() {
                    tracing::info!("the other extdrop process is gone: taking over");
                }
                return Ok(Standby::Active {
                    config: Box::new(config),
                    locks,
                });
            }
            Err(LockError::Busy { inbox, holder, .. }) => {
                let text = format!(
                    "standby: inbox {} is handled by another extdrop process ({holder}); taking over when it stops",
                    crate::shown::escaped(&inbox.to_string_lossy())
                );
                if announced.as_ref() != Some(&text) {
                    tracing::warn!("{text}");
                    // Ready as a standby: systemd must not count it as a failed start.
                    crate::systemd::ready();
                    crate::systemd::status(&text);
                    announced = Some(text);
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(STANDBY_RETRY) => {}
            command = control.recv(), if control_open => match command {
                Some(Control::Shutdown) => {
                    tracing::info!("shutting down while on standby");
                    crate::systemd::stopping();
                    return Ok(Standby::Stopped);
                }
                Some(Control::Reload(new)) => {
                    tracing::info!("configuration reloaded while on standby");
                    config = *new;
                    announced = None;
                }
                None => control_open = false,
            },
        }
    }
}
