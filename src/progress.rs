//! Progress where a person waits: `extdrop upload` of a large file shows bytes, rate and ETA
//! on stderr — but only when stderr is a terminal. Scripts, pipes and journald get exactly the
//! output they always got (`tests/cli.rs` holds that), so a bar can never end up in a log or
//! confuse a parser.

use std::io::IsTerminal;
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
        }
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
    }
}
