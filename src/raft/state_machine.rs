//! openraft's `RaftStateMachine` over the pure [`Machine`] and its DuckDB [`Store`].
//!
//! # Apply in memory, materialise by group commit
//!
//! `apply` runs every entry of the call through the in-memory [`Machine`], answers the
//! responders, and hands the changed keys to a **flusher thread**, which writes the changed
//! rows together with `last_applied` and the membership to DuckDB in one transaction. While
//! one flush runs, further applies accumulate, so the next flush takes all of them: one
//! DuckDB commit (and fsync) covers as many entries as arrived meanwhile. (A minimum interval
//! between flushes was measured and made commits slower here, see BENCHMARKS.md.)
//!
//! The first design committed DuckDB inside every `apply` call. Measured: openraft hands the
//! state machine one or two entries per call, so each command paid a full DuckDB commit and
//! the state machine thread became the bottleneck (see BENCHMARKS.md). Group commit is safe
//! under these rules (ARCHITECTURE.md § Materialisation), which this module keeps:
//!
//! * An acknowledged command is durable: it is in the fsynced Raft log of a majority before
//!   openraft lets `apply` see it. DuckDB may lag by one flush.
//! * [`RaftStateMachine::applied_state`] reports what DuckDB holds (it flushes first), and a
//!   snapshot is read from DuckDB, so openraft never purges the log beyond what DuckDB has:
//!   after a crash the node restarts from DuckDB's `last_applied` and openraft replays the
//!   rest of the log.
//! * A storage error in the flusher is sticky: the next `apply` returns it and openraft
//!   stops the node. Skipping an entry would make this replica diverge.
//! * State and the snapshot file only move forward. A snapshot older than what the state
//!   holds is not installed, and one older than the snapshot file does not replace it (the log
//!   may already be purged up to that file). An entry at or below `last_applied`, which
//!   openraft replays after such an install, is not applied again.
//!
//! # Replica checks
//!
//! A `CheckReplicas` entry is a marker: when `apply` meets one, everything applied up to and
//! including it is flushed at once (before later entries of the same call are applied), a
//! read transaction is pinned at exactly that state while the store is held, and the
//! tables are digested from it on a background thread ([`super::replica_check`]). The
//! digest is of DuckDB, not of the in-memory view: the check is there to catch a database
//! that differs from what the log says, e.g. a file altered behind the node's back.
//!
//! Rows for a flush are copied from the machine under its lock (memory only), then written
//! without it, so DuckDB latency never blocks `apply`. Snapshots are read from a cloned
//! connection in one read transaction, so building one does not block either.
//!
//! A database that is damaged when it is opened (it does not open, or its rows do not load) is
//! reported as [`OpenError::Damaged`]: [`crate::raft::heal`] sets it aside and the state is
//! rebuilt from the snapshot and the log.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use super::replica_check::{self, Answer, CheckResults};
use super::stages::{Stage, StageClock};
use crate::state::command::Command;
use crate::state::error::StoreError;
use crate::state::machine::{Changes, Event, Machine, Reply};
use crate::state::rows::RowBatch;
use crate::state::store::{DbSettings, RaftMeta, SnapshotImage, Store, dump_with};

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

/// The shortest time between two flushes of applied entries to DuckDB.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How long the flusher waits with nothing applied before it checkpoints DuckDB, if at least
/// [`CHECKPOINT_AT_REST_ROWS`] rows were written since the last checkpoint: DuckDB then
/// releases the rows it held in memory (see the flusher).
pub const REST_BEFORE_CHECKPOINT: Duration = Duration::from_secs(1);

/// The fewest rows written since the last checkpoint for one at rest to be worth it.
pub const CHECKPOINT_AT_REST_ROWS: usize = 1_000;

/// Events buffered for slow subscribers before they must rebuild.
pub const EVENT_BUFFER: usize = 1 << 16;

/// Snapshot bytes: a bincode-encoded [`SnapshotImage`].
pub type SnapshotData = Vec<u8>;

/// What `apply` has done in memory and the flusher has not written yet.
struct Memory {
    machine: Machine,
    /// Applied in memory (ahead of DuckDB by at most the pending changes).
    last_applied: Option<LogId>,
    membership: Membership,
    pending: Changes,
    /// `last_applied` moved since the last flush (blank and membership entries change no row).
    meta_dirty: bool,
    /// What DuckDB holds.
    durable: Option<LogId>,
    /// A storage failure of the flusher; once set, the node must stop.
    failed: Option<String>,
    shutdown: bool,
}

