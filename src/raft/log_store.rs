//! Durable Raft log and vote storage for the coordinators: append-only segment files.
//!
//! openraft splits a node's persistent state in two: the *log store* (this module: the vote,
//! the replicated log entries, the id of the last purged entry and, optionally, the last known
//! committed log id) and the *state machine* (the coordinator's tables in DuckDB, elsewhere in
//! `src/raft/`). [`LogStore`] implements openraft's [`RaftLogStorage`] and [`RaftLogReader`];
//! [`LogStore::get_log_reader`](RaftLogStorage::get_log_reader) hands out [`LogStoreReader`]s
//! that share the same store for the replication tasks.
//!
//! # Why a log of its own
//!
//! Every Raft write goes through this store before it may be acknowledged: a vote must be on disk
//! before the node answers a vote request, and an entry must be on disk before the node counts
//! itself towards its commit quorum. That is an append-mostly log with small, frequent, fsynced
//! writes, read back almost only while it is fresh. DuckDB (the state machine's store) is an
//! analytical column store with a costly commit. The first version kept the log in redb, an
//! embedded B-tree: correct, but each one-entry commit wrote about seven pages and spent twice
//! the CPU of its `fdatasync` on page bookkeeping, on every node, every round. A log that is
//! appended to and cut at either end needs neither a tree nor pages: this one writes each group
//! commit as one run of records at the end of a file and fsyncs it.
//!
//! # Layout
//!
//! A directory (`raft-log/` in a coordinator's data directory) of segment files, each a run of
//! checksummed records that starts with a header carrying the small values (`segment.rs` has the
//! format), and a `LOCK` file held locked while the store is open. Segments are created full
//! size and zero-filled, so an append overwrites zeros and its `fdatasync` journals no change of
//! the file's size; the next one is made ahead on a thread of its own once the current one is
//! half full, so starting it costs the writer a header and a rename, not megabytes of zeros. In memory the store keeps where each live entry is and the small values
//! (`index.rs`), rebuilt from the segments at open.
//!
//! # Writes: one writer thread, group commit
//!
//! openraft's core awaits each storage call, and its contract for `append` is to return as soon
//! as the entries are readable and to report durability later through the [`IOFlushed`]
//! callback, so that the core never waits for a disk. Every write therefore goes, in the order
//! openraft issued it, to one writer thread per store. The thread takes whatever is queued (up
//! to `writer::MAX_BATCH` writes), encodes it as records, writes them with one `pwrite` at the
//! end of the current segment and one `fdatasync`, and then applies them to the in-memory index
//! — a group commit: under load many appends share one fsync, and the core goes on appending
//! and replicating meanwhile.
//!
//! * [`append`](RaftLogStorage::append) puts the encoded entries in an in-memory `pending` map
//!   (so readers see them at once), queues them and returns; the writer calls the callback after
//!   the fsync, then drops them from `pending` (after adding them to the index, so a reader that
//!   looks at `pending` first and the index second never misses one). A read whose entries are
//!   all still pending (a fresh entry replicated to the followers) is answered from memory on
//!   the caller's thread, without a hop to the blocking pool.
//! * [`save_vote`](RaftLogStorage::save_vote), [`truncate_after`](RaftLogStorage::truncate_after)
//!   and [`purge`](RaftLogStorage::purge) are queued the same way, written as records, and
//!   awaited: each returns once its record is on disk. A purge is one record (the last purged
//!   log id, which drops every entry up to it on replay), so a crash leaves the old or the new
//!   state, never a hole. A segment no live entry is in any more is deleted: every newer segment's
//!   header carries the small values it held.
//! * [`save_committed`](RaftLogStorage::save_committed) is not queued and not durable by itself:
//!   it sets the value the writer puts in its next write (every write is fsynced), or writes on
//!   a clean close. The writer holds it back while the entry it names is still queued, so on
//!   disk it never runs ahead of the entries. Losing the newest value in a crash only means
//!   re-applying a little less on restart (openraft treats `committed` as an optional hint, and
//!   the DuckDB state machine persists its own `last_applied`).
//! * `append` refuses a batch that would leave a gap (its entries must be consecutive and start
//!   right after the last stored entry, or right after the last purged one when the log is
//!   empty), and every read checks that the entries it returns are consecutive. A refused write
//!   fails its whole batch before anything is written; the writer then writes that batch's
//!   writes one by one, so only the refused one fails.
//! * Dropping the last [`LogStore`] handle closes the queue; the thread finishes what is queued
//!   and is joined, and the lock is released, so the store can be opened again at once.
//!
//! # Reads
//!
//! The vote and the committed log id are read from memory. Entries are read with `pread` from
//! the segments (almost always from the page cache), on tokio's blocking thread pool through
//! [`tokio::task::spawn_blocking`]: `tokio::task::block_in_place` would panic on a
//! current-thread runtime (used by tests), and doing the work inline would stall every task
//! sharing the worker thread, including the Raft core's timers. openraft's own
//! `AsyncRuntime::spawn_blocking` is not used: in 0.10.0-alpha.37 the tokio runtime does not
//! override the default, which starts a new OS thread per call.
//!
//! All methods must therefore be called from within a tokio runtime. [`LogStore::open`] is a plain
//! blocking function meant to be called once at startup.
//!
//! # Crashes
//!
//! A write is answered only once its `fdatasync` returned, and records are checksummed. At open
//! the segments are read in order: in the newest one, the first record that is not valid (cut
//! short or failing its checksum) is where an interrupted write ended, and it and everything
//! after it are zeroed (it was never acknowledged; left there, a later shorter write could make
//! an old record after it readable again). Anywhere else an invalid record is damage a crash
//! cannot leave, and the store refuses to open, naming the file and what to do (`open.rs`). So
//! after a SIGKILL the store opens, holds every answered write, and its entries form one run
//! (tested by killing a writing process at random moments, `crash_tests`). A new store is
//! created under another name and renamed into place, and a new segment likewise, so a crash
//! while either is created leaves nothing that fails to open. A store in the old redb layout
//! (`raft-log.redb`) is converted once, at open (`legacy.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::OptionalSend;
use openraft::RaftTypeConfig;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::index::{Loc, Log};
use self::segment::Saved;
use self::writer::{Op, Writer};
use super::stages::{Stage, StageClock};

