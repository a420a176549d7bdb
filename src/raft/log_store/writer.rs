//! The write path of the log store: the writer thread, its queue of [`Op`]s, the group
//! commit of whatever is queued, and the `pending` entries that are readable before they are in
//! redb. The rules are in the parent module's docs ("Writes: one writer thread, group commit").

use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::RaftTypeConfig;
use openraft::storage::IOFlushed;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use redb::Durability;
use redb::ReadableTable;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::{
    ENTRIES, Inner, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LogStore, META, SavedCommitted,
    encode,
};

/// Most writes the writer thread puts in one transaction.
const MAX_BATCH: usize = 256;

/// The writer thread of one store and the queue to it. Dropping the last handle closes the
/// queue, lets the thread finish what is queued, and joins it, so the file is closed (and can
/// be opened again) once the store is gone.
pub(super) struct Writer<C: RaftTypeConfig> {
    queue: Option<mpsc::Sender<Op<C>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<C: RaftTypeConfig> Drop for Writer<C> {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the raft log writer thread panicked");
        }
    }
}

/// One write, queued to the writer thread in the order openraft issued it.
pub(super) enum Op<C: RaftTypeConfig> {
    /// Consecutive encoded entries; `flushed` is called once they are on disk.
    Append {
        entries: Vec<(u64, Arc<Vec<u8>>)>,
        flushed: IOFlushed<C>,
    },
    Vote {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), io::Error>>,
    },
    /// Deletes every entry with index `>= since`.
    Truncate {
        since: u64,
        done: oneshot::Sender<Result<(), io::Error>>,
    },
    Purge {
        log_id: LogIdOf<C>,
        done: oneshot::Sender<Result<(), io::Error>>,
    },
}

impl<C> Writer<C>
where
    C: RaftTypeConfig,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    /// Starts the writer thread of the store `inner`.
    pub(super) fn start(inner: &Arc<Inner>) -> Result<Self, io::Error> {
        let (queue, ops) = mpsc::channel();
        let for_thread = inner.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop::<C>(&for_thread, &ops))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "raft log store {}: cannot start the writer thread: {e}",
                        inner.path.display()
                    ),
                )
            })?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    /// Queues `op` to the writer thread; hands it back if the thread is gone.
    pub(super) fn submit(&self, op: Op<C>) -> Result<(), (Op<C>, io::Error)> {
        let gone = |op| {
            let err = io::Error::other(format!(
                "raft log store {}: the writer thread has stopped",
                self.inner.path.display()
            ));
            (op, err)
        };
        match &self.writer.queue {
            Some(queue) => queue.send(op).map_err(|mpsc::SendError(op)| gone(op)),
            None => Err(gone(op)),
        }
    }

    /// Queues the op built around a reply channel and waits until it is on disk.
    pub(super) async fn write_and_wait(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), io::Error>>) -> Op<C>,
    ) -> Result<(), io::Error> {
        let (done, reply) = oneshot::channel();
        self.submit(op(done)).map_err(|(_, err)| err)?;
        reply.await.unwrap_or_else(|_| {
            Err(io::Error::other(format!(
                "raft log store {}: the writer thread stopped before the write finished",
                self.inner.path.display()
            )))
        })
    }
}

/// The writer thread: takes whatever is queued (up to [`MAX_BATCH`] writes), writes it in one
/// redb transaction, fsynced if any of it must be durable, then answers each write. Runs until
/// every store handle is dropped and the queue is empty.
fn write_loop<C>(inner: &Inner, ops: &mpsc::Receiver<Op<C>>)
where
    C: RaftTypeConfig,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // The negative control's appends were acknowledged when queued: written later (votes
        // and truncations, answered only when written, are not held back).
        #[cfg(feature = "negative-controls")]
        if crate::negative::active(crate::negative::Control::AckBeforeFsync)
            && batch.iter().all(|op| matches!(op, Op::Append { .. }))
        {
            std::thread::sleep(crate::negative::WRITE_DELAY);
        }
        match inner.write_batch(&batch) {
            Ok(()) => batch.into_iter().for_each(|op| op.complete(inner, Ok(()))),
            // One write in the batch was refused (e.g. an append that would leave a hole):
            // nothing of the batch was written. Write them one by one, so only the refused
            // one fails and the others keep their order.
            Err(_) if batch.len() > 1 => {
                for op in batch {
                    let result = inner.write_batch(std::slice::from_ref(&op));
                    op.complete(inner, result);
                }
            }
            Err(err) => {
                if let Some(op) = batch.into_iter().next() {
                    op.complete(inner, Err(err));
                }
            }
        }
    }
    // A clean close: the committed log id saved since the last write goes to disk now.
    if let Err(err) = inner.write_batch::<C>(&[]) {
        tracing::warn!("{err}");
    }
}

