//! What an upload actually sent, and whether the file stayed the one that was checked.
//!
//! A file is checked (size, package) before its upload and streamed from disk during it, so a
//! writer that truncates or rewrites it in between would make extdrop upload bytes nobody
//! checked, and report a hash that is not theirs. So the body is a [`SentBody`], which ends the
//! body with an error of its own when the file yields fewer or more bytes than were declared,
//! and hashes what it sends; after the attempt, [`changed`] compares what was sent, and the
//! file's [`Snapshot`], with what was checked.
//!
//! Where the hash is taken depends on the size:
//! - Below [`HASH_BESIDE_FROM`], in the body's own read: the hash is of the very bytes sent.
//! - From it on, beside the send, by a second read of the same open file on its own thread.
//!   SHA-256 runs at about 1.8 GB/s on one core, half the speed at which the body goes out
//!   unhashed on loopback (3.8 GB/s, measured with the benchmark's large case): hashing in the
//!   body's read would hold the wire to the hash's speed. The second read comes from the page
//!   cache the first one filled (about 0.1 ms of CPU per MiB). Its hash is the sent bytes'
//!   whenever the file did not change during the upload, which [`changed`] establishes anyway
//!   (size, times, inode); when it did change, the attempt is refused and names no hash, as
//!   the two reads may have seen different bytes. The request never waits for the hash: the
//!   attempt collects it after the answer ([`Tally::sent`]). The second read runs on a thread
//!   at a lower priority ([`HASH_NICE`]), so that where CPU is short the send goes first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The shared end of a [`SentBody`]: the request body owns the reader, the attempt keeps
/// this to learn afterwards what was sent.
#[derive(Debug, Clone)]
pub struct Tally(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    read: u64,
    end: Option<Sent>,
    /// Every declared byte went out, and the hash is the one taken beside the send.
    whole: bool,
    beside: Option<Beside>,
}

/// The hash of a large file, taken by its own read beside the send.
#[derive(Debug)]
struct Beside {
    stop: Arc<AtomicBool>,
    hashing: tokio::sync::oneshot::Receiver<io::Result<Option<Sent>>>,
}

/// The nice value of the thread that hashes beside the send (see [`Beside::start`]).
const HASH_NICE: i32 = 10;

impl Beside {
    /// Starts hashing `file` (a second handle on the file the body reads) from its start, on
    /// a thread of its own that yields to the send: at [`HASH_NICE`], where CPU is short
    /// (2 cores, a busy sink or other uploads) the body's reads and writes go first, and the
    /// hash takes what they leave, finishing after the answer when it must. Not on the
    /// blocking pool, because an unprivileged thread cannot raise its priority back, and the
    /// pool's threads run the filing's barriers next.
    fn start(file: std::fs::File, declared: u64) -> Beside {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let hashing = yielding(move || hash_whole(&file, declared, &stopped));
        Beside { stop, hashing }
    }

    /// The hash once it is taken, as what was sent: `Complete`, or `Short`/`Long` when the
    /// file no longer held the declared size; `Partial` when it could not be read.
    async fn finish(mut self) -> Sent {
        let hashed = match (&mut self.hashing).await {
            Ok(hashed) => hashed,
            Err(_) => Err(io::Error::other("the hashing thread ended without a hash")),
        };
        match hashed {
            Ok(Some(sent)) => sent,
            Ok(None) => Sent::Partial,
            Err(e) => {
                // The server has the file whole; sending it again to learn its hash would
                // upload it twice. The report names no hash instead.
                tracing::warn!(error = %e, "the file went out whole, but the read that hashes it failed; its report names no sha256");
                Sent::Partial
            }
        }
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        // Nobody will ask for the hash: the thread stops at its next piece.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` on a thread of its own at [`HASH_NICE`] (on Linux the nice value is the
/// thread's, not the process's); its result comes through the receiver, which closes without
/// one when the thread could not start.
fn yielding<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("extdrop-hash".to_owned())
        .spawn(move || {
            // Best effort: a thread that cannot be reniced (a system call filter without
            // setpriority, see systemd/extdrop.service) works at the usual priority.
            if let Err(e) = rustix::process::setpriority_process(None, HASH_NICE) {
                tracing::debug!(error = %e, "the thread hashing a large upload keeps its priority");
            }
            let _ = done.send(work());
        });
    if let Err(e) = spawned {
        // The sender went with the closure: the receiver sees no result.
        tracing::warn!(error = %e, "cannot start the thread that hashes a large upload");
    }
    result
}

/// Hashes `file` from its start by positioned reads (the body's reads move the shared offset,
/// these do not), in pieces that stay in the CPU's cache between the copy and the hash.
/// `None` when told to stop.
fn hash_whole(file: &std::fs::File, declared: u64, stop: &AtomicBool) -> io::Result<Option<Sent>> {
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 256 << 10;
    let mut buf = vec![0u8; PIECE];
    let mut hasher = Sha256::new();
    let mut at = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let n = match file.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if at + n as u64 > declared {
            return Ok(Some(Sent::Long { declared }));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Some(if at < declared {
        Sent::Short { read: at, declared }
    } else {
        Sent::Complete {
            sha256: hex::encode(hasher.finalize()),
        }
    }))
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

    /// Whether the hash is taken beside the send (by a second read) rather than in it; ask
    /// before [`Tally::sent`], which collects that hash.
    pub fn hashed_beside(&self) -> bool {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.beside.is_some()
    }

    /// Records that every declared byte went out, hashed beside the send.
    fn whole(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).whole = true;
    }

