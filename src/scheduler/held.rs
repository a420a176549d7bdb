//! The tasks and jobs a [`super::Scheduler`] holds, stored by *handle*.
//!
//! A leader holds every queued task here, so each one is kept small. A held task is one
//! [`Held`] record in fixed chunks (found by a `u32` handle, reused once the task leaves), its
//! id in one boxed allocation, and one `u32` in a hash table of handles whose hash and
//! equality read the id from the record, so the id is stored once. The class queues order
//! tasks by an [`OrderKey`] that names the task by its handle, and a task's job is a handle
//! too: nothing per task is a map entry keyed by a string.
//!
//! Chunks rather than one `Vec`, as for the state machine's tasks
//! (`state::machine::table`): growing one vector of a million records would copy it and hold
//! both copies meanwhile.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::{ClassId, OrderKey};

/// Records per chunk of storage.
const CHUNK: usize = 4096;

/// Names a held task while it is held; reused after it leaves.
pub(super) type Handle = u32;

/// A task the scheduler holds: queued, or reserved on a worker (`Scheduler::reservations`).
#[derive(Debug)]
pub(super) struct Held {
    pub id: Box<str>,
    pub class: ClassId,
    pub seq: i64,
    /// The job's handle in [`Jobs`].
    pub job: Handle,
    pub attempt: u32,
    pub rank: u32,
    pub priority: i32,
    pub fresh: bool,
}

impl Held {
    /// Its key in its class's queue.
    pub fn key(&self, handle: Handle) -> OrderKey {
        OrderKey {
            priority: std::cmp::Reverse(self.priority),
            fresh: self.fresh,
            rank: self.rank,
            seq: self.seq,
            task: handle,
        }
    }
}

/// Every held task, by handle and by id.
#[derive(Debug, Default)]
pub(super) struct HeldTasks {
    /// Full chunks of [`CHUNK`] records, then the last one; `None` marks a free handle.
    chunks: Vec<Vec<Option<Held>>>,
    /// Handles whose record left, reused first (last freed, first reused).
    free: Vec<Handle>,
    len: usize,
    index: HashTable<Handle>,
    hasher: RandomState,
}

impl HeldTasks {
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, handle: Handle) -> Option<&Option<Held>> {
        let h = handle as usize;
        self.chunks.get(h / CHUNK)?.get(h % CHUNK)
    }

    /// The task held under `handle`.
    pub fn get(&self, handle: Handle) -> Option<&Held> {
        self.slot(handle)?.as_ref()
    }

    /// The handle of the held task with this id.
    pub fn find(&self, id: &str) -> Option<Handle> {
        let hash = self.hasher.hash_one(id);
        self.index
            .find(hash, |&h| self.get(h).is_some_and(|t| &*t.id == id))
            .copied()
    }

    /// Holds a task whose id is not held yet, and returns its handle.
    pub fn insert(&mut self, held: Held) -> Handle {
        let hash = self.hasher.hash_one(&*held.id);
        let handle = match self.free.pop() {
            Some(handle) => {
                let h = handle as usize;
                self.chunks[h / CHUNK][h % CHUNK] = Some(held);
                handle
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let total = (self.chunks.len() - 1) * CHUNK;
                let chunk = self.chunks.last_mut().expect("a chunk with room");
                let handle = u32::try_from(total + chunk.len()).expect("fewer than 2^32 held");
                chunk.push(Some(held));
                handle
            }
        };
        self.len += 1;
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.insert_unique(hash, handle, |&h| {
            let h = h as usize;
            let held = chunks[h / CHUNK][h % CHUNK].as_ref();
            hasher.hash_one(held.map_or("", |t| &*t.id))
        });
        handle
    }

    /// Lets go of the task held under `handle`; its handle may be reused.
    pub fn remove(&mut self, handle: Handle) -> Option<Held> {
        let h = handle as usize;
        let held = self.chunks.get_mut(h / CHUNK)?.get_mut(h % CHUNK)?.take()?;
        let hash = self.hasher.hash_one(&*held.id);
        if let Ok(entry) = self.index.find_entry(hash, |&x| x == handle) {
            entry.remove();
        }
        self.free.push(handle);
        self.len -= 1;
        if self.len == 0 {
            // Nothing held: give the storage back rather than keep the high-water mark.
            *self = HeldTasks {
                hasher: self.hasher.clone(),
                ..HeldTasks::default()
            };
        }
        Some(held)
    }
}

/// Round-robin bookkeeping of one job with tasks held.
#[derive(Debug)]
pub(super) struct JobRanks {
    pub id: Box<str>,
    pub next: u32,
    pub members: usize,
}

/// The jobs with tasks held, by handle and by id.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    ranks: Vec<Option<JobRanks>>,
    by_id: HashMap<Box<str>, Handle>,
    free: Vec<Handle>,
}

impl Jobs {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The handle of job `id`, which is held from now on (until its last member leaves).
    pub fn join(&mut self, id: &str) -> Handle {
        if let Some(&handle) = self.by_id.get(id) {
            return handle;
        }
        let ranks = JobRanks {
            id: id.into(),
            next: 0,
            members: 0,
        };
        let handle = match self.free.pop() {
            Some(handle) => {
                self.ranks[handle as usize] = Some(ranks);
                handle
            }
            None => {
                self.ranks.push(Some(ranks));
                u32::try_from(self.ranks.len() - 1).expect("fewer than 2^32 jobs held")
            }
        };
        self.by_id.insert(id.into(), handle);
        handle
    }

    pub fn get_mut(&mut self, handle: Handle) -> Option<&mut JobRanks> {
        self.ranks.get_mut(handle as usize)?.as_mut()
    }

    /// One member of the job left; the job is forgotten with its last.
    pub fn leave(&mut self, handle: Handle) {
        let Some(ranks) = self.get_mut(handle) else {
            return;
        };
        ranks.members = ranks.members.saturating_sub(1);
        if ranks.members == 0
            && let Some(ranks) = self.ranks[handle as usize].take()
        {
            self.by_id.remove(&ranks.id);
            self.free.push(handle);
        }
    }
}
