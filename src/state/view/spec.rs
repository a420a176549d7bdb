//! A task's spec as the state machine keeps it: compact, because it is kept for every task
//! ever submitted.
//!
//! A [`TaskSpec`] is a tree of allocations — the id, the name, every argument, every
//! environment variable, label and capability its own `String`, in `Vec`s and `BTreeMap`s —
//! over a kilobyte of heap for a pytest command. [`StoredSpec`] keeps the same text in **one**
//! shared allocation, and the numbers as plain fields. The allocation is an `Arc`, so the
//! flusher's copy of a changed task (`super::super::rows`) costs a reference count.
//!
//! # Layout
//!
//! Five counts (LEB128 varints): whether there is a working directory, then how many
//! arguments, environment variables, labels and capabilities. Then the strings in a fixed
//! order: id, name, working directory, argv, environment (name, value), labels (name, value),
//! capabilities. Each string is a varint `tag`: an even tag is a literal of `tag / 2` bytes
//! that follow; an odd tag is a *reference* to string `tag / 2` of the dictionary — the
//! *base*'s strings, then this spec's own earlier ones.
//!
//! The tasks of a job mostly differ in one argument (`python -m pytest tests/x.py::test_n -q
//! …`), and a pytest task's name is its node id, which is also an argument: so a job's first
//! task is the base of the others ([`StoredSpec::based_on`]), a string equal to the base's
//! string at the same position costs a byte, and one equal to an earlier string of its own
//! costs a byte or two. The id is always a literal, first after the counts, so reading it —
//! which the task table does on every lookup — does not walk the rest.
//!
//! The bytes are only ever written by [`StoredSpec::based_on`] from valid strings, so reading
//! them back cannot fail; a reader still never panics on a short or invalid buffer (it yields
//! empty strings) rather than trusting that.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::state::command::TaskSpec;

/// A task's spec: the text in one shared allocation, the numbers as fields.
#[derive(Clone)]
pub struct StoredSpec {
    text: Arc<[u8]>,
    /// The spec whose strings this one's references name first (a job's first task); never
    /// itself based on another.
    base: Option<Arc<[u8]>>,
    pub timeout_ms: u64,
    /// Higher runs first.
    pub priority: i32,
    /// Retries of each kind; 8 bits, as apply keeps each at most `limits::MAX_RETRIES`.
    pub max_retries: u8,
    pub timeout_retries: u8,
    pub flaky_retries: u8,
}

fn put_number(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// A retry count as stored: apply refuses more than `limits::MAX_RETRIES` (100), so it always
/// fits; a larger one (never applied) would be kept as 255.
fn retries(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Strings shorter than this are always written out: a reference would save nothing.
const MIN_SHARED: usize = 2;

/// Reads the encoded text front to back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn number(&mut self) -> usize {
        let mut n: usize = 0;
        for (i, byte) in self.bytes.iter().enumerate() {
            let shift = 7 * i as u32;
            if shift >= usize::BITS {
                break;
            }
            n |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return n;
            }
        }
        self.bytes = &[];
        0
    }

    fn literal(&mut self, len: usize) -> &'a str {
        let (text, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        std::str::from_utf8(text).unwrap_or_default()
    }
}

/// The five counts at the start of the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    cwd: usize,
    args: usize,
    env: usize,
    labels: usize,
    capabilities: usize,
}

impl Counts {
    fn of(spec: &TaskSpec) -> Counts {
        Counts {
            cwd: usize::from(spec.cwd.is_some()),
            args: spec.command.len(),
            env: spec.env.len(),
            labels: spec.labels.len(),
            capabilities: spec.capabilities.len(),
        }
    }

    fn read(r: &mut Reader<'_>) -> Counts {
        Counts {
            cwd: r.number().min(1),
            args: r.number(),
            env: r.number(),
            labels: r.number(),
            capabilities: r.number(),
        }
    }

    fn strings(&self) -> usize {
        2 + self.cwd + self.args + 2 * self.env + 2 * self.labels + self.capabilities
    }
}

