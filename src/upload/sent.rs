//! What an upload actually sent, and whether the file stayed the one that was checked.
//!
//! A file is checked (size, package, SHA-256) before its upload and streamed from disk during
//! it, so a writer that truncates or rewrites it in between would make extdrop upload bytes
//! nobody checked, and report a hash that is not theirs. So the body is read through a
//! [`SentReader`], which hashes every byte on its way to the server and ends the body with an
//! error of its own when the file yields fewer or more bytes than were declared; after the
//! attempt, [`changed`] compares what was sent, and the file's [`Snapshot`], with what was
//! checked.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// The reason of a file that changed during its upload, as the report states it.
pub const FILE_CHANGED: &str = "the file changed while it was being uploaded";

/// The identity and state of a file at one moment: enough to notice a truncation, a rewrite
/// in place, or a replacement by another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Size in bytes.
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    /// Device and inode number.
    pub inode: (u64, u64),
}

impl Snapshot {
    /// The snapshot of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Snapshot {
        use std::os::unix::fs::MetadataExt;
        Snapshot {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            inode: (meta.dev(), meta.ino()),
        }
    }

    /// How `now` differs from this snapshot, in a short clause; `None` when it does not.
    pub fn difference(&self, now: &Snapshot) -> Option<String> {
        if now.inode != self.inode {
            Some("another file took its place".to_owned())
        } else if now.size != self.size {
            Some(format!(
                "its size went from {} to {} bytes",
                self.size, now.size
            ))
        } else if now.mtime != self.mtime {
            Some("it was written to (its modification time changed)".to_owned())
        } else {
            None
        }
    }
}

/// How the body's read of the file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Every declared byte was read and the file ended there: the whole body went out.
    Complete {
        /// Lowercase hex SHA-256 of the bytes sent.
        sha256: String,
    },
    /// The file ended before the declared size.
    Short {
        /// Bytes read before the end.
        read: u64,
        /// Bytes declared.
        declared: u64,
    },
    /// The file held more than the declared size.
    Long {
        /// Bytes declared.
        declared: u64,
    },
    /// The read stopped before the end of the file: the server answered or the connection
    /// broke first, or the file could not be read.
    Partial,
}

/// The shared end of a [`SentReader`]: the request body owns the reader, the attempt keeps
/// this to learn afterwards what was sent.
#[derive(Debug, Clone)]
pub struct Tally(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    hasher: Sha256,
    read: u64,
    declared: u64,
    end: Option<Sent>,
}

impl Tally {
    /// How many bytes of the file were read into the body so far.
    pub fn read(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read
    }

    /// What was sent, as far as the body got.
    pub fn sent(&self) -> Sent {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.end.clone().unwrap_or(Sent::Partial)
    }
}

/// A reader of the file being uploaded that hashes what it yields and refuses to yield more, or
/// to end earlier, than the declared size.
#[derive(Debug)]
pub struct SentReader<R> {
    inner: R,
    tally: Tally,
}

impl<R> SentReader<R> {
    /// Reads `inner`, which should hold exactly `declared` bytes.
    pub fn new(inner: R, declared: u64) -> (SentReader<R>, Tally) {
        let tally = Tally(Arc::new(Mutex::new(State {
            hasher: Sha256::new(),
            read: 0,
            declared,
            end: None,
        })));
        (
            SentReader {
                inner,
                tally: tally.clone(),
            },
            tally,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SentReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        let mut state = self.tally.0.lock().unwrap_or_else(|e| e.into_inner());
        let (read, declared) = (state.read, state.declared);
        if fresh.is_empty() {
            // The end of the file: it must be where the request said it is.
            if read < declared {
                state.end = Some(Sent::Short { read, declared });
                return Poll::Ready(Err(io::Error::other(format!(
                    "{FILE_CHANGED}: it ended after {read} of {declared} bytes"
                ))));
            }
            let sha256 = hex::encode(state.hasher.clone().finalize());
            state.end = Some(Sent::Complete { sha256 });
            return Poll::Ready(Ok(()));
        }
        if read + fresh.len() as u64 > declared {
            // Never send bytes past the declared length: the request would be malformed. An
            // error must leave nothing read, so the fresh bytes are taken back.
            state.end = Some(Sent::Long { declared });
            drop(state);
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::other(format!(
                "{FILE_CHANGED}: it grew past {declared} bytes"
            ))));
        }
        state.hasher.update(fresh);
        state.read += fresh.len() as u64;
        Poll::Ready(Ok(()))
    }
}

