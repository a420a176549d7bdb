//! The state machine's tasks: every task ever submitted, stored by *slot*, found by id
//! through a hash table of slots.
//!
//! Tasks are never removed while a machine lives (a snapshot install builds a new machine),
//! so a slot names one task for good: a job lists its tasks as slots and the pending
//! [`super::Changes`] note changed tasks as slots, with no copy of the id. The index holds
//! only the `u32` slot; its hash and equality read the id from the task itself.
//!
//! The tasks are stored in chunks of [`CHUNK`] that never move once allocated, rather than in
//! one `Vec`: growing one vector of a million tasks would copy it each time it doubles and
//! hold both copies meanwhile, and freeing the old copy (tens of MiB) raises glibc's mmap
//! threshold, after which large buffers elsewhere come from the heap and stay resident.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::Task;

/// Tasks per chunk of storage.
pub const CHUNK: usize = 4096;

/// Every task of a machine, by slot and by id.
#[derive(Clone, Default)]
pub struct Tasks {
    /// Full chunks of [`CHUNK`] tasks, then the last one (each allocated at its full size).
    chunks: Vec<Vec<Task>>,
    len: usize,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Tasks {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every task, in slot order (the order they were added).
    pub fn values(&self) -> impl Iterator<Item = &Task> + '_ {
        self.chunks.iter().flatten()
    }

    /// The slot of the task with this id.
    pub fn slot(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&slot| self.at(slot).is_some_and(|t| t.id() == id))
            .copied()
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.at(self.slot(id)?)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.slot(id).is_some()
    }

    /// The task in `slot`.
    pub fn at(&self, slot: u32) -> Option<&Task> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    fn at_mut(&mut self, slot: u32) -> Option<&mut Task> {
        let slot = slot as usize;
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        let slot = self.slot(id)?;
        self.at_mut(slot)
    }

    /// Adds a task and returns its slot; a task with the same id is replaced in its slot.
    pub(super) fn insert(&mut self, task: Task) -> u32 {
        if let Some(slot) = self.slot(task.id())
            && let Some(old) = self.at_mut(slot)
        {
            *old = task;
            return slot;
        }
        let slot = u32::try_from(self.len).unwrap_or(u32::MAX);
        let hash = self.hasher.hash_one(task.id());
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(task);
        }
        self.len += 1;
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            let s = s as usize;
            hasher.hash_one(chunks[s / CHUNK][s % CHUNK].id())
        });
        slot
    }
}

/// Equal when they hold the same tasks by id, whatever their slots.
impl PartialEq for Tasks {
    fn eq(&self, other: &Tasks) -> bool {
        self.len() == other.len() && self.values().all(|t| other.get(t.id()) == Some(t))
    }
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values().map(|t| (t.id(), t)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::command::{TaskSpec, TaskStatus, Timestamp};
    use crate::state::machine::StoredSpec;

    fn task(id: &str, seq: i64) -> Task {
        let spec = StoredSpec::new(&TaskSpec::new(id, "n", vec!["true".into()]));
        Task::queued(spec, Arc::from("j"), seq, Timestamp(1))
    }

    #[test]
    fn a_task_record_is_136_bytes() {
        // Kept for every task ever submitted: a field that widens it costs per task.
        assert_eq!(std::mem::size_of::<Task>(), 136);
    }

    #[test]
    fn slots_span_chunks_and_ids_find_them() {
        let mut tasks = Tasks::default();
        let n = 2 * CHUNK + 5;
        for i in 0..n {
            assert_eq!(tasks.insert(task(&format!("t{i}"), i as i64)), i as u32);
        }
        assert_eq!(tasks.len(), n);
        assert_eq!(tasks.chunks.len(), 3);
        for i in [0, CHUNK - 1, CHUNK, 2 * CHUNK + 4] {
            let id = format!("t{i}");
            assert_eq!(tasks.slot(&id), Some(i as u32));
            assert_eq!(tasks.at(i as u32).map(Task::id), Some(id.as_str()));
        }
        assert_eq!(tasks.slot("nope"), None);
        assert!(tasks.at(n as u32).is_none());
        let seqs: Vec<i64> = tasks.values().map(|t| t.seq).collect();
        assert_eq!(seqs, (0..n as i64).collect::<Vec<_>>());

        // The same id again replaces the task in its slot.
        let mut again = task(&format!("t{CHUNK}"), -1);
        again.status = TaskStatus::Cancelled;
        assert_eq!(tasks.insert(again), CHUNK as u32);
        assert_eq!(tasks.len(), n);
        assert_eq!(tasks.get(&format!("t{CHUNK}")).map(|t| t.seq), Some(-1));

        // Equal by content whatever the slots.
        let mut reversed = Tasks::default();
        for t in tasks.values().collect::<Vec<_>>().into_iter().rev() {
            reversed.insert(t.clone());
        }
        assert_eq!(reversed, tasks);
        reversed.get_mut("t0").unwrap().seq = 99;
        assert_ne!(reversed, tasks);
    }
}