/// Every string of an encoded text, references resolved against `base`.
fn decode<'a>(text: &'a [u8], base: &[&'a str]) -> (Counts, Vec<&'a str>) {
    let mut r = Reader { bytes: text };
    let counts = Counts::read(&mut r);
    // Every string takes at least a byte: a damaged count cannot make this allocate much.
    let n = counts.strings().min(r.bytes.len());
    let mut strings: Vec<&str> = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = r.number();
        let s = if tag & 1 == 0 {
            r.literal(tag / 2)
        } else {
            let i = tag / 2;
            match i.checked_sub(base.len()) {
                None => base[i],
                Some(own) => strings.get(own).copied().unwrap_or_default(),
            }
        };
        strings.push(s);
    }
    (counts, strings)
}

/// A spec's strings in layout order.
fn strings_of(spec: &TaskSpec) -> Vec<&str> {
    let mut out = vec![spec.id.as_str(), spec.name.as_str()];
    out.extend(spec.cwd.as_deref());
    out.extend(spec.command.iter().map(String::as_str));
    for map in [&spec.env, &spec.labels] {
        for (k, v) in map {
            out.push(k);
            out.push(v);
        }
    }
    out.extend(spec.capabilities.iter().map(String::as_str));
    out
}

impl StoredSpec {
    /// The compact form of `spec`, on its own.
    pub fn new(spec: &TaskSpec) -> StoredSpec {
        Self::based_on(spec, None)
    }

