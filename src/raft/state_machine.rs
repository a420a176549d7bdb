//! openraft's `RaftStateMachine` over the pure [`Machine`] and its DuckDB [`Store`].
//!
//! One `apply` call from openraft becomes one DuckDB transaction: every entry of the call is
//! applied to the in-memory machine, the changed rows plus `last_applied` and the membership
//! are committed together, and only then are the responders answered. A storage error is
//! returned to openraft as an `io::Error`, which stops the node: skipping an entry would
//! make this replica diverge. After a crash the node resumes from the `last_applied` found
//! in DuckDB and openraft replays the rest of the log.
//!
//! DuckDB's connection is not `Sync` and its calls block, so the store lives behind a
//! `std::sync::Mutex` (never held across an `.await`) and every DuckDB call runs on a
//! blocking thread. Snapshots are built from a cloned connection inside one read
//! transaction, so building one does not hold up `apply`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use crate::state::machine::{Machine, Reply};
use crate::state::store::{DbSettings, RaftMeta, SnapshotImage, Store};

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

/// Snapshot bytes: a bincode-encoded [`SnapshotImage`].
pub type SnapshotData = Vec<u8>;

struct Inner {
    store: Store,
    machine: Machine,
    last_applied: Option<LogId>,
    membership: Membership,
}

/// The state machine of one node. Cheap to clone: clones share the same store.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    /// Where the current snapshot is kept; `None` keeps it in memory only (tests).
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

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the store half-written (DuckDB rolls
    // the transaction back), so a poisoned lock is still usable.
    inner.lock().unwrap_or_else(|e| e.into_inner())
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

impl StateMachine {
    /// Opens the DuckDB file at `db_path`; the current snapshot is kept in `snapshot_dir`.
    pub fn open(db_path: &Path, snapshot_dir: &Path, settings: &DbSettings) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create snapshot directory {}: {e}",
                    snapshot_dir.display()
                ),
            )
        })?;
        let store = Store::open(db_path, settings)?;
        let sm = Self::from_store(store, Some(snapshot_dir.to_path_buf()))?;
        let file = snapshot_dir.join("current.snapshot");
        if file.exists() {
            let bytes = std::fs::read(&file)?;
            match bincode::serde::decode_from_slice::<StoredSnapshot, _>(&bytes, bincode_config()) {
                Ok((stored, _)) => {
                    *sm.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored)
                }
                Err(e) => tracing::warn!(
                    file = %file.display(),
                    "ignoring an unreadable snapshot file ({e}); a new one will be built"
                ),
            }
        }
        Ok(sm)
    }

    /// A state machine on an in-memory database (tests, tools).
    pub fn in_memory() -> io::Result<Self> {
        Self::from_store(Store::open_in_memory()?, None)
    }

    fn from_store(store: Store, snapshot_dir: Option<PathBuf>) -> io::Result<Self> {
        let (last_applied, membership) = match store.read_meta()? {
            Some(meta) => parse_meta(&meta)?,
            None => (None, Membership::default()),
        };
        let machine = store.load_machine()?;
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                store,
                machine,
                last_applied,
                membership,
            })),
            snapshot_dir,
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// A new connection to this node's database, for read-only queries.
    pub fn reader(&self) -> io::Result<duckdb::Connection> {
        Ok(lock(&self.inner).store.reader()?)
    }

    /// Runs `f` with the in-memory view (e.g. to rebuild leader soft state).
    pub fn with_machine<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        f(&lock(&self.inner).machine)
    }

    /// The last applied log index (as committed to DuckDB).
    pub fn last_applied_index(&self) -> Option<u64> {
        lock(&self.inner).last_applied.as_ref().map(|l| l.index)
    }

    fn save_current(&self, stored: StoredSnapshot) -> io::Result<()> {
        if let Some(dir) = &self.snapshot_dir {
            let bytes = bincode::serde::encode_to_vec(&stored, bincode_config())
                .map_err(io::Error::other)?;
            write_atomically(&dir.join("current.snapshot"), &bytes)?;
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
        Ok(())
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
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

impl Inner {
    /// Applies a batch of entries and commits them in one transaction.
    fn apply_batch(
        &mut self,
        entries: Vec<(
            LogId,
            EntryPayload<crate::state::command::Command, u64, openraft::BasicNode>,
        )>,
    ) -> io::Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(entries.len());
        let mut last_applied = self.last_applied.clone();
        let mut membership = self.membership.clone();
        for (log_id, payload) in entries {
            let reply = match payload {
                EntryPayload::Blank => Reply::Applied,
                EntryPayload::Normal(command) => self.machine.apply_entry(log_id.index, command),
                EntryPayload::Membership(m) => {
                    membership = Membership::new(Some(log_id.clone()), m);
                    Reply::Applied
                }
            };
            replies.push(reply);
            last_applied = Some(log_id);
        }
        let changes = self.machine.take_changes();
        let meta = meta_of(&last_applied, &membership)?;
        self.store.commit(&self.machine, &changes, &meta)?;
        self.last_applied = last_applied;
        self.membership = membership;
        Ok(replies)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, Membership)> {
        let inner = lock(&self.inner);
        Ok((inner.last_applied.clone(), inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push((entry.log_id, entry.payload));
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let replies = blocking(move || lock(&inner).apply_batch(batch)).await?;
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
        let inner = self.inner.clone();
        let meta_owned = meta.clone();
        blocking(move || {
            let mut inner = lock(&inner);
            if inner.last_applied.as_ref() >= meta_owned.last_log_id.as_ref()
                && inner.last_applied.is_some()
            {
                // Never roll state back: this node already holds everything the snapshot has.
                return Ok(());
            }
            let raft_meta = meta_of(&meta_owned.last_log_id, &meta_owned.last_membership)?;
            inner.store.install(&image, &raft_meta)?;
            inner.machine = inner.store.load_machine()?;
            inner.last_applied = meta_owned.last_log_id.clone();
            inner.membership = meta_owned.last_membership.clone();
            Ok(())
        })
        .await?;
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
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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
            let reader = sm.reader()?;
            let (image, meta) = crate::state::store::dump_with(&reader)?;
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