    /// What was sent, as far as the body got; for a body hashed beside the send, once that hash
    /// is taken (a body that did not go out whole stops it instead).
    pub async fn sent(&self) -> Sent {
        let (end, whole, beside) = {
            let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
            (state.end.clone(), state.whole, state.beside.take())
        };
        match (end, beside) {
            (Some(end), _) => end,
            (None, Some(beside)) if whole => beside.finish().await,
            (None, _) => Sent::Partial,
        }
    }
}

/// Up to this size, a file is read in place rather than on the blocking pool (see
/// [`SentBody`]'s `poll_next`).
pub const READ_IN_PLACE: u64 = 64 << 10;

/// From this size on, a file is hashed beside its send rather than in its read (see the module
/// documentation): below it the hash takes under 2.5 ms, not worth a thread and a second read.
pub const HASH_BESIDE_FROM: u64 = 4 * CHUNK as u64;

/// Bytes read from the file per chunk of the body: large, so that a file of gigabytes costs
/// few trips to the blocking pool, and bounded, so that memory is per upload, not per file size.
pub const CHUNK: usize = 1 << 20;

/// The body of an upload, read from the file in [`CHUNK`]s on the blocking pool (a file up to
/// [`READ_IN_PLACE`] in place), where each chunk of a small file is also hashed (a large one
/// is hashed beside, [`HASH_BESIDE_FROM`]): the runtime only passes the bytes on (no copy
/// between reading and sending). The next chunk is read while the last one is being sent. The
/// body refuses to yield more, or to end earlier, than the declared size.
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

/// The file being read, and the hash of what was read of it (`None`: hashed beside).
struct Reader {
    file: std::fs::File,
    hasher: Option<Sha256>,
    read: u64,
    declared: u64,
    /// The end of the file was met exactly at the declared size.
    at_end: bool,
}

/// What one read of the file gave.
enum Step {
    /// The next chunk.
    Data(Bytes),
    /// The file ended where declared; its hash, unless it is hashed beside.
    End(Option<String>),
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
        // A second handle that cannot be had costs only speed: the body hashes as it reads.
        let beside = (declared >= HASH_BESIDE_FROM)
            .then(|| file.try_clone().ok())
            .flatten()
            .map(|second| Beside::start(second, declared));
        let hasher = beside.is_none().then(Sha256::new);
        let tally = Tally(Arc::new(Mutex::new(State {
            read: 0,
            end: None,
            whole: false,
            beside,
        })));
        let body = SentBody {
            reader: Some(Reader {
                file,
                hasher,
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
        if let Some(mut reader) = self
            .reader
            .take_if(|r| !r.at_end && r.declared > READ_IN_PLACE)
        {
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let step = reader.next_step();
                (reader, step)
            }));
        }
    }

    /// Every declared byte went out: with its hash, or hashed beside (`None`).
    fn ended_whole(&self, sha256: Option<String>) {
        match sha256 {
            Some(sha256) => self.tally.end(Sent::Complete { sha256 }),
            None => self.tally.whole(),
        }
    }
}