impl<C: RaftTypeConfig> Op<C> {
    /// Answers the write; an append leaves the pending entries (written or not).
    pub(super) fn complete(self, inner: &Inner, result: Result<(), io::Error>) {
        match self {
            Op::Append { entries, flushed } => {
                if let (true, Some((first, _)), Some((last, _))) =
                    (result.is_ok(), entries.first(), entries.last())
                {
                    inner.record(*first, *last, super::Stage::Flushed);
                }
                inner.remove_pending(&entries);
                flushed.io_completed(result);
            }
            Op::Vote { done, .. } | Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                let _ = done.send(result);
            }
        }
    }
}

impl Inner {
    /// Writes `ops` in order in one fsynced redb transaction, with the committed log id saved
    /// since the last one (when the entry it names is in the log by then). On an error nothing
    /// of it is written. With no `ops` it writes the committed log id alone, if there is one to
    /// write.
    fn write_batch<C>(&self, ops: &[Op<C>]) -> Result<(), io::Error>
    where
        C: RaftTypeConfig,
        LogIdOf<C>: Serialize + DeserializeOwned,
    {
        let op = "write batch";
        let committed = {
            let slot = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            match (&slot.latest, slot.written) {
                (Some(latest), false) => Some(latest.clone()),
                _ => None,
            }
        };
        if ops.is_empty() && committed.is_none() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| self.redb_err(op, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.redb_err(op, e))?;
        for write in ops {
            match write {
                Op::Append { entries, .. } => self.append_in::<C>(&txn, entries)?,
                Op::Vote { bytes, .. } => {
                    self.put_meta_in(&txn, KEY_VOTE, Some(bytes), "save vote")?
                }
                Op::Truncate { since, .. } => self.truncate_in(&txn, *since)?,
                Op::Purge { log_id, .. } => self.purge_in::<C>(&txn, log_id)?,
            }
        }
        let written = match committed {
            Some(committed) => self.committed_in::<C>(&txn, committed)?,
            None => None,
        };
        if ops.is_empty() && written.is_none() {
            // Nothing to write after all (the entry the committed id names is still queued).
            return Ok(());
        }
        self.commit(txn, op)?;
        if let Some(written) = written {
            let mut slot = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            if slot.latest.as_ref() == Some(&written) {
                slot.written = true;
            }
        }
        Ok(())
    }

    /// Puts the committed log id `committed` in `txn` unless it names an entry the log does
    /// not hold yet (its append is still queued): on disk, a committed id never runs ahead of
    /// the entries. Returns what it wrote.
    fn committed_in<C>(
        &self,
        txn: &redb::WriteTransaction,
        committed: Option<SavedCommitted>,
    ) -> Result<Option<Option<SavedCommitted>>, io::Error>
    where
        C: RaftTypeConfig,
        LogIdOf<C>: DeserializeOwned,
    {
        let op = "save committed log id";
        if let Some(saved) = &committed {
            let table = txn.open_table(ENTRIES).map_err(|e| self.redb_err(op, e))?;
            let tail = match table.last().map_err(|e| self.redb_err(op, e))? {
                Some((key, _)) => Some(key.value()),
                // An empty log ends at its last purged entry.
                None => {
                    let meta = txn.open_table(META).map_err(|e| self.redb_err(op, e))?;
                    self.get_meta::<LogIdOf<C>>(&meta, KEY_LAST_PURGED, op)?
                        .map(|purged| purged.index)
                }
            };
            if tail.is_none_or(|tail| tail < saved.index) {
                return Ok(None);
            }
        }
        let bytes = committed.as_ref().map(|c| c.bytes.as_slice());
        self.put_meta_in(txn, KEY_COMMITTED, bytes, op)?;
        Ok(Some(committed))
    }

    /// Makes entries readable before they are written (see [`Inner::pending`]).
    pub(super) fn add_pending(&self, entries: &[(u64, Arc<Vec<u8>>)]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (index, bytes) in entries {
            pending.insert(*index, bytes.clone());
        }
    }

    /// Forgets pending entries once their append is answered, unless a later append has put
    /// another entry under the same index since.
    fn remove_pending(&self, entries: &[(u64, Arc<Vec<u8>>)]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (index, bytes) in entries {
            if pending.get(index).is_some_and(|p| Arc::ptr_eq(p, bytes)) {
                pending.remove(index);
            }
        }
    }