/// Version of the on-disk layout described in the module docs; bumped on incompatible changes.
/// Version 1 was the redb file.
pub const FORMAT_VERSION: u32 = 2;

/// Upper bound, in encoded bytes, of what one
/// [`limited_get_log_entries`](RaftLogReader::limited_get_log_entries) call returns (at least
/// one entry is always returned). Keeps a replication batch of large entries well below gRPC's
/// default 4 MiB message limit; openraft sends the rest in the next batch.
pub const LIMITED_READ_MAX_BYTES: usize = 1024 * 1024;

/// Most encoded bytes a read decodes on the caller's thread when every entry it asks for is
/// still pending (`Inner::read_pending_only`); larger reads go to the blocking pool.
const INLINE_READ_MAX_BYTES: usize = 64 * 1024;

/// Most bytes between two stored entries that one read still spans (the records' own
/// prefixes and small records in between); farther apart, they are read separately.
const READ_GAP_MAX_BYTES: u64 = 4096;

/// A durable write slower than this is logged as a warning (a sign of a saturated disk, which
/// shows up as spurious Raft elections).
const SLOW_COMMIT: Duration = Duration::from_millis(200);

/// The Raft log and vote store of one coordinator: a cheap-to-clone handle to one directory of
/// segments.
///
/// Implements [`RaftLogStorage`] and [`RaftLogReader`] for any type config whose entries, vote
/// and log id can be (de)serialized with serde (openraft's `serde` feature provides that for its
/// own types). See the module docs for the layout and the durability rules.
pub struct LogStore<C: RaftTypeConfig> {
    inner: Arc<Inner>,
    writer: Arc<Writer<C>>,
}

/// A read-only handle on a [`LogStore`], as handed to openraft's replication tasks
/// by [`RaftLogStorage::get_log_reader`]. Sees every write of the store as soon as it returns.
pub struct LogStoreReader<C: RaftTypeConfig> {
    inner: Arc<Inner>,
    _config: PhantomData<fn() -> C>,
}

