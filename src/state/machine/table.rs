//! The state machine's tasks: every task ever submitted, in a `Vec` by *slot*, found by id
//! through a hash table of slots.
//!
//! Tasks are never removed while a machine lives (a snapshot install builds a new machine),
//! so a slot names one task for good: a job lists its tasks as slots and the pending
//! [`super::Changes`] note changed tasks as slots, with no copy of the id. The index holds
//! only the `u32` slot; its hash and equality read the id from the task itself.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::Task;

/// Every task of a machine, by slot and by id.
#[derive(Clone, Default)]
pub struct Tasks {
    rows: Vec<Task>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Tasks {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every task, in slot order (the order they were added).
    pub fn values(&self) -> std::slice::Iter<'_, Task> {
        self.rows.iter()
    }

    /// The slot of the task with this id.
    pub fn slot(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&slot| self.rows[slot as usize].id() == id)
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
        self.rows.get(slot as usize)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        let slot = self.slot(id)?;
        self.rows.get_mut(slot as usize)
    }

    /// Adds a task and returns its slot; a task with the same id is replaced in its slot.
    pub(super) fn insert(&mut self, task: Task) -> u32 {
        if let Some(slot) = self.slot(task.id()) {
            self.rows[slot as usize] = task;
            return slot;
        }
        let slot = u32::try_from(self.rows.len()).unwrap_or(u32::MAX);
        let hash = self.hasher.hash_one(task.id());
        self.rows.push(task);
        let (rows, hasher) = (&self.rows, &self.hasher);
        self.index
            .insert_unique(hash, slot, |&s| hasher.hash_one(rows[s as usize].id()));
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