/// Whether the file changed during an attempt: what was sent (`sent`) and the file as it is now
/// (`now`, `None` when it is gone) against what was checked (`checked`, and the SHA-256 of the
/// check when one was made). Returns the reason for the report.
pub fn changed(
    checked: &Snapshot,
    checked_sha256: Option<&str>,
    sent: &Sent,
    now: Option<&Snapshot>,
) -> Option<String> {
    let detail = match sent {
        Sent::Short { read, declared } => {
            Some(format!("it ended after {read} of {declared} bytes"))
        }
        Sent::Long { declared } => Some(format!("it grew past {declared} bytes")),
        Sent::Complete { sha256 } if checked_sha256.is_some_and(|c| c != sha256) => {
            Some("the bytes sent are not the bytes that were checked".to_owned())
        }
        Sent::Complete { .. } | Sent::Partial => match now {
            None => Some("it is gone".to_owned()),
            Some(now) => checked.difference(now),
        },
    };
    detail.map(|detail| format!("{FILE_CHANGED}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(bytes: &[u8], declared: u64) -> (io::Result<Vec<u8>>, Sent) {
        let (mut reader, tally) = SentReader::new(bytes, declared);
        let mut out = Vec::new();
        let result = reader.read_to_end(&mut out).await.map(|_| out);
        (result, tally.sent())
    }

    #[tokio::test]
    async fn a_whole_file_is_hashed_as_sent() {
        let (result, sent) = read_all(b"abc", 3).await;
        assert_eq!(result.ok().as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            sent,
            Sent::Complete {
                sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                    .to_owned()
            }
        );
    }

    #[tokio::test]
    async fn a_short_or_long_file_ends_the_body_with_an_error() {
        let (result, sent) = read_all(b"ab", 3).await;
        assert!(result.is_err());
        assert_eq!(
            sent,
            Sent::Short {
                read: 2,
                declared: 3
            }
        );
        let (result, sent) = read_all(b"abcd", 3).await;
        assert!(result.is_err());
        assert_eq!(sent, Sent::Long { declared: 3 });
    }

    #[test]
    fn any_difference_is_a_change() {
        let checked = Snapshot {
            size: 3,
            mtime: (1, 0),
            inode: (1, 7),
        };
        let complete = Sent::Complete {
            sha256: "aa".to_owned(),
        };
        assert_eq!(
            changed(&checked, Some("aa"), &complete, Some(&checked)),
            None
        );
        assert_eq!(
            changed(&checked, None, &Sent::Partial, Some(&checked)),
            None
        );
        let reason = changed(&checked, Some("bb"), &complete, Some(&checked));
        assert!(reason.is_some_and(|r| r.starts_with(FILE_CHANGED)));
        for now in [
            Snapshot { size: 2, ..checked },
            Snapshot {
                mtime: (2, 0),
                ..checked
            },
            Snapshot {
                inode: (1, 8),
                ..checked
            },
        ] {
            assert!(changed(&checked, Some("aa"), &complete, Some(&now)).is_some());
            assert!(changed(&checked, None, &Sent::Partial, Some(&now)).is_some());
        }
        assert!(changed(&checked, None, &Sent::Partial, None).is_some());
        assert!(changed(&checked, None, &Sent::Long { declared: 3 }, Some(&checked)).is_some());
    }
}