impl Stream for SentBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // The file ended with the last chunk: no need to go to the blocking pool to learn it.
        if let Some(reader) = this.reader.take_if(|r| r.at_end) {
            this.ended_whole(reader.hasher.map(|h| hex::encode(h.finalize())));
            return Poll::Ready(None);
        }
        // A small file is one short read, from the page cache as a rule: run here, as the
        // `open` before it is, since a hand-off to the pool and back costs more.
        if this.reading.is_none()
            && let Some(mut reader) = this.reader.take_if(|r| r.declared <= READ_IN_PLACE)
        {
            let step = reader.next_step();
            return Poll::Ready(this.stepped(reader, step));
        }
        this.read_ahead();
        let Some(reading) = this.reading.as_mut() else {
            // No reader and no read: the body has ended (or failed) already.
            return Poll::Ready(None);
        };
        let joined = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        match joined {
            Ok((reader, step)) => Poll::Ready(this.stepped(reader, step)),
            Err(e) => Poll::Ready(Some(Err(io::Error::other(format!(
                "the read of the file failed: {e}"
            ))))),
        }
    }
}

impl SentBody {
    /// What the body yields after a read of the file gave `step`.
    fn stepped(&mut self, reader: Reader, step: Step) -> Option<io::Result<Bytes>> {
        let declared = reader.declared;
        match step {
            Step::Data(bytes) => {
                self.tally.add(bytes.len() as u64);
                self.reader = Some(reader);
                self.read_ahead();
                Some(Ok(bytes))
            }
            Step::End(sha256) => {
                self.ended_whole(sha256);
                None
            }
            Step::Short(read) => {
                self.tally.end(Sent::Short { read, declared });
                Some(Err(io::Error::other(format!(
                    "{FILE_CHANGED}: it ended after {read} of {declared} bytes"
                ))))
            }
            Step::Long => {
                // Never send bytes past the declared length: the request would be malformed.
                self.tally.end(Sent::Long { declared });
                Some(Err(io::Error::other(format!(
                    "{FILE_CHANGED}: it grew past {declared} bytes"
                ))))
            }
            Step::Failed(e) => Some(Err(e)),
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
            return Step::End(self.hasher.take().map(|h| hex::encode(h.finalize())));
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf);
        }
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
        (result, tally.sent().await)
    }

    /// The hash beside a large send runs at a lower priority on its own thread, so where CPU
    /// is short the send goes first (the benchmark's 1 GiB case: 1,250–1,350 MB/s at the
    /// sink with both at the same priority, 1,570–1,640 with the hash at nice 10); the
    /// priority is the thread's, and the caller's stays as it was.
    #[tokio::test]
    async fn the_hash_beside_a_send_yields_to_it_on_a_thread_of_its_own()
    -> Result<(), Box<dyn std::error::Error>> {
        let before = rustix::process::getpriority_process(None)?;
        let there = yielding(|| {
            (
                rustix::process::getpriority_process(None),
                std::thread::current().name().map(str::to_owned),
            )
        })
        .await?;
        assert_eq!(
            there.0?,
            HASH_NICE.max(before),
            "the hashing thread's nice value"
        );
        assert_eq!(there.1.as_deref(), Some("extdrop-hash"));
        assert_eq!(
            rustix::process::getpriority_process(None)?,
            before,
            "the caller's priority is untouched"
        );
        Ok(())
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
        assert_eq!(
            tally.sent().await,
            Sent::Partial,
            "only what went out counts"
        );
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
    async fn a_large_file_is_hashed_beside_its_send_as_sent() {
        let bytes: Vec<u8> = (0..HASH_BESIDE_FROM as usize + 77)
            .map(|i| (i % 253) as u8)
            .collect();
        let (result, sent) = read_all(&bytes, bytes.len() as u64).await;
        assert!(result.is_ok_and(|out| out == bytes));
        let sha256 = hex::encode(Sha256::digest(&bytes));
        assert_eq!(sent, Sent::Complete { sha256 });
    }

    #[test]
    fn the_hash_beside_sees_a_file_that_is_not_the_declared_size() {
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, &[5u8; 1000]).expect("write");
        let stop = AtomicBool::new(false);
        let short = hash_whole(&file, 1001, &stop).expect("hash");
        assert_eq!(
            short,
            Some(Sent::Short {
                read: 1000,
                declared: 1001
            })
        );
        let long = hash_whole(&file, 999, &stop).expect("hash");
        assert_eq!(long, Some(Sent::Long { declared: 999 }));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(hash_whole(&file, 1000, &stop).expect("hash"), None);
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