/// What both handles share.
struct Inner {
    /// The store's directory.
    path: PathBuf,
    /// What the segments hold: where each live entry is, and the small values.
    log: Mutex<Log>,
    /// Entries handed to the writer and not on disk yet, by index: readable from the moment
    /// `append` returns, as openraft requires. The writer removes them once they are written.
    pending: Mutex<BTreeMap<u64, Arc<Vec<u8>>>>,
    /// The committed log id openraft saved last, which the writer puts in its next write
    /// (see "Writes" in the module docs).
    committed: Mutex<CommittedSlot>,
    /// Where appends and their fsyncs are timed (`--stage-clock`), once set.
    stages: std::sync::OnceLock<Arc<StageClock>>,
    /// The locked `LOCK` file: held while the store is open.
    _lock: File,
}

/// The committed log id as openraft last saved it, and whether the segments have that value
/// yet.
#[derive(Default)]
struct CommittedSlot {
    /// `None` until the first `save_committed`; `Some(None)` deletes it.
    /// (With its index, so the writer can hold it back until the entry it names is written.)
    latest: Option<Option<Saved>>,
    /// Whether the segments hold `latest` (durably, or in a write that a clean close makes
    /// durable).
    written: bool,
}

impl Inner {
    /// The in-memory log, locked.
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An error of this store: its path, then `message`.
    fn error(&self, kind: io::ErrorKind, message: impl fmt::Display) -> io::Error {
        io::Error::new(
            kind,
            format!("raft log store {}: {message}", self.path.display()),
        )
    }

    /// Notes that entries `first..=last` reached `stage`, when a stage clock is set.
    fn record(&self, first: u64, last: u64, stage: Stage) {
        if let Some(clock) = self.stages.get() {
            clock.record(first, last, stage);
        }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens the log store in the directory `path`, creating it (and its parent directory) if
    /// missing. A new store is created under another name and then renamed, so a crash while
    /// it is created never leaves one that does not open; a store in the old redb layout at
    /// `path` with the extension `.redb` is converted first (see `open.rs`).
    ///
    /// Blocking: call it before starting Raft, not from inside an async task that must stay
    /// responsive. Fails with [`io::ErrorKind::ResourceBusy`] if another process (or another
    /// `LogStore` in this process) has the store open, and with [`io::ErrorKind::InvalidData`]
    /// if it is damaged or holds an unknown layout version. Every error message names the path.
    pub fn open(path: &Path) -> Result<Self, io::Error>
    where
        LogIdOf<C>: Serialize + DeserializeOwned,
    {
        let (inner, active) = open::open_inner::<C>(path)?;
        let inner = Arc::new(inner);
        let writer = Arc::new(Writer::start(&inner, active)?);
        tracing::debug!(path = %path.display(), "raft log store opened");
        Ok(Self { inner, writer })
    }

    /// Times this store's appends and their fsyncs on `clock` (a second call is ignored).
    pub fn set_stage_clock(&self, clock: Arc<StageClock>) {
        let _ = self.inner.stages.set(clock);
    }

    /// The path of the store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A reader sharing this store, the same as openraft gets from `get_log_reader`.
    pub fn reader(&self) -> LogStoreReader<C> {
        LogStoreReader {
            inner: self.inner.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Clone for LogStoreReader<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl<C: RaftTypeConfig> Debug for LogStoreReader<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStoreReader")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// The store reads exactly like its readers do.
impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        self.reader().try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.reader().read_vote().await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        self.reader().limited_get_log_entries(start, end).await
    }
}

impl<C> RaftLogReader<C> for LogStoreReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        read_entries::<C>(&self.inner, inclusive_bounds(&range), None).await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        let vote = self.inner.log().meta.vote.clone();
        vote.map(|bytes| decode(&bytes).map_err(|e| self.inner.data_err("vote", e)))
            .transpose()
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let bounds = inclusive_bounds(&(start..end));
        read_entries::<C>(&self.inner, bounds, Some(LIMITED_READ_MAX_BYTES)).await
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    type LogReader = LogStoreReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        run_blocking(&self.inner, |inner| inner.log_state::<C>()).await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = encode(vote, "vote")?;
        self.write_and_wait(|done| Op::Vote { bytes, done }).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let saved = match &committed {
            Some(log_id) => Some(Saved {
                index: log_id.index,
                bytes: encode(log_id, "committed log id")?,
            }),
            None => None,
        };
        // Not queued, and not durable by itself: the writer puts it in its next transaction
        // (see the module docs). One write per commit would wake the writer thread for a
        // transaction of its own on every node, every round.
        let mut slot = self
            .inner
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slot.latest = Some(saved);
        slot.written = false;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let saved = self
            .inner
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latest
            .clone();
        match saved {
            Some(Some(saved)) => decode(&saved.bytes)
                .map(Some)
                .map_err(|e| self.inner.data_err("committed log id", e)),
            Some(None) => Ok(None),
            None => {
                let saved = self.inner.log().meta.committed.clone();
                saved
                    .map(|saved| {
                        decode(&saved.bytes).map_err(|e| self.inner.data_err("committed log id", e))
                    })
                    .transpose()
            }
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded: Vec<(u64, Arc<Vec<u8>>)> = Vec::new();
        for entry in entries {
            let index = entry.index();
            if let Some((prev, _)) = encoded.last()
                && index != prev + 1
            {
                let err = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "raft log store {}: append: entries are not consecutive: index {index} \
                         follows index {prev}",
                        self.inner.path.display()
                    ),
                );
                return Err(report_to_callback(callback, err));
            }
            match encode(&entry, format_args!("log entry {index}")) {
                Ok(bytes) => encoded.push((index, Arc::new(bytes))),
                Err(err) => return Err(report_to_callback(callback, err)),
            }
        }

