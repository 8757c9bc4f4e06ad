//! Progress where a person waits: `extdrop upload` of a large file shows bytes, rate and ETA,
//! and `extdrop once` files filed out of files found, on stderr — but only when stderr is a
//! terminal. Scripts, pipes and journald get exactly the output they always got (`tests/cli.rs`
//! holds that), so a bar can never end up in a log or confuse a parser.
//!
//! Log lines share stderr with the bar: [`log_writer`] lifts the bar off while a line is
//! written and draws it again below, so that a line never lands in the middle of the bar.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::upload::Tally;

/// How often the bar is brought up to date from the bytes read: often enough to look live,
/// rarely enough to cost nothing.
const TICK: Duration = Duration::from_millis(100);

/// A byte-progress bar for one upload, or nothing when nobody is watching.
#[derive(Debug)]
pub struct UploadProgress {
    bar: Option<ProgressBar>,
}

impl UploadProgress {
    /// A bar for `size` bytes named `name`, drawn on stderr only if stderr is a terminal.
    pub fn new(name: &str, size: u64) -> UploadProgress {
        UploadProgress::with_terminal(name, size, std::io::stderr().is_terminal())
    }

    /// As [`UploadProgress::new`], with the terminal question answered by the caller (tests).
    pub fn with_terminal(name: &str, size: u64, terminal: bool) -> UploadProgress {
        if !terminal {
            return UploadProgress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        // The template is a constant: an error here is a programming error, and a plain bar
        // is still better than none.
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("uploading {name}"));
        show(&bar);
        UploadProgress { bar: Some(bar) }
    }

    /// Whether a bar is shown at all.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Follows the bytes read into the request body, until [`UploadProgress::finish`]. Needs a
    /// tokio runtime when a bar is shown.
    pub fn follow(&self, tally: Tally) {
        let Some(bar) = self.bar.clone() else {
            return;
        };
        tokio::spawn(async move {
            while !bar.is_finished() {
                bar.set_position(tally.read());
                tokio::time::sleep(TICK).await;
            }
        });
    }

    /// Removes the bar: the result line that follows stands alone, as without a terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            hide();
        }
    }
}

/// Files filed out of files found, for `extdrop once` on a terminal: a pass over a backlog
/// says how far it is, where otherwise only its closing summary line would. The total is what
/// `once` found at its start (the files in the inboxes and the claims to resume).
#[derive(Debug)]
pub struct FilesProgress {
    bar: Option<ProgressBar>,
}

impl FilesProgress {
    /// A bar if `wanted` (a `once` pass) and stderr is a terminal; nothing otherwise.
    pub fn new(wanted: bool) -> FilesProgress {
        FilesProgress::with_terminal(wanted && std::io::stderr().is_terminal())
    }

    /// As [`FilesProgress::new`], with the question answered by the caller (tests).
    pub fn with_terminal(terminal: bool) -> FilesProgress {
        if !terminal {
            return FilesProgress { bar: None };
        }
        // Hidden until the total is known: files filed before that (orphans found among the
        // claims) are counted, not drawn as "1/0".
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        // The template is a constant: an error here is a programming error, and a plain bar
        // is still better than none.
        if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {pos}/{len} files filed") {
            bar.set_style(style.progress_chars("=> "));
        }
        FilesProgress { bar: Some(bar) }
    }

    /// Whether a bar is shown at all.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// The start-up scan found `left` files still to file: the total is those and the files
    /// already filed, and the bar appears.
    pub fn found(&self, left: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_length(bar.position() + left);
        bar.set_draw_target(ProgressDrawTarget::stderr());
        show(bar);
    }

    /// One more file filed, in done or in failed.
    pub fn filed(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Files filed so far and the total, as the bar shows them (tests).
    pub fn counts(&self) -> Option<(u64, u64)> {
        self.bar
            .as_ref()
            .map(|bar| (bar.position(), bar.length().unwrap_or_default()))
    }

    /// Removes the bar: the summary line that follows stands alone, as without a terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            hide();
        }
    }
}

/// The bar on stderr now, which log lines must step around. One at a time: a process runs
/// one command.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn show(bar: &ProgressBar) {
    *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
}

fn hide() {
    *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Where log lines go (for `tracing_subscriber`'s `with_writer`): stderr, around the bar shown
/// there if any.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// Writes to stderr; while a bar is shown, with the bar lifted off for the write. A line
/// stderr refuses (closed, a broken pipe) is dropped: the daemon goes on without its log
/// rather than failing where it logs.
#[derive(Debug)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Cloned out of the lock: the bar's own lock is taken while writing.
        let shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // A log event arrives as one buffer, so the whole line goes out at once.
        let _lost = match shown {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _lost = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_drawn_without_a_terminal() {
        let progress = UploadProgress::with_terminal("a.zip", 1 << 30, false);
        assert!(!progress.shown());
        progress.finish();

        let files = FilesProgress::with_terminal(false);
        files.found(3);
        files.filed();
        assert!(!files.shown());
        assert_eq!(files.counts(), None);
        files.finish();
    }

    #[test]
    fn the_total_is_what_was_filed_before_the_scan_and_what_it_found() {
        let files = FilesProgress::with_terminal(true);
        // An orphan filed while the claims are resumed, before the scan's count.
        files.filed();
        files.found(4);
        files.filed();
        assert_eq!(files.counts(), Some((2, 5)));
        files.finish();
    }
}
