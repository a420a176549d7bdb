//! The tasks and jobs a [`super::Scheduler`] holds, stored by *handle*.
//!
//! A leader holds every queued task here, so each one is kept small. A held task is one
//! [`Held`] record in fixed chunks (found by a `u32` handle, reused once the task leaves) and
//! one `u32` in a hash table of handles whose hash and equality read the id from the record,
//! so the id is stored once. The id is a [`HeldId`]: a UUID in its canonical text form — what
//! `testfleet run` and `submit` pick — is packed into its 16 bytes inside the record, any
//! other id boxed. The class queues order tasks by an [`OrderKey`] that names the task by its
//! handle, and a task's job is a handle too: nothing per task is a map entry keyed by a
//! string, and a task with a UUID costs no allocation of its own.
//!
//! Chunks rather than one `Vec`, as for the state machine's tasks
//! (`state::machine::table`): growing one vector of a million records would copy it and hold
//! both copies meanwhile.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::{ClassId, OrderKey};

/// Records per chunk of storage.
const CHUNK: usize = 4096;

/// Names a held task while it is held; reused after it leaves.
pub(super) type Handle = u32;

/// A held task's id: packed when it is a UUID in canonical form (36 characters, lowercase
/// hex and four hyphens), so that it reads back as exactly the same text; boxed otherwise.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeldId {
    Uuid([u8; 16]),
    Text(Box<str>),
}

/// Where the hyphens of a canonical UUID are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

impl HeldId {
    /// The 16 bytes of `text` if it is a UUID in canonical form.
    fn uuid(text: &str) -> Option<[u8; 16]> {
        let text = text.as_bytes();
        if text.len() != 36 || HYPHENS.iter().any(|&i| text[i] != b'-') {
            return None;
        }
        let mut digits = (text.iter().enumerate())
            .filter(|(i, _)| !HYPHENS.contains(i))
            .map(|(_, &c)| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            });
        let mut out = [0u8; 16];
        for byte in &mut out {
            *byte = (digits.next()?? << 4) | digits.next()??;
        }
        Some(out)
    }

    /// Whether this is the id `text`, whose packed form (if it has one) is `packed`.
    fn is(&self, text: &str, packed: Option<&[u8; 16]>) -> bool {
        match self {
            HeldId::Uuid(bytes) => packed == Some(bytes),
            HeldId::Text(own) => &**own == text,
        }
    }

    /// Hashes the id's text, packed or not.
    fn hash_with(&self, hasher: &RandomState) -> u64 {
        match self {
            HeldId::Uuid(bytes) => {
                let mut text = [0u8; 36];
                write_uuid(bytes, &mut text);
                hasher.hash_one(std::str::from_utf8(&text).unwrap_or(""))
            }
            HeldId::Text(own) => hasher.hash_one(&**own),
        }
    }
}

/// Writes `bytes` as a canonical UUID: lowercase hex, hyphens after 8, 12, 16 and 20 digits.
fn write_uuid(bytes: &[u8; 16], out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
}

impl From<String> for HeldId {
    fn from(id: String) -> HeldId {
        match HeldId::uuid(&id) {
            Some(bytes) => HeldId::Uuid(bytes),
            None => HeldId::Text(id.into_boxed_str()),
        }
    }
}

impl fmt::Display for HeldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeldId::Uuid(bytes) => {
                let mut text = [0u8; 36];
                write_uuid(bytes, &mut text);
                f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
            }
            HeldId::Text(own) => f.write_str(own),
        }
    }
}

/// A task the scheduler holds: queued, or reserved on a worker (`Scheduler::reservations`).
#[derive(Debug)]
pub(super) struct Held {
    pub id: HeldId,
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
        let packed = HeldId::uuid(id);
        self.index
            .find(hash, |&h| {
                self.get(h).is_some_and(|t| t.id.is(id, packed.as_ref()))
            })
            .copied()
    }

    /// Holds a task whose id is not held yet, and returns its handle.
    pub fn insert(&mut self, held: Held) -> Handle {
        let hash = held.id.hash_with(&self.hasher);
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
            held.map_or(0, |t| t.id.hash_with(hasher))
        });
        handle
    }

    /// Lets go of the task held under `handle`; its handle may be reused.
    pub fn remove(&mut self, handle: Handle) -> Option<Held> {
        let h = handle as usize;
        let held = self.chunks.get_mut(h / CHUNK)?.get_mut(h % CHUNK)?.take()?;
        let hash = held.id.hash_with(&self.hasher);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: &str, seq: i64) -> Held {
        Held {
            id: HeldId::from(id.to_string()),
            class: 0,
            seq,
            job: 0,
            attempt: 0,
            rank: 0,
            priority: 0,
            fresh: true,
        }
    }

    #[test]
    fn a_held_task_is_seven_words() {
        assert_eq!(std::mem::size_of::<Held>(), 56);
    }

    #[test]
    fn canonical_uuids_are_packed_and_read_back_as_the_same_text() {
        let uuid = "0f8e3c2a-1b4d-4e6f-8a9b-0c1d2e3f4a5b";
        assert!(matches!(HeldId::from(uuid.to_string()), HeldId::Uuid(_)));
        assert_eq!(HeldId::from(uuid.to_string()).to_string(), uuid);
        // Not canonical: kept as text, exactly.
        for other in [
            "0F8E3C2A-1B4D-4E6F-8A9B-0C1D2E3F4A5B",
            "0f8e3c2a1b4d4e6f8a9b0c1d2e3f4a5b",
            "0f8e3c2a-1b4d-4e6f-8a9b-0c1d2e3f4a5g",
            "0f8e3c2a-1b4d-4e6f-8a9b_0c1d2e3f4a5b",
            "t1",
            "",
        ] {
            assert!(matches!(HeldId::from(other.to_string()), HeldId::Text(_)));
            assert_eq!(HeldId::from(other.to_string()).to_string(), other);
        }
    }

    #[test]
    fn handles_span_chunks_are_reused_and_ids_find_them() {
        let mut tasks = HeldTasks::default();
        let ids: Vec<String> = (0..CHUNK + 10)
            .map(|i| match i % 2 {
                0 => format!("{i:08x}-0000-4000-8000-000000000000"),
                _ => format!("task-{i}"),
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(tasks.insert(held(id, i as i64)), i as Handle);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(tasks.find(id), Some(i as Handle), "{id}");
            assert_eq!(
                tasks.get(i as Handle).map(|t| t.id.to_string()),
                Some(id.clone())
            );
        }
        assert_eq!(tasks.find("00000000-0000-4000-8000-000000000001"), None);
        assert_eq!(tasks.find("TASK-1"), None);
        let gone = tasks.remove(CHUNK as Handle + 1).expect("held");
        assert_eq!(gone.id.to_string(), ids[CHUNK + 1]);
        assert_eq!(tasks.find(&ids[CHUNK + 1]), None);
        assert_eq!(tasks.len(), ids.len() - 1);
        // The freed handle is the next one given.
        assert_eq!(tasks.insert(held("again", -1)), CHUNK as Handle + 1);
        assert_eq!(tasks.find("again"), Some(CHUNK as Handle + 1));
        // Nothing held: the storage goes.
        for h in 0..ids.len() as Handle {
            tasks.remove(h);
        }
        assert!(tasks.is_empty() && tasks.chunks.is_empty() && tasks.free.is_empty());
    }
}