struct Shared {
    memory: Mutex<Memory>,
    /// Wakes the flusher when something is pending, and waiters when a flush finished.
    signal: Condvar,
    /// The DuckDB side; holding it serialises flushes, installs and reader creation.
    store: Mutex<Store>,
    /// Results of replica checks (lock order: `memory`, then `checks`).
    checks: Arc<Mutex<CheckResults>>,
    /// Where applies are timed (`--stage-clock`), once set.
    stages: std::sync::OnceLock<Arc<StageClock>>,
}

/// Stops and joins the flusher (after a last flush) when the last handle is dropped.
struct FlusherGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        lock(&self.shared.memory).shutdown = true;
        self.shared.signal.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The state machine of one node. Cheap to clone: clones share the same store.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
    /// What each apply did, for the leader's soft state (see [`StateMachine::subscribe`]).
    events: tokio::sync::broadcast::Sender<Event>,
    _flusher: Arc<FlusherGuard>,
    /// Where the current snapshot is kept; `None` keeps it in memory only.
    snapshot_dir: Option<PathBuf>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

/// A built or installed snapshot, as kept on disk.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: SnapshotData,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Locks a mutex; a panic elsewhere cannot leave DuckDB half-written (its transaction
/// rolls back), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("state machine task failed: {e}")))?
}

fn meta_of(last_applied: &Option<LogId>, membership: &Membership) -> io::Result<RaftMeta> {
    Ok(RaftMeta {
        last_applied_index: last_applied.as_ref().map(|l| l.index),
        last_applied_json: last_applied
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(io::Error::other)?,
        membership_json: serde_json::to_string(membership).map_err(io::Error::other)?,
    })
}

fn parse_meta(meta: &RaftMeta) -> io::Result<(Option<LogId>, Membership)> {
    let last_applied = meta
        .last_applied_json
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| io::Error::other(format!("raft_meta.last_applied is corrupt: {e}")))?;
    let membership = serde_json::from_str(&meta.membership_json)
        .map_err(|e| io::Error::other(format!("raft_meta.membership is corrupt: {e}")))?;
    Ok((last_applied, membership))
}