    /// The compact form of `spec`, sharing what it can with `base` (another task of its job;
    /// if `base` is itself based on another spec, that one is used).
    pub fn based_on(spec: &TaskSpec, base: Option<&StoredSpec>) -> StoredSpec {
        let strings = strings_of(spec);
        let base_text = base.map(|b| b.base.clone().unwrap_or_else(|| b.text.clone()));
        let mut base_strings = match &base_text {
            Some(text) => decode(text, &[]).1,
            None => Vec::new(),
        };
        let from_base =
            |i: usize, s: &&str| i > 0 && s.len() >= MIN_SHARED && base_strings.get(i) == Some(s);
        let uses_base = strings.iter().enumerate().any(|(i, s)| from_base(i, s));
        if !uses_base {
            // Nothing in common: no base to keep alive or to look through.
            base_strings.clear();
        }
        let counts = Counts::of(spec);
        let mut out = Vec::with_capacity(strings.iter().map(|s| s.len() + 1).sum::<usize>() + 5);
        for n in [
            counts.cwd,
            counts.args,
            counts.env,
            counts.labels,
            counts.capabilities,
        ] {
            put_number(&mut out, n);
        }
        for (i, s) in strings.iter().enumerate() {
            let reference = if i == 0 || s.len() < MIN_SHARED {
                None
            } else if base_strings.get(i) == Some(s) {
                Some(i)
            } else {
                strings[..i]
                    .iter()
                    .position(|earlier| earlier == s)
                    .map(|j| base_strings.len() + j)
            };
            match reference {
                Some(index) => put_number(&mut out, 2 * index + 1),
                None => {
                    put_number(&mut out, 2 * s.len());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        StoredSpec {
            text: Arc::from(out),
            base: base_text.filter(|_| uses_base),
            timeout_ms: spec.timeout_ms,
            priority: spec.priority,
            max_retries: retries(spec.max_retries),
            timeout_retries: retries(spec.timeout_retries),
            flaky_retries: retries(spec.flaky_retries),
        }
    }

    /// The counts and every string, in layout order.
    fn parts(&self) -> (Counts, Vec<&str>) {
        match &self.base {
            Some(base) => {
                let base = decode(base, &[]).1;
                decode(&self.text, &base)
            }
            None => decode(&self.text, &[]),
        }
    }

    /// The task's id: always a literal, read without decoding the rest.
    pub fn id(&self) -> &str {
        let mut r = Reader { bytes: &self.text };
        Counts::read(&mut r);
        let tag = r.number();
        if tag & 1 == 1 {
            return "";
        }
        r.literal(tag / 2)
    }

    pub fn name(&self) -> &str {
        self.parts().1.get(1).copied().unwrap_or_default()
    }

    /// Working directory on the worker; the worker's own when `None`.
    pub fn cwd(&self) -> Option<&str> {
        let (counts, strings) = self.parts();
        (counts.cwd == 1).then(|| strings.get(2).copied().unwrap_or_default())
    }

    /// argv; the first is the program.
    pub fn args(&self) -> Vec<&str> {
        let (c, strings) = self.parts();
        section(&strings, 2 + c.cwd, c.args).to_vec()
    }

    /// argv as owned strings.
    pub fn command(&self) -> Vec<String> {
        self.args().into_iter().map(str::to_string).collect()
    }

    /// Environment variables, by name.
    pub fn env(&self) -> Vec<(&str, &str)> {
        let (c, strings) = self.parts();
        pairs(section(&strings, 2 + c.cwd + c.args, 2 * c.env))
    }

    /// Labels a worker must carry, by name.
    pub fn labels(&self) -> Vec<(&str, &str)> {
        let (c, strings) = self.parts();
        pairs(section(
            &strings,
            2 + c.cwd + c.args + 2 * c.env,
            2 * c.labels,
        ))
    }

    /// Capability expressions a worker must satisfy.
    pub fn capabilities(&self) -> Vec<&str> {
        let (c, strings) = self.parts();
        let start = 2 + c.cwd + c.args + 2 * c.env + 2 * c.labels;
        section(&strings, start, c.capabilities).to_vec()
    }

    /// The spec as submitted.
    pub fn to_spec(&self) -> TaskSpec {
        let (c, strings) = self.parts();
        let owned = |pairs: Vec<(&str, &str)>| {
            (pairs.into_iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let texts = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let args_at = 2 + c.cwd;
        let env_at = args_at + c.args;
        let labels_at = env_at + 2 * c.env;
        let caps_at = labels_at + 2 * c.labels;
        TaskSpec {
            id: section(&strings, 0, 1).concat(),
            name: section(&strings, 1, 1).concat(),
            command: texts(section(&strings, args_at, c.args)),
            env: owned(pairs(section(&strings, env_at, 2 * c.env))),
            cwd: (c.cwd == 1).then(|| section(&strings, 2, 1).concat()),
            timeout_ms: self.timeout_ms,
            priority: self.priority,
            labels: owned(pairs(section(&strings, labels_at, 2 * c.labels))),
            capabilities: texts(section(&strings, caps_at, c.capabilities)),
            max_retries: u32::from(self.max_retries),
            timeout_retries: u32::from(self.timeout_retries),
            flaky_retries: u32::from(self.flaky_retries),
        }
    }

    /// Bytes held for this spec alone (its base is shared with the rest of its job).
    pub fn own_bytes(&self) -> usize {
        self.text.len()
    }
}

/// `len` strings from `start`, or fewer if the text is damaged.
fn section<'s, 'a>(strings: &'s [&'a str], start: usize, len: usize) -> &'s [&'a str] {
    let start = start.min(strings.len());
    &strings[start..(start + len).min(strings.len())]
}

fn pairs<'a>(flat: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    flat.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect()
}

/// Equal when they hold the same spec, however it is encoded (with or without a base).
impl PartialEq for StoredSpec {
    fn eq(&self, other: &StoredSpec) -> bool {
        (self.timeout_ms, self.priority) == (other.timeout_ms, other.priority)
            && (self.max_retries, self.timeout_retries, self.flaky_retries)
                == (
                    other.max_retries,
                    other.timeout_retries,
                    other.flaky_retries,
                )
            && self.parts() == other.parts()
    }
}

impl Eq for StoredSpec {}

impl From<&TaskSpec> for StoredSpec {
    fn from(spec: &TaskSpec) -> StoredSpec {
        StoredSpec::new(spec)
    }
}

impl fmt::Debug for StoredSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_spec().fmt(f)
    }
}

#[cfg(test)]
mod tests;