        if encoded.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }

        // Readable from now on; on disk when the writer calls back (see the module docs).
        self.inner.add_pending(&encoded);
        if let (Some((first, _)), Some((last, _))) = (encoded.first(), encoded.last()) {
            self.inner.record(*first, *last, Stage::Appended);
        }
        // The negative control puts back the bug of acknowledging before the disk has it.
        #[cfg(feature = "negative-controls")]
        let callback = if crate::negative::active(crate::negative::Control::AckBeforeFsync) {
            callback.io_completed(Ok(()));
            IOFlushed::noop()
        } else {
            callback
        };
        let op = Op::Append {
            entries: encoded,
            flushed: callback,
        };
        match self.submit(op) {
            Ok(()) => Ok(()),
            Err((op, err)) => {
                let message = err.to_string();
                op.complete(&self.inner, Err(err));
                Err(io::Error::other(message))
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Keep entries up to and including `last_log_id`; `None` empties the log.
        let since = last_log_id.map_or(0, |log_id| log_id.index + 1);
        self.write_and_wait(|done| Op::Truncate { since, done })
            .await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.write_and_wait(|done| Op::Purge { log_id, done }).await
    }
}

/// Runs `f` on tokio's blocking pool (see "Blocking" in the module docs) and waits for it.
async fn run_blocking<T, F>(inner: &Arc<Inner>, f: F) -> Result<T, io::Error>
where
    F: FnOnce(&Inner) -> Result<T, io::Error> + Send + 'static,
    T: Send + 'static,
{
    let inner = inner.clone();
    let path = inner.path.clone();
    match tokio::task::spawn_blocking(move || f(&inner)).await {
        Ok(res) => res,
        Err(join_err) => Err(io::Error::other(format!(
            "raft log store {}: storage task failed: {join_err}",
            path.display()
        ))),
    }
}

async fn read_entries<C>(
    inner: &Arc<Inner>,
    bounds: Option<(u64, u64)>,
    max_bytes: Option<usize>,
) -> Result<Vec<C::Entry>, io::Error>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let Some((first, last)) = bounds else {
        return Ok(Vec::new());
    };
    if let Some(entries) = inner.read_pending_only::<C>(first, last, max_bytes)? {
        return Ok(entries);
    }
    run_blocking(inner, move |inner| {
        inner.read_entries::<C>(first, last, max_bytes)
    })
    .await
}

