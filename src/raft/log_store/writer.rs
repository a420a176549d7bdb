//! The write path of the log store: the writer thread, its queue of [`Op`]s, the group
//! commit of whatever is queued (one write and one `fdatasync` of the segment being written),
//! starting a new segment when one is full and deleting those no longer needed, and the
//! `pending` entries that are readable before they are on disk. The rules are in the parent
//! module's docs ("Writes: one writer thread, group commit").

use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use openraft::RaftTypeConfig;
use openraft::storage::IOFlushed;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::VoteOf;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::index::{Loc, Segment, expected_next, saved};
use super::segment::{self, Meta, Spare};
use super::{FORMAT_VERSION, Inner, LogStore, SLOW_COMMIT, encode};

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
    /// Starts the writer thread of the store `inner`, appending to `active`.
    pub(super) fn start(inner: &Arc<Inner>, mut active: Active) -> Result<Self, io::Error> {
        let (queue, ops) = mpsc::channel();
        let for_thread = inner.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop::<C>(&for_thread, &mut active, &ops))
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

/// The segment the writer appends to, and where its next record goes.
pub(super) struct Active {
    pub segment: Arc<Segment>,
    /// Offset of the next record.
    pub end: u64,
    /// Offset after the header: a segment holding no more than that is never left for a new one.
    pub start: u64,
    /// How far a write that failed may have left bytes after `end` (0: none did). They are
    /// zeroed before the segment is left: only the newest segment may end in an invalid record.
    pub dirty_to: u64,
    /// The next segment, made ahead once this one is half full.
    pub spare: Option<Spare>,
}