/// Gives the calling thread a lower CPU priority (nice +10). Flushing is background work: its
/// bursts of DuckDB CPU must not delay Raft, gRPC and dispatch on the same cores, which carry
/// every client's latency. A failure (e.g. no permission) leaves the priority as it was.
pub(super) fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls; on Linux `PRIO_PROCESS` with a thread id sets the
        // priority of that one thread.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
        };
        if result != 0 {
            tracing::debug!(
                "cannot lower the DuckDB flusher's priority: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl Shared {
    /// Writes everything pending to DuckDB in one transaction. Returns whether anything was
    /// written.
    fn flush(&self) -> io::Result<bool> {
        let mut store = lock(&self.store);
        self.flush_with(&mut store)
    }

    /// [`Shared::flush`] with the store already locked.
    fn flush_with(&self, store: &mut Store) -> io::Result<bool> {
        let (batch, meta, last_applied) = {
            let mut memory = lock(&self.memory);
            if let Some(e) = &memory.failed {
                return Err(io::Error::other(e.clone()));
            }
            if memory.pending.is_empty() && !memory.meta_dirty {
                return Ok(false);
            }
            let changes = std::mem::take(&mut memory.pending);
            memory.meta_dirty = false;
            let batch = RowBatch::collect(&memory.machine, &changes);
            let meta = meta_of(&memory.last_applied, &memory.membership)?;
            (batch, meta, memory.last_applied)
        };
        let result = store.write(batch, &meta);
        let mut memory = lock(&self.memory);
        match result {
            Ok(()) => {
                memory.durable = last_applied;
                drop(memory);
                self.signal.notify_all();
                Ok(true)
            }
            Err(e) => {
                let message = format!("writing applied entries to DuckDB failed: {e}");
                tracing::error!("{message}; this node must stop");
                memory.failed = Some(message.clone());
                drop(memory);
                self.signal.notify_all();
                Err(io::Error::other(message))
            }
        }
    }

    /// Makes the replica check `id`, whose marker was just applied at `log_index`, see
    /// exactly that state: writes everything applied (up to the marker: apply is waiting for
    /// this) to DuckDB, pins a read transaction there before the store is let go (so no later
    /// flush slips in), and leaves the digesting to a background thread. A failed flush is
    /// the node's sticky storage failure; a failed read only fails this check.
    fn pin_check(&self, id: &str, log_index: u64) -> io::Result<()> {
        let mut store = lock(&self.store);
        self.flush_with(&mut store)?;
        let pinned = store.pin_read();
        drop(store);
        match pinned {
            Ok(pinned) => replica_check::spawn_digest(pinned, log_index, self.checks.clone()),
            Err(e) => {
                tracing::warn!(check = id, "cannot pin a read for the replica check: {e}");
                replica_check::lock(&self.checks)
                    .finish(log_index, Err(format!("cannot read the database: {e}")));
            }
        }
        Ok(())
    }

    /// Checkpoints DuckDB once nothing has been applied for [`REST_BEFORE_CHECKPOINT`], if at
    /// least [`CHECKPOINT_AT_REST_ROWS`] rows were written since the last checkpoint; then
    /// returns the freed memory to the system.
    ///
    /// Until a checkpoint, DuckDB keeps every row written since the last one in memory
    /// (`IN_MEMORY_TABLE`: about 7 MiB for the first 10,000 tasks, 256 KiB blocks per column)
    /// and checkpoints on its own only when its WAL reaches 16 MiB. A queue that has stopped
    /// growing (a suite submitted, waiting for workers) is where that memory is held longest
    /// for nothing. Under a steady load the flusher is never idle this long, so this costs
    /// nothing there. A failed checkpoint is logged and left: every row is already committed
    /// in the WAL, and DuckDB checkpoints at its threshold anyway.
    fn checkpoint_at_rest(&self) {
        let mut store = lock(&self.store);
        if store.unchecked_rows() < CHECKPOINT_AT_REST_ROWS {
            return;
        }
        let started = std::time::Instant::now();
        match store.checkpoint() {
            Ok(()) => {
                crate::state::store::release_free_memory();
                tracing::debug!(took = ?started.elapsed(), "checkpointed DuckDB at rest");
            }
            Err(e) => tracing::warn!("a checkpoint at rest failed (left to DuckDB): {e}"),
        }
    }

    /// The flusher thread: flush whenever something is pending; at shutdown, flush what is
    /// left and stop. A failed flush stops it (the failure is sticky, see `failed`).
    fn run_flusher(self: Arc<Self>) {
        lower_this_threads_priority();
        let mut last_flush = std::time::Instant::now();
        loop {
            // At most one DuckDB transaction per FLUSH_EVERY: each costs milliseconds of CPU
            // whatever it holds, which a light load would otherwise pay for every single entry
            // on every node. 250 ms measured best (BENCHMARKS.md): at 50 ms the fixed cost of
            // each transaction took a third of a leader's CPU at 250 tasks/s; at 1 s the bursts
            // of one big transaction showed in the p99 of dispatch.
            let since = last_flush.elapsed();
            if since < FLUSH_EVERY {
                std::thread::sleep(FLUSH_EVERY - since);
            }
            let shutdown = loop {
                let memory = lock(&self.memory);
                let idle = |m: &Memory| m.pending.is_empty() && !m.meta_dirty && !m.shutdown;
                if !idle(&memory) {
                    break memory.shutdown;
                }
                let (memory, waited) = self
                    .signal
                    .wait_timeout(memory, REST_BEFORE_CHECKPOINT)
                    .unwrap_or_else(|e| e.into_inner());
                let at_rest = waited.timed_out() && idle(&memory);
                drop(memory);
                if at_rest {
                    self.checkpoint_at_rest();
                }
            };
            last_flush = std::time::Instant::now();
            if self.flush().is_err() || shutdown {
                return;
            }
        }
    }
}

/// Why [`StateMachine::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The DuckDB file (or its WAL) is damaged: it does not open, or its rows do not load.
    /// It can be set aside and the state rebuilt from the snapshot and the Raft log
    /// (see [`crate::raft::heal`]).
    #[error("the state database {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// Anything else (the disk, a lock, the snapshot directory): nothing to heal.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Io(e) => e,
            damaged => io::Error::new(io::ErrorKind::InvalidData, damaged.to_string()),
        }
    }
}

/// What a database holds at open: applied log id, membership, and the machine.
type Loaded = (Option<LogId>, Membership, Machine);

