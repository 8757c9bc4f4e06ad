//! What an upload actually sent, and whether the file stayed the one that was checked.
//!
//! A file is checked (size, package, SHA-256) before its upload and streamed from disk during
//! it, so a writer that truncates or rewrites it in between would make extdrop upload bytes
//! nobody checked, and report a hash that is not theirs. So the body is a [`SentBody`], which
//! hashes every byte on its way to the server (the one read of the file: the check before does
//! not hash it) and ends the body with an error of its own when the file yields fewer or more bytes than were declared; after the
//! attempt, [`changed`] compares what was sent, and the file's [`Snapshot`], with what was
//! checked.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use sha2::{Digest, Sha256};

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
    /// Change time, which every write and every change of the modification time moves (a
    /// rewrite that puts the old size and modification time back still shows here).
    pub ctime: (i64, i64),
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
            ctime: (meta.ctime(), meta.ctime_nsec()),
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
        } else if now.ctime != self.ctime {
            Some("it was written to or its attributes changed (its change time moved)".to_owned())
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
    read: u64,
    end: Option<Sent>,
}

impl Tally {
    /// How many bytes of the file were read into the body so far.
    pub fn read(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read
    }

    /// Counts `n` more bytes yielded into the body.
    fn add(&self, n: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read += n;
    }

    /// Records how the body ended.
    fn end(&self, how: Sent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).end = Some(how);
    }

    /// What was sent, as far as the body got.
    pub fn sent(&self) -> Sent {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.end.clone().unwrap_or(Sent::Partial)
    }
}

/// Bytes read from the file per chunk of the body: large, so that a file of gigabytes costs
/// few trips to the blocking pool, and bounded, so that memory is per upload, not per file size.
pub const CHUNK: usize = 1 << 20;

/// The body of an upload, read from the file in [`CHUNK`]s on the blocking pool, where each
/// chunk is also hashed: the runtime only passes the bytes on (one read of the file, no copy
/// between reading and sending). The next chunk is read and hashed while the last one is being
/// sent. The body refuses to yield more, or to end earlier, than the declared size.
///
/// The tally records only what the body *yielded*: a chunk read ahead and never sent (the
/// server answered first) is neither counted nor taken for a complete body.
pub struct SentBody {
    /// The file and its hash so far, between reads.
    reader: Option<Reader>,
    /// The read under way.
    reading: Option<tokio::task::JoinHandle<(Reader, Step)>>,
    tally: Tally,
}

/// The file being read, and the hash of what was read of it.
struct Reader {
    file: std::fs::File,
    hasher: Sha256,
    read: u64,
    declared: u64,
    /// The end of the file was met exactly at the declared size.
    at_end: bool,
}

/// What one read of the file gave.
enum Step {
    /// The next chunk.
    Data(Bytes),
    /// The file ended where declared; its hash.
    End(String),
    /// The file ended after `read` bytes, short of the declared size.
    Short(u64),
    /// The file holds more than declared.
    Long,
    /// The read failed.
    Failed(io::Error),
}

impl SentBody {
    /// Reads `file`, which should hold exactly `declared` bytes from where it stands.
    pub fn new(file: std::fs::File, declared: u64) -> (SentBody, Tally) {
        let tally = Tally(Arc::new(Mutex::new(State { read: 0, end: None })));
        let body = SentBody {
            reader: Some(Reader {
                file,
                hasher: Sha256::new(),
                read: 0,
                declared,
                at_end: false,
            }),
            reading: None,
            tally: tally.clone(),
        };
        (body, tally)
    }

    /// Starts reading the next chunk, unless the body has ended or a read is under way.
    fn read_ahead(&mut self) {
        if self.reading.is_some() {
            return;
        }
        if let Some(mut reader) = self.reader.take_if(|r| !r.at_end) {
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let step = reader.next_step();
                (reader, step)
            }));
        }
    }
}