impl Inner {
    fn log_state<C>(&self) -> Result<LogState<C>, io::Error>
    where
        C: RaftTypeConfig,
        C::Entry: DeserializeOwned,
        LogIdOf<C>: DeserializeOwned,
    {
        // Pending before the index, as in `read_entries`.
        let last_pending = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.last_key_value().map(|(i, b)| (*i, b.clone()))
        };
        let (last_stored, purged) = {
            let log = self.log();
            (log.last_loc(), log.meta.last_purged.clone())
        };
        let last_purged_log_id: Option<LogIdOf<C>> = match purged {
            Some(purged) => {
                Some(decode(&purged.bytes).map_err(|e| self.data_err("last purged log id", e))?)
            }
            None => None,
        };
        let last_entry_log_id = match last_stored {
            Some((index, loc)) => Some(
                self.decode_entry::<C>(index, &self.read_at(&loc)?)?
                    .log_id(),
            ),
            None => None,
        };

        // An entry handed to the writer is part of the log already.
        let last_pending_log_id = match last_pending {
            Some((index, bytes)) => Some(self.decode_entry::<C>(index, &bytes)?.log_id()),
            None => None,
        };
        let last_log_id = match (last_pending_log_id, last_entry_log_id) {
            (Some(pending), Some(stored)) if stored.index > pending.index => Some(stored),
            (Some(pending), _) => Some(pending),
            (None, Some(stored)) => Some(stored),
            (None, None) => last_purged_log_id.clone(),
        };

        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Reads the entries in `first..=last`, failing on a hole. With `max_bytes`, stops once the
    /// entries read so far add up to at least that many encoded bytes (always returning at least
    /// one entry if any is present).
    fn read_entries<C>(
        &self,
        first: u64,
        last: u64,
        max_bytes: Option<usize>,
    ) -> Result<Vec<C::Entry>, io::Error>
    where
        C: RaftTypeConfig,
        C::Entry: DeserializeOwned,
    {
        let op = || format!("read log entries {first}..={last}");
        // Pending entries first: one that leaves `pending` after this is in the index before
        // it leaves, so no entry is missed.
        let pending = self.pending_in(first, last);
        let mut stored = self.log().locs(first, last);
        // With a byte bound, only the entries up to the one that reaches it.
        if let Some(max) = max_bytes {
            let mut bytes = 0;
            let upto = stored.iter().position(|(_, loc)| {
                bytes += loc.len as usize;
                bytes >= max
            });
            stored.truncate(upto.map_or(stored.len(), |i| i + 1));
        }

        let mut read = EntriesRead::<C>::new(max_bytes);
        // Entries written one after the other in one segment are read with one `pread`.
        for run in stored.chunk_by(|(_, a), (_, b)| {
            Arc::ptr_eq(&a.segment, &b.segment)
                && b.offset >= a.offset + u64::from(a.len)
                && b.offset - (a.offset + u64::from(a.len)) <= READ_GAP_MAX_BYTES
        }) {
            let (Some((_, head)), Some((_, tail))) = (run.first(), run.last()) else {
                continue;
            };
            let span = Loc {
                segment: head.segment.clone(),
                offset: head.offset,
                len: u32::try_from(tail.offset + u64::from(tail.len) - head.offset)
                    .map_err(|_| self.error(io::ErrorKind::InvalidData, op()))?,
            };
            let bytes = self.read_at(&span)?;
            for (index, loc) in run {
                let at = (loc.offset - head.offset) as usize;
                if !read.push(self, *index, &bytes[at..at + loc.len as usize], op)? {
                    return Ok(read.entries);
                }
            }
        }
        // Then what is not on disk yet, after what the segments had.
        for (index, bytes) in pending {
            if read.next.is_some_and(|next| index < next) {
                continue;
            }
            if !read.push(self, index, &bytes, op)? {
                break;
            }
        }
        Ok(read.entries)
    }