/// Reads what `store` has applied and rebuilds the machine from its tables.
fn load(store: &Store) -> Result<Loaded, StoreError> {
    let (last_applied, membership) = match store.read_meta()? {
        Some(meta) => parse_meta(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        None => (None, Membership::default()),
    };
    Ok((last_applied, membership, store.load_machine()?))
}

/// The snapshot kept in `snapshot_dir`, if there is a readable one (an unreadable one is
/// ignored with a warning: a new one will be built).
fn read_snapshot_file(snapshot_dir: &Path) -> io::Result<Option<StoredSnapshot>> {
    let file = snapshot_dir.join("current.snapshot");
    if !file.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&file)?;
    match bincode::serde::decode_from_slice::<StoredSnapshot, _>(&bytes, bincode_config()) {
        Ok((stored, _)) => Ok(Some(stored)),
        Err(e) => {
            tracing::warn!(
                file = %file.display(),
                "ignoring an unreadable snapshot file ({e}); a new one will be built"
            );
            Ok(None)
        }
    }
}

/// What a snapshot file (`current.snapshot`, or a backup of one) covers.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotFileMeta {
    /// The last log index and term it covers (0 for a snapshot of nothing).
    pub index: u64,
    pub term: u64,
    /// The node that led that term (0 for a snapshot of nothing).
    pub leader: u64,
    /// The membership it carries: each member's id and address, and whether it votes.
    pub members: Vec<(u64, String, bool)>,
}

/// Reads what a snapshot file's bytes cover; an error says why they are not a snapshot.
pub fn snapshot_file_meta(bytes: &[u8]) -> Result<SnapshotFileMeta, String> {
    let (stored, _) =
        bincode::serde::decode_from_slice::<StoredSnapshot, _>(bytes, bincode_config())
            .map_err(|e| format!("not a Testfleet snapshot ({e})"))?;
    let membership = stored.meta.last_membership.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    Ok(SnapshotFileMeta {
        index: stored.meta.last_log_id.map_or(0, |l| l.index),
        term: stored.meta.last_log_id.map_or(0, |l| l.leader_id.term),
        leader: stored.meta.last_log_id.map_or(0, |l| l.leader_id.node_id),
        members: membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect(),
    })
}

/// The last log index the snapshot kept in `snapshot_dir` covers: `None` without a readable
/// snapshot (or for a snapshot of nothing).
pub fn saved_snapshot_index(snapshot_dir: &Path) -> io::Result<Option<u64>> {
    Ok(read_snapshot_file(snapshot_dir)?
        .and_then(|s| s.meta.last_log_id)
        .map(|l| l.index))
}