impl Stream for SentBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // The file ended with the last chunk: no need to go to the blocking pool to learn it.
        if let Some(reader) = this.reader.take_if(|r| r.at_end) {
            let sha256 = hex::encode(reader.hasher.finalize());
            this.tally.end(Sent::Complete { sha256 });
            return Poll::Ready(None);
        }
        this.read_ahead();
        let Some(reading) = this.reading.as_mut() else {
            // No reader and no read: the body has ended (or failed) already.
            return Poll::Ready(None);
        };
        let joined = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let (reader, step) = match joined {
            Ok(done) => done,
            Err(e) => {
                return Poll::Ready(Some(Err(io::Error::other(format!(
                    "the read of the file failed: {e}"
                )))));
            }
        };
        let declared = reader.declared;
        match step {
            Step::Data(bytes) => {
                this.tally.add(bytes.len() as u64);
                this.reader = Some(reader);
                this.read_ahead();
                Poll::Ready(Some(Ok(bytes)))
            }
            Step::End(sha256) => {
                this.tally.end(Sent::Complete { sha256 });
                Poll::Ready(None)
            }
            Step::Short(read) => {
                this.tally.end(Sent::Short { read, declared });
                Poll::Ready(Some(Err(io::Error::other(format!(
                    "{FILE_CHANGED}: it ended after {read} of {declared} bytes"
                )))))
            }
            Step::Long => {
                // Never send bytes past the declared length: the request would be malformed.
                this.tally.end(Sent::Long { declared });
                Poll::Ready(Some(Err(io::Error::other(format!(
                    "{FILE_CHANGED}: it grew past {declared} bytes"
                )))))
            }
            Step::Failed(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl Reader {
    /// Reads and hashes the next chunk (blocking). One byte more than is left is asked for, so
    /// that a file longer than declared shows itself, and a file that ends where declared is
    /// known to with its last chunk (no further read).
    fn next_step(&mut self) -> Step {
        use std::io::Read;
        let left = self.declared - self.read;
        let want = left.saturating_add(1).min(CHUNK as u64);
        // Read into spare capacity: no zeroing of a buffer about to be overwritten.
        let mut buf = Vec::with_capacity(want as usize);
        if let Err(e) = (&mut self.file).take(want).read_to_end(&mut buf) {
            return Step::Failed(e);
        }
        let filled = buf.len();
        let ended = (filled as u64) < want;
        let filled_u64 = filled as u64;
        if filled_u64 > left {
            return Step::Long;
        }
        if ended && filled_u64 < left {
            return Step::Short(self.read + filled_u64);
        }
        if filled == 0 {
            // Nothing was left, and the file ended there.
            return Step::End(hex::encode(self.hasher.clone().finalize()));
        }
        self.hasher.update(&buf);
        self.read += filled_u64;
        self.at_end = ended;
        Step::Data(Bytes::from(buf))
    }
}

/// Whether the file changed during an attempt: what was sent (`sent`) and the file as it is now
/// (`now`, `None` when it is gone) against what was checked (`checked`). Returns the reason for
/// the report.
pub fn changed(checked: &Snapshot, sent: &Sent, now: Option<&Snapshot>) -> Option<String> {
    let detail = match sent {
        Sent::Short { read, declared } => {
            Some(format!("it ended after {read} of {declared} bytes"))
        }
        Sent::Long { declared } => Some(format!("it grew past {declared} bytes")),
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
    use futures_util::StreamExt;

    async fn read_all(bytes: &[u8], declared: u64) -> (io::Result<Vec<u8>>, Sent) {
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, bytes).expect("write");
        std::io::Seek::rewind(&mut file).expect("rewind");
        let (mut body, tally) = SentBody::new(file, declared);
        let mut out = Vec::new();
        let result = loop {
            match body.next().await {
                Some(Ok(chunk)) => out.extend_from_slice(&chunk),
                Some(Err(e)) => break Err(e),
                None => break Ok(out),
            }
        };
        (result, tally.sent())
    }

    #[tokio::test]
    async fn a_body_dropped_after_reading_ahead_is_not_complete() {
        let mut file = tempfile::tempfile().expect("temp file");
        let bytes = vec![7u8; CHUNK + 10];
        std::io::Write::write_all(&mut file, &bytes).expect("write");
        std::io::Seek::rewind(&mut file).expect("rewind");
        let (mut body, tally) = SentBody::new(file, bytes.len() as u64);
        let first = body.next().await;
        assert!(first.is_some_and(|c| c.is_ok_and(|c| c.len() == CHUNK)));
        // The last chunk is being read ahead now; the server answers before it is sent.
        drop(body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(tally.sent(), Sent::Partial, "only what went out counts");
        assert_eq!(tally.read(), CHUNK as u64);
    }

    #[tokio::test]
    async fn a_file_of_many_chunks_is_sent_whole_in_order() {
        let bytes: Vec<u8> = (0..CHUNK * 2 + 77).map(|i| (i % 251) as u8).collect();
        let (result, sent) = read_all(&bytes, bytes.len() as u64).await;
        assert!(result.is_ok_and(|out| out == bytes));
        assert!(matches!(sent, Sent::Complete { .. }));
        let (result, sent) = read_all(&bytes, CHUNK as u64).await;
        assert!(result.is_err(), "longer than declared at a chunk's edge");
        assert_eq!(
            sent,
            Sent::Long {
                declared: CHUNK as u64
            }
        );
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
            ctime: (1, 0),
            inode: (1, 7),
        };
        let complete = Sent::Complete {
            sha256: "aa".to_owned(),
        };
        assert_eq!(changed(&checked, &complete, Some(&checked)), None);
        assert_eq!(changed(&checked, &Sent::Partial, Some(&checked)), None);
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
            Snapshot {
                ctime: (1, 5),
                ..checked
            },
        ] {
            assert!(changed(&checked, &complete, Some(&now)).is_some());
            assert!(changed(&checked, &Sent::Partial, Some(&now)).is_some());
        }
        let reason = changed(&checked, &Sent::Partial, None);
        assert!(reason.is_some_and(|r| r.starts_with(FILE_CHANGED)));
        assert!(changed(&checked, &Sent::Long { declared: 3 }, Some(&checked)).is_some());
    }
}