/// The writer thread: takes whatever is queued (up to [`MAX_BATCH`] writes), writes it with
/// one write and one `fdatasync`, then answers each write. Runs until every store handle is
/// dropped and the queue is empty.
fn write_loop<C>(inner: &Inner, active: &mut Active, ops: &mpsc::Receiver<Op<C>>)
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
        match inner.write_batch(active, &batch) {
            Ok(()) => batch.into_iter().for_each(|op| op.complete(inner, Ok(()))),
            // One write in the batch was refused (e.g. an append that would leave a hole):
            // nothing of the batch was written. Write them one by one, so only the refused
            // one fails and the others keep their order.
            Err(_) if batch.len() > 1 => {
                for op in batch {
                    let result = inner.write_batch(active, std::slice::from_ref(&op));
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
    if let Err(err) = inner.write_batch::<C>(active, &[]) {
        tracing::warn!("{err}");
    }
    if let Some(spare) = active.spare.take() {
        spare.discard();
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

/// One change a batch makes, in order: an entry written at an offset of the batch's bytes, or
/// a change of a small value.
enum Change {
    Entry { index: u64, at: usize, len: u32 },
    Meta(Meta),
}

/// The log's ends as a batch being planned leaves them, to check each append against.
#[derive(Clone, Copy)]
struct Ends {
    first: Option<u64>,
    last: Option<u64>,
    purged: Option<u64>,
}

impl Ends {
    fn truncate(&mut self, since: u64) {
        if self.last.is_some_and(|last| last >= since) {
            if self.first.is_some_and(|first| first >= since) {
                (self.first, self.last) = (None, None);
            } else {
                self.last = Some(since - 1);
            }
        }
    }

    fn purge(&mut self, upto: u64) {
        self.purged = Some(upto);
        if self.last.is_some_and(|last| last <= upto) {
            (self.first, self.last) = (None, None);
        } else if self.first.is_some_and(|first| first <= upto) {
            self.first = Some(upto + 1);
        }
    }
}

impl Inner {
    /// Writes `ops` in order, with the committed log id saved since the last write (when the
    /// entry it names is in the log by then), as one write and one `fdatasync`, and then
    /// applies them to the in-memory log. A write that would break the log (an append leaving
    /// a hole) fails the batch before anything is written. With no `ops` it writes the committed
    /// log id alone, if there is one to write.
    fn write_batch<C>(&self, active: &mut Active, ops: &[Op<C>]) -> Result<(), io::Error>
    where
        C: RaftTypeConfig,
        LogIdOf<C>: Serialize + DeserializeOwned,
    {
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
        let mut ends = {
            let log = self.log();
            Ends {
                first: log.first_index(),
                last: log.last_index(),
                purged: log.purged_index(),
            }
        };
        let mut bytes = Vec::new();
        let mut changes = Vec::new();
        let meta = |bytes: &mut Vec<u8>, changes: &mut Vec<Change>, meta: Meta| {
            segment::push_meta(bytes, &meta)?;
            changes.push(Change::Meta(meta));
            Ok::<_, io::Error>(())
        };
        for write in ops {
            match write {
                Op::Append { entries, .. } => {
                    self.check_append(&ends, entries)?;
                    for (index, entry) in entries {
                        let at = segment::push_entry(&mut bytes, *index, entry);
                        let len = u32::try_from(entry.len()).map_err(|_| {
                            self.error(
                                io::ErrorKind::InvalidInput,
                                format!("log entry {index} is larger than 4 GiB"),
                            )
                        })?;
                        changes.push(Change::Entry {
                            index: *index,
                            at,
                            len,
                        });
                    }
                    if let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) {
                        ends.first = ends.first.or(Some(*first));
                        ends.last = Some(*last);
                    }
                }
                Op::Vote { bytes: vote, .. } => {
                    meta(&mut bytes, &mut changes, Meta::Vote(vote.clone()))?
                }
                Op::Truncate { since, .. } => {
                    tracing::debug!(path = %self.path.display(), since, "truncating raft log");
                    meta(&mut bytes, &mut changes, Meta::Truncate { since: *since })?;
                    ends.truncate(*since);
                }
                Op::Purge { log_id, .. } => {
                    let upto = log_id.index;
                    // A purge that does not move forward is a no-op.
                    if ends.purged.is_some_and(|purged| purged >= upto) {
                        continue;
                    }
                    tracing::debug!(path = %self.path.display(), upto, "purging raft log");
                    let purged = saved(upto, encode(log_id, "last purged log id")?);
                    meta(&mut bytes, &mut changes, Meta::Purge(purged))?;
                    ends.purge(upto);
                }
            }
        }
        // On disk a committed log id never runs ahead of the entries: held back while the
        // entry it names is still queued.
        let mut written = None;
        if let Some(committed) = committed {
            let tail = ends.last.or(ends.purged);
            let held = committed
                .as_ref()
                .is_some_and(|c| tail.is_none_or(|tail| tail < c.index));
            if !held {
                let value = committed.clone();
                meta(&mut bytes, &mut changes, Meta::Committed(value))?;
                written = Some(committed);
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }

        let size = segment::segment_bytes(active.segment.seq);
        if active.end + bytes.len() as u64 > size && active.end > active.start {
            self.start_segment(active)?;
        }
        let started = Instant::now();
        if let Err(e) = segment::write_durably(&active.segment.file, &bytes, active.end) {
            active.dirty_to = active.dirty_to.max(active.end + bytes.len() as u64);
            return Err(self.error(
                e.kind(),
                format!("write to {}: {e}", active.segment.path.display()),
            ));
        }
        let took = started.elapsed();
        if took >= SLOW_COMMIT {
            tracing::warn!(
                path = %self.path.display(),
                took_ms = took.as_millis() as u64,
                "slow raft log write (disk saturated?)"
            );
        }

        let dead = {
            let mut log = self.log();
            for change in changes {
                match change {
                    Change::Entry { index, at, len } => {
                        let loc = Loc {
                            segment: active.segment.clone(),
                            offset: active.end + at as u64,
                            len,
                        };
                        log.push(index, loc, false)
                            .map_err(|e| self.error(io::ErrorKind::InvalidData, e))?;
                    }
                    Change::Meta(meta) => log.apply(meta),
                }
            }
            log.dead_segments()
        };
        active.end += bytes.len() as u64;
        if active.spare.is_none() && active.end > segment::segment_bytes(active.segment.seq) / 2 {
            active.spare = Some(Spare::prepare(&self.path, active.segment.seq + 1));
        }
        if !dead.is_empty() {
            for segment in &dead {
                if let Err(err) = std::fs::remove_file(&segment.path) {
                    tracing::warn!(
                        path = %segment.path.display(),
                        "cannot delete a raft log segment no longer needed: {err}"
                    );
                }
            }
            // Deleted for good, oldest first: a crash never brings back an older segment
            // while a newer one stays gone, which would read as a missing segment.
            if let Err(err) = segment::sync_dir(&self.path) {
                tracing::warn!(path = %self.path.display(), "cannot fsync the raft log directory: {err}");
            }
        }
        if let Some(written) = written {
            let mut slot = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            if slot.latest.as_ref() == Some(&written) {
                slot.written = true;
            }
        }
        Ok(())
    }

    /// Refuses an append that would leave a hole or overwrite entries without a truncation.
    fn check_append(&self, ends: &Ends, entries: &[(u64, Arc<Vec<u8>>)]) -> Result<(), io::Error> {
        let Some((first, _)) = entries.first() else {
            return Ok(());
        };
        match expected_next(ends.last, ends.purged) {
            Some(expected) if *first != expected => Err(self.error(
                io::ErrorKind::InvalidInput,
                format!(
                    "append log entries from {first}: the next index must be {expected} (last \
                     stored index: {:?}); refusing to leave a hole or overwrite without \
                     truncate_after",
                    ends.last
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Starts the next segment (its header carries the small values as they are now) and
    /// makes it the one appended to.
    pub(super) fn start_segment(&self, active: &mut Active) -> Result<(), io::Error> {
        if active.dirty_to > active.end {
            let zeros = vec![0; (active.dirty_to - active.end) as usize];
            segment::write_durably(&active.segment.file, &zeros, active.end).map_err(|e| {
                self.error(
                    e.kind(),
                    format!("zero the end of {}: {e}", active.segment.path.display()),
                )
            })?;
        }
        let seq = active.segment.seq + 1;
        let meta = self.log().meta.clone();
        let made = match active.spare.take() {
            Some(spare) if spare.seq == seq => spare.install(FORMAT_VERSION, &meta),
            other => {
                if let Some(stale) = other {
                    stale.discard();
                }
                segment::create_segment(&self.path, seq, FORMAT_VERSION, &meta)
            }
        };
        let (file, path, start) =
            made.map_err(|e| self.error(e.kind(), format!("start segment {seq}: {e}")))?;
        let segment = Arc::new(Segment { seq, file, path });
        self.log().segments.push_back(segment.clone());
        *active = Active {
            segment,
            end: start,
            start,
            dirty_to: 0,
            spare: None,
        };
        Ok(())
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
}