    /// Drops one pending entry, as if its write had finished (tests only).
    #[cfg(test)]
    pub(super) fn remove_pending_for_test(&self, index: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&index);
    }

    /// The pending entries in `first..=last`, in order.
    pub(super) fn pending_in(&self, first: u64, last: u64) -> Vec<(u64, Arc<Vec<u8>>)> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .range(first..=last)
            .map(|(i, b)| (*i, b.clone()))
            .collect()
    }

    /// Appends encoded consecutive entries, refusing a gap after the current tail (or after
    /// the last purged entry when the log is empty).
    fn append_in<C>(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[(u64, Arc<Vec<u8>>)],
    ) -> Result<(), io::Error>
    where
        C: RaftTypeConfig,
        LogIdOf<C>: DeserializeOwned,
    {
        let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (*first, *last);
        let op = format!("append log entries {first}..={last}");

        let mut table = txn.open_table(ENTRIES).map_err(|e| self.redb_err(&op, e))?;
        let meta = txn.open_table(META).map_err(|e| self.redb_err(&op, e))?;

        let tail = table
            .last()
            .map_err(|e| self.redb_err(&op, e))?
            .map(|(key, _)| key.value());
        let expected_first = match tail {
            Some(tail) => Some(tail + 1),
            None => self
                .get_meta::<LogIdOf<C>>(&meta, KEY_LAST_PURGED, &op)?
                .map(|purged| purged.index + 1),
        };
        if let Some(expected_first) = expected_first
            && first != expected_first
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "raft log store {}: {op}: the next index must be {expected_first} \
                     (last stored index: {tail:?}); refusing to leave a hole or overwrite \
                     without truncate_after",
                    self.path.display()
                ),
            ));
        }

        for (index, bytes) in entries {
            table
                .insert(*index, bytes.as_slice())
                .map_err(|e| self.redb_err(format_args!("{op}: insert entry {index}"), e))?;
        }
        Ok(())
    }

    /// Deletes every entry with index `>= since`.
    fn truncate_in(&self, txn: &redb::WriteTransaction, since: u64) -> Result<(), io::Error> {
        let op = format!("truncate log from index {since} on");
        tracing::debug!(path = %self.path.display(), since, "truncating raft log");
        let mut table = txn.open_table(ENTRIES).map_err(|e| self.redb_err(&op, e))?;
        table
            .retain_in(since.., |_, _| false)
            .map_err(|e| self.redb_err(&op, e))?;
        Ok(())
    }

    /// Records `log_id` as the last purged log id and deletes every entry up to and including
    /// its index, in the same transaction (never a hole). A purge that does not move forward
    /// is a no-op.
    fn purge_in<C>(
        &self,
        txn: &redb::WriteTransaction,
        log_id: &LogIdOf<C>,
    ) -> Result<(), io::Error>
    where
        C: RaftTypeConfig,
        LogIdOf<C>: Serialize + DeserializeOwned,
    {
        let upto = log_id.index;
        let op = format!("purge log up to index {upto}");
        tracing::debug!(path = %self.path.display(), upto, "purging raft log");
        let bytes = encode(log_id, "last purged log id")?;

        let mut meta = txn.open_table(META).map_err(|e| self.redb_err(&op, e))?;
        let current = self.get_meta::<LogIdOf<C>>(&meta, KEY_LAST_PURGED, &op)?;
        if let Some(current) = current
            && current.index >= upto
        {
            return Ok(());
        }

        let mut table = txn.open_table(ENTRIES).map_err(|e| self.redb_err(&op, e))?;
        table
            .retain_in(..=upto, |_, _| false)
            .map_err(|e| self.redb_err(&op, e))?;
        meta.insert(KEY_LAST_PURGED, bytes.as_slice())
            .map_err(|e| self.redb_err(&op, e))?;
        Ok(())
    }

    /// Writes (`Some`) or deletes (`None`) one meta value.
    fn put_meta_in(
        &self,
        txn: &redb::WriteTransaction,
        key: &str,
        value: Option<&[u8]>,
        op: &str,
    ) -> Result<(), io::Error> {
        let mut meta = txn.open_table(META).map_err(|e| self.redb_err(op, e))?;
        match value {
            Some(bytes) => meta.insert(key, bytes).map(drop),
            None => meta.remove(key).map(drop),
        }
        .map_err(|e| self.redb_err(op, e))
    }
}