    /// The entries in `first..=last` (as [`Inner::read_entries`] would return them) when all of
    /// them are still pending and small, decoded right here; `None` sends the read to the
    /// segments on the blocking pool. This is the replication of a fresh entry: taking it from memory saves
    /// the leader a hop to another thread and back for each follower, every round. A pending
    /// entry is never older than the stored one under the same index (a later append replaces it in
    /// `pending`), so the answer is the same.
    fn read_pending_only<C>(
        &self,
        first: u64,
        last: u64,
        max_bytes: Option<usize>,
    ) -> Result<Option<Vec<C::Entry>>, io::Error>
    where
        C: RaftTypeConfig,
        C::Entry: DeserializeOwned,
    {
        let wanted = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut wanted = Vec::new();
            let mut bytes = 0;
            for (index, entry) in pending.range(first..=last) {
                if *index != first + wanted.len() as u64 {
                    return Ok(None);
                }
                bytes += entry.len();
                wanted.push((*index, entry.clone()));
                if max_bytes.is_some_and(|max| bytes >= max) {
                    break;
                }
            }
            let complete = wanted.last().is_some_and(|(i, _)| *i == last)
                || max_bytes.is_some_and(|max| bytes >= max);
            if !complete || bytes > INLINE_READ_MAX_BYTES {
                return Ok(None);
            }
            wanted
        };
        let op = || format!("read log entries {first}..={last}");
        let mut read = EntriesRead::<C>::new(max_bytes);
        for (index, bytes) in wanted {
            if !read.push(self, index, &bytes, op)? {
                break;
            }
        }
        Ok(Some(read.entries))
    }

    /// The encoded entry at `loc`.
    fn read_at(&self, loc: &Loc) -> Result<Vec<u8>, io::Error> {
        let mut bytes = vec![0; loc.len as usize];
        loc.segment
            .file
            .read_exact_at(&mut bytes, loc.offset)
            .map_err(|e| {
                self.error(
                    e.kind(),
                    format!("read {}: {e}", loc.segment.path.display()),
                )
            })?;
        Ok(bytes)
    }

    fn decode_entry<C>(&self, index: u64, raw: &[u8]) -> Result<C::Entry, io::Error>
    where
        C: RaftTypeConfig,
        C::Entry: DeserializeOwned,
    {
        let entry: C::Entry =
            decode(raw).map_err(|e| self.data_err(format_args!("log entry {index}"), e))?;
        if entry.index() != index {
            return Err(self.data_err(
                format_args!("log entry {index}"),
                format!(
                    "stored under index {index} but carries index {}",
                    entry.index()
                ),
            ));
        }
        Ok(entry)
    }

    fn data_err(&self, what: impl fmt::Display, err: impl fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log store {}: corrupt {what}: {err}",
                self.path.display()
            ),
        )
    }
}

/// Entries read so far in one ranged read: checks they are consecutive and stops at the
/// byte limit.
struct EntriesRead<C: RaftTypeConfig> {
    entries: Vec<C::Entry>,
    bytes: usize,
    max_bytes: Option<usize>,
    /// The index the next entry must have.
    next: Option<u64>,
}

impl<C> EntriesRead<C>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    fn new(max_bytes: Option<usize>) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            max_bytes,
            next: None,
        }
    }

    /// Adds one entry; `false` once the byte limit is reached.
    fn push(
        &mut self,
        inner: &Inner,
        index: u64,
        raw: &[u8],
        op: impl Fn() -> String,
    ) -> Result<bool, io::Error> {
        if let Some(next) = self.next
            && index != next
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "raft log store {}: {}: hole in the log: index {index} follows index {}",
                    inner.path.display(),
                    op(),
                    next - 1
                ),
            ));
        }
        self.entries.push(inner.decode_entry::<C>(index, raw)?);
        self.bytes += raw.len();
        self.next = Some(index + 1);
        Ok(self.max_bytes.is_none_or(|max| self.bytes < max))
    }
}

/// Converts any range of log indexes to `Some((first, last))`, inclusive, or `None` if it is
/// empty (e.g. `3..3`).
fn inclusive_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, u64)> {
    let first = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let last = match range.end_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (first <= last).then_some((first, last))
}

fn encode<T: Serialize + ?Sized>(value: &T, what: impl fmt::Display) -> Result<Vec<u8>, io::Error> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raft log store: cannot encode {what}: {e}"),
        )
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        ));
    }
    Ok(value)
}

/// Reports a failed append to openraft through the callback too, and hands the error back.
fn report_to_callback<C: RaftTypeConfig>(callback: IOFlushed<C>, err: io::Error) -> io::Error {
    callback.io_completed(Err(io::Error::new(err.kind(), err.to_string())));
    err
}

mod index;
mod legacy;
mod open;
mod segment;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
