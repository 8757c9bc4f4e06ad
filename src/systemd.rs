//! Talking to systemd (`Type=notify`): readiness, live status, reloads, the watchdog.
//!
//! Every call is a no-op when `$NOTIFY_SOCKET` is unset (a terminal, a test, the demo), and a
//! failure to notify is logged, never fatal: systemd's own timeouts catch a silent daemon.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// Every watch is armed and the start-up scan is queued.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload has started; [`ready`] follows when it is over.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has started.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The one-line status `systemctl status` shows.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Tells the watchdog the main loop is alive.
pub fn alive() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog (half its timeout), when `WatchdogSec=` is set for us.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(10)))
}