impl StateMachine {
    /// Opens the DuckDB file at `db_path`; the current snapshot is kept in `snapshot_dir`.
    /// A file that is damaged fails with [`OpenError::Damaged`] (see [`StoreError::is_damage`]).
    pub fn open(
        db_path: &Path,
        snapshot_dir: &Path,
        settings: &DbSettings,
    ) -> Result<Self, OpenError> {
        std::fs::create_dir_all(snapshot_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create snapshot directory {}: {e}",
                    snapshot_dir.display()
                ),
            )
        })?;
        let damaged = |e: StoreError| {
            if e.is_damage() {
                OpenError::Damaged {
                    path: db_path.to_path_buf(),
                    reason: e.to_string(),
                }
            } else {
                OpenError::Io(e.into())
            }
        };
        let store = Store::open(db_path, settings).map_err(damaged)?;
        let loaded = load(&store).map_err(damaged)?;
        let sm = Self::from_store(store, loaded, Some(snapshot_dir.to_path_buf()))?;
        *lock(&sm.current) = read_snapshot_file(snapshot_dir)?;
        Ok(sm)
    }

    /// Times this state machine's applies on `clock` (a second call is ignored).
    pub fn set_stage_clock(&self, clock: Arc<StageClock>) {
        let _ = self.shared.stages.set(clock);
    }

    /// A state machine on an in-memory database (tests, tools).
    pub fn in_memory() -> io::Result<Self> {
        let store = Store::open_in_memory()?;
        let loaded = load(&store)?;
        Self::from_store(store, loaded, None)
    }

    fn from_store(
        store: Store,
        (last_applied, membership, machine): Loaded,
        snapshot_dir: Option<PathBuf>,
    ) -> io::Result<Self> {
        let checks = CheckResults::starting_at(last_applied.as_ref().map(|l| l.index));
        let shared = Arc::new(Shared {
            memory: Mutex::new(Memory {
                machine,
                durable: last_applied,
                last_applied,
                membership,
                pending: Changes::default(),
                meta_dirty: false,
                failed: None,
                shutdown: false,
            }),
            signal: Condvar::new(),
            store: Mutex::new(store),
            checks: Arc::new(Mutex::new(checks)),
            stages: std::sync::OnceLock::new(),
        });
        let flusher_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("duckdb-flusher".to_string())
            .spawn(move || flusher_shared.run_flusher())?;
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
        Ok(StateMachine {
            events,
            _flusher: Arc::new(FlusherGuard {
                shared: shared.clone(),
                thread: Some(thread),
            }),
            shared,
            snapshot_dir,
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// A new connection to this node's database, for read-only queries. It sees what has
    /// been flushed; call [`StateMachine::flush`] first to include everything applied.
    pub fn reader(&self) -> io::Result<duckdb::Connection> {
        Ok(lock(&self.shared.store).reader()?)
    }

    /// Events of every entry applied from now on. A receiver that falls more than
    /// [`EVENT_BUFFER`] events behind gets `Lagged` and must rebuild from the machine.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Events applied that a subscriber has not received yet (0 when every subscriber has
    /// seen every event; the leader's dispatch loop is the only one).
    pub fn events_in_flight(&self) -> usize {
        self.events.len()
    }

    /// Writes everything applied so far to DuckDB before returning.
    pub fn flush(&self) -> io::Result<()> {
        self.shared.flush().map(|_| ())
    }

    /// Writes everything applied to DuckDB, then checkpoints it (its WAL folded into the file
    /// and truncated), under the store lock that serialises flushes: apply is never blocked
    /// and no flush interleaves with the checkpoint.
    pub fn checkpoint(&self) -> io::Result<()> {
        let mut store = lock(&self.shared.store);
        self.shared.flush_with(&mut store)?;
        Ok(store.checkpoint()?)
    }

    /// Sets DuckDB's `memory_limit` to `bytes`, under the store lock; returns the limit as
    /// DuckDB then reports it.
    pub fn set_memory_limit(&self, bytes: u64) -> io::Result<String> {
        let store = lock(&self.shared.store);
        store.set_memory_limit(bytes)?;
        Ok(store.memory_limit()?)
    }

    /// DuckDB's `memory_limit` as it reports it.
    pub fn memory_limit(&self) -> io::Result<String> {
        Ok(lock(&self.shared.store).memory_limit()?)
    }

    /// Runs `f` with the in-memory view (e.g. to rebuild leader soft state).
    pub fn with_machine<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        f(&lock(&self.shared.memory).machine)
    }

    /// The last log index applied in memory.
    pub fn last_applied_index(&self) -> Option<u64> {
        lock(&self.shared.memory)
            .last_applied
            .as_ref()
            .map(|l| l.index)
    }

    /// What this node can say about the replica check `id` whose marker is at `log_index`.
    pub fn check_answer(&self, id: &str, log_index: u64) -> Answer {
        // Under the memory lock, a marker already applied is already begun in `checks`.
        let memory = lock(&self.shared.memory);
        let applied = memory.last_applied.as_ref().map(|l| l.index);
        replica_check::lock(&self.shared.checks).answer(id, log_index, applied)
    }

    /// The last log index written to DuckDB.
    pub fn durable_index(&self) -> Option<u64> {
        lock(&self.shared.memory).durable.as_ref().map(|l| l.index)
    }

    /// The last log index the current snapshot covers, if there is one.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.snapshot_log_id().map(|l| l.index)
    }

    /// The last log id the current snapshot covers, if there is one.
    fn snapshot_log_id(&self) -> Option<LogId> {
        lock(&self.current)
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
    }

    fn save_current(&self, stored: StoredSnapshot) -> io::Result<()> {
        if let Some(dir) = &self.snapshot_dir {
            let bytes = bincode::serde::encode_to_vec(&stored, bincode_config())
                .map_err(io::Error::other)?;
            let file = dir.join("current.snapshot");
            write_atomically(&file, &bytes).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write the snapshot {}: {e}", file.display()),
                )
            })?;
        }
        *lock(&self.current) = Some(stored);
        Ok(())
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, Membership)> {
        let shared = self.shared.clone();
        blocking(move || {
            shared.flush()?;
            let memory = lock(&shared.memory);
            Ok((memory.durable, memory.membership.clone()))
        })
        .await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut responders = Vec::new();
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push((entry.log_id, entry.payload));
            responders.push(responder);
        }
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let span = (first.0.index, last.0.index);
        let stages = self.shared.stages.get().cloned();
        if let Some(clock) = &stages {
            clock.record(span.0, span.1, Stage::ApplyStarted);
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut entries = batch.into_iter().peekable();
        // Entries are applied in runs that end at a replica-check marker (or at the end of
        // the batch): the check must see the state at its marker, before later entries.
        while entries.peek().is_some() {
            let marker = {
                let mut memory = lock(&self.shared.memory);
                if let Some(e) = &memory.failed {
                    return Err(io::Error::other(e.clone()));
                }
                let mut marker = None;
                for (log_id, payload) in entries.by_ref() {
                    if memory.last_applied.is_some_and(|applied| log_id <= applied) {
                        // Already in the state: openraft replays from the last snapshot it
                        // installed, and an install this node was ahead of kept its state
                        // (`install_snapshot`). Raft's committed entries never change, so
                        // applying one again would only apply it twice.
                        replies.push(Reply::Applied);
                        continue;
                    }
                    let check = match &payload {
                        EntryPayload::Normal(Command::CheckReplicas { id, .. }) => Some(id.clone()),
                        _ => None,
                    };
                    let reply = match payload {
                        EntryPayload::Blank => Reply::Applied,
                        EntryPayload::Normal(command) => {
                            memory.machine.apply_entry(log_id.index, command)
                        }
                        EntryPayload::Membership(m) => {
                            memory.membership = Membership::new(Some(log_id), m);
                            Reply::Applied
                        }
                    };
                    // A marker that apply rejected (outside the limits) checks nothing.
                    let check = check.filter(|_| !reply.is_rejected());
                    replies.push(reply);
                    memory.last_applied = Some(log_id);
                    if let Some(id) = check {
                        replica_check::lock(&self.shared.checks).begin(&id, log_id.index);
                        marker = Some((id, log_id.index));
                        break;
                    }
                }
                let changes = memory.machine.take_changes();
                memory.pending.absorb(changes);
                memory.meta_dirty = true;
                for event in memory.machine.take_events() {
                    // No receiver (a follower) is fine: nobody needs the event.
                    let _ = self.events.send(event);
                }
                marker
            };
            if let Some((id, log_index)) = marker {
                let shared = self.shared.clone();
                blocking(move || shared.pin_check(&id, log_index)).await?;
            }
        }
        self.shared.signal.notify_all();
        if let Some(clock) = &stages {
            clock.record(span.0, span.1, Stage::Applied);
        }
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let (image, _) =
            bincode::serde::decode_from_slice::<SnapshotImage, _>(&snapshot, bincode_config())
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("snapshot is unreadable: {e}"),
                    )
                })?;
        let shared = self.shared.clone();
        let meta_owned = meta.clone();
        blocking(move || {
            let mut store = lock(&shared.store);
            let mut memory = lock(&shared.memory);
            if memory.last_applied.is_some() && memory.last_applied >= meta_owned.last_log_id {
                // Never roll state back: this node already holds everything the snapshot has.
                return Ok(());
            }
            let raft_meta = meta_of(&meta_owned.last_log_id, &meta_owned.last_membership)?;
            store.install(&image, &raft_meta)?;
            memory.machine = store.load_machine()?;
            memory.pending = Changes::default();
            memory.meta_dirty = false;
            memory.last_applied = meta_owned.last_log_id;
            memory.durable = meta_owned.last_log_id;
            memory.membership = meta_owned.last_membership.clone();
            replica_check::lock(&shared.checks)
                .skipped_to(meta_owned.last_log_id.as_ref().map(|l| l.index));
            Ok(())
        })
        .await?;
        if self.snapshot_log_id() >= meta.last_log_id {
            // The snapshot file this node has is as new or newer: keep it. Its log may be
            // purged up to that file's last entry, and openraft refuses to start a node whose
            // log is purged past its snapshot.
            return Ok(());
        }
        let this = self.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        blocking(move || this.save_current(stored)).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<TypeConfig, SnapshotData>>> {
        let current = lock(&self.current).clone();
        Ok(current.map(|s| SnapshotOf::<TypeConfig, SnapshotData> {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}

/// Builds a snapshot from a consistent read of every replicated table.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, SnapshotData>> {
        let sm = self.sm.clone();
        blocking(move || {
            sm.flush()?;
            let reader = sm.reader()?;
            let (image, meta) = dump_with(&reader)?;
            let (last_log_id, last_membership) = match meta {
                Some(meta) => parse_meta(&meta)?,
                None => (None, Membership::default()),
            };
            let data = bincode::serde::encode_to_vec(&image, bincode_config())
                .map_err(io::Error::other)?;
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
            };
            sm.save_current(StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            })?;
            Ok(SnapshotOf::<TypeConfig, SnapshotData> {
                meta,
                snapshot: data,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests;
