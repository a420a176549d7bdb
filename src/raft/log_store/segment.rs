//! The on-disk format of the log store: a directory of append-only segment files of records.
//!
//! A segment is one file, `segment-<seq>.log` (`seq` counts up from 1, zero-padded to 20
//! digits so that names sort in order). It is created full size, filled with zeros, fsynced and
//! only then renamed into place, so that an append later overwrites zeros inside the file and
//! its `fdatasync` has data blocks to flush and no file size or extent to journal.
//!
//! A segment is a run of records, each
//!
//! ```text
//! [len: u32 LE] [crc32 of kind and payload: u32 LE] [kind: u8] [payload: len - 1 bytes]
//! ```
//!
//! and the first record of every segment is its [`Header`]: the layout version, the segment's
//! own number, and the store's small values (vote, last purged log id, committed log id) as they
//! were when the segment was started, so that older segments can be deleted without losing
//! them. Then come [`KIND_ENTRY`] records (the log index, then the bincode-encoded entry) and
//! [`KIND_META`] records (a [`Meta`] change: vote, truncation, purge, committed log id). A
//! zero length marks the end of the records (the zeros the segment was created with).
//!
//! Reading a segment ([`next_record`]) tells a record, the end, and a record that is not valid
//! (cut short, a checksum that does not match) apart; what an invalid record means — the tail
//! of an interrupted write or damage — is for the caller (`open.rs`) to decide.

use std::fs::File;
use std::io;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{decode, encode};

/// Bytes before a record's kind: its length and its checksum.
pub(super) const RECORD_PREFIX: usize = 8;

/// The first record of every segment.
pub(super) const KIND_HEADER: u8 = 1;
/// A log entry: its index (u64 LE), then the encoded entry.
pub(super) const KIND_ENTRY: u8 = 2;
/// A change of a small value, bincode-encoded [`Meta`].
pub(super) const KIND_META: u8 = 3;

/// Size the largest segments are created with. A write that does not fit starts a new segment
/// (a single write larger than this grows its segment instead).
pub(super) const SEGMENT_BYTES: u64 = 16 << 20;

/// Size segment `seq` is created with: 1 MiB for the first, doubling up to [`SEGMENT_BYTES`]
/// from the fifth on, so that a new store (every node a test starts) writes and fsyncs 1 MiB of
/// zeros, not 16.
pub(super) fn segment_bytes(seq: u64) -> u64 {
    (1u64 << 20 << seq.saturating_sub(1).min(4)).min(SEGMENT_BYTES)
}

/// Largest record length accepted when reading: anything larger is a damaged length field.
const MAX_RECORD: u32 = 1 << 30;

/// Marks a segment header, so that another file with our name is not taken for one.
const MAGIC: [u8; 8] = *b"TFRAFTLG";

/// A value with the log index it belongs to (a log id: encoded, and its index for the store's
/// own checks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Saved {
    pub index: u64,
    pub bytes: Vec<u8>,
}

/// The store's small values, as a segment header carries them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MetaState {
    pub vote: Option<Vec<u8>>,
    pub last_purged: Option<Saved>,
    pub committed: Option<Saved>,
}

/// The first record of a segment.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header {
    magic: [u8; 8],
    pub version: u32,
    pub seq: u64,
    pub meta: MetaState,
}

/// One change of a small value, in the order the writer made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Meta {
    Vote(Vec<u8>),
    /// Every entry with index `>= since` is gone.
    Truncate {
        since: u64,
    },
    /// Every entry up to and including this log id is gone; it is the last purged log id.
    Purge(Saved),
    Committed(Option<Saved>),
}

/// What [`next_record`] found at an offset.
#[derive(Debug)]
pub(super) enum Next<'a> {
    /// A valid record; the next one starts at `next`.
    Record {
        kind: u8,
        payload: &'a [u8],
        /// Offset of the payload in the segment.
        payload_at: usize,
        next: usize,
    },
    /// A zero length (or the end of the file): no more records.
    End,
    /// Not a valid record, and why.
    Invalid(String),
}

/// Reads the record at `at` in the segment bytes `data`.
pub(super) fn next_record(data: &[u8], at: usize) -> Next<'_> {
    let Some(prefix) = data.get(at..at + RECORD_PREFIX) else {
        return match data.get(at..) {
            Some(rest) if rest.iter().any(|b| *b != 0) => {
                Next::Invalid(format!("a record cut short at offset {at}"))
            }
            _ => Next::End,
        };
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if len == 0 {
        return if crc == 0 {
            Next::End
        } else {
            Next::Invalid(format!(
                "a zero-length record with a checksum at offset {at}"
            ))
        };
    }
    if len > MAX_RECORD {
        return Next::Invalid(format!("a record of {len} bytes at offset {at}"));
    }
    let body_at = at + RECORD_PREFIX;
    let Some(body) = data.get(body_at..body_at + len as usize) else {
        return Next::Invalid(format!(
            "a record of {len} bytes at offset {at} runs past the end of the file"
        ));
    };
    if crc32fast::hash(body) != crc {
        return Next::Invalid(format!("a record at offset {at} fails its checksum"));
    }
    Next::Record {
        kind: body[0],
        payload: &body[1..],
        payload_at: body_at + 1,
        next: body_at + len as usize,
    }
}

/// Appends one record of `kind` whose payload is the concatenation of `parts`; returns the
/// offset of the payload in `buf`.
pub(super) fn push_record(buf: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) -> usize {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(1 + payload_len).unwrap_or(u32::MAX);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    for part in parts {
        hasher.update(part);
    }
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.push(kind);
    let payload_at = buf.len();
    for part in parts {
        buf.extend_from_slice(part);
    }
    payload_at
}

/// Appends an entry record; returns the offset of the encoded entry in `buf`.
pub(super) fn push_entry(buf: &mut Vec<u8>, index: u64, entry: &[u8]) -> usize {
    push_record(buf, KIND_ENTRY, &[&index.to_le_bytes(), entry]) + 8
}

/// Appends a [`Meta`] record.
pub(super) fn push_meta(buf: &mut Vec<u8>, meta: &Meta) -> Result<(), io::Error> {
    let bytes = encode(meta, "log record")?;
    push_record(buf, KIND_META, &[&bytes]);
    Ok(())
}

/// Splits an entry record's payload into its index and the encoded entry (with the offset of
/// the latter within the payload).
pub(super) fn split_entry(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (index, entry) = payload.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*index), entry))
}

/// Decodes a header record's payload; `None` if it is not one of ours.
pub(super) fn decode_header(payload: &[u8]) -> Option<Header> {
    let header: Header = decode(payload).ok()?;
    (header.magic == MAGIC).then_some(header)
}

/// Decodes a [`Meta`] record's payload.
pub(super) fn decode_meta(payload: &[u8]) -> Result<Meta, String> {
    decode(payload)
}

/// The name of segment `seq`.
pub(super) fn segment_name(seq: u64) -> String {
    format!("segment-{seq:020}.log")
}

/// The number of a segment file name; `None` for any other name.
pub(super) fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Creates segment `seq` in `dir`, starting with a header carrying `meta`: made under a
/// temporary name ([`zeroed`]), then given its header and renamed into place ([`install`]).
/// Returns the open file, its path and the offset after the header.
pub(super) fn create_segment(
    dir: &Path,
    seq: u64,
    version: u32,
    meta: &MetaState,
) -> Result<(File, PathBuf, u64), io::Error> {
    install(dir, seq, zeroed(dir, seq)?, version, meta)
}

/// A segment made ahead of time on a thread of its own (zero-filled and fsynced under its
/// temporary name), so that the writer, when it needs the next segment, only writes a header
/// and renames it instead of writing and fsyncing megabytes of zeros while commits wait.
pub(super) struct Spare {
    pub seq: u64,
    dir: PathBuf,
    work: std::thread::JoinHandle<Result<File, io::Error>>,
}

impl Spare {
    /// Starts making segment `seq` in `dir`.
    pub fn prepare(dir: &Path, seq: u64) -> Self {
        let for_thread = dir.to_path_buf();
        Spare {
            seq,
            dir: dir.to_path_buf(),
            work: std::thread::spawn(move || zeroed(&for_thread, seq)),
        }
    }

    /// Waits until it is made, then installs it with a header carrying `meta`, as
    /// [`create_segment`] returns it.
    pub fn install(
        self,
        version: u32,
        meta: &MetaState,
    ) -> Result<(File, PathBuf, u64), io::Error> {
        let file = self
            .work
            .join()
            .map_err(|_| io::Error::other("the thread making a segment panicked"))??;
        install(&self.dir, self.seq, file, version, meta)
    }

    /// Waits until it is made and removes it (the store is closing).
    pub fn discard(self) {
        let _ = self.work.join();
        let _ = std::fs::remove_file(tmp_path(&self.dir, self.seq));
    }
}

/// Where segment `seq` is made before it is installed.
fn tmp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{}.tmp", segment_name(seq)))
}

/// Creates segment `seq`'s temporary file in `dir`, filled with zeros to [`segment_bytes`]
/// and fsynced.
fn zeroed(dir: &Path, seq: u64) -> Result<File, io::Error> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp_path(dir, seq))?;
    let zeros = vec![0u8; 1 << 20];
    let size = segment_bytes(seq);
    let mut at = 0;
    while at < size {
        let n = zeros.len().min((size - at) as usize);
        file.write_all(&zeros[..n])?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Writes the header carrying `meta` at the start of segment `seq`'s zeroed temporary file,
/// fsyncs it, renames it into place and fsyncs the directory: a crash before the rename leaves
/// a temporary file (removed at open), never a segment without its header.
fn install(
    dir: &Path,
    seq: u64,
    file: File,
    version: u32,
    meta: &MetaState,
) -> Result<(File, PathBuf, u64), io::Error> {
    let header = Header {
        magic: MAGIC,
        version,
        seq,
        meta: meta.clone(),
    };
    let mut first = Vec::new();
    push_record(
        &mut first,
        KIND_HEADER,
        &[&encode(&header, "segment header")?],
    );
    write_durably(&file, &first, 0)?;
    let path = dir.join(segment_name(seq));
    std::fs::rename(tmp_path(dir, seq), &path)?;
    sync_dir(dir)?;
    Ok((file, path, first.len() as u64))
}

/// Writes `bytes` at `at` and makes them durable.
pub(super) fn write_durably(file: &File, bytes: &[u8], at: u64) -> Result<(), io::Error> {
    file.write_all_at(bytes, at)?;
    file.sync_data()
}

/// fsyncs a directory, so that names created or renamed in it survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), io::Error> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_damage_is_told_from_the_end() {
        let mut buf = Vec::new();
        let at = push_entry(&mut buf, 7, b"entry seven");
        push_meta(&mut buf, &Meta::Truncate { since: 3 }).unwrap();
        let end = buf.len();
        buf.extend_from_slice(&[0; 64]);

        let Next::Record {
            kind,
            payload,
            payload_at,
            next,
        } = next_record(&buf, 0)
        else {
            panic!("no first record");
        };
        assert_eq!(kind, KIND_ENTRY);
        assert_eq!(split_entry(payload), Some((7, &b"entry seven"[..])));
        assert_eq!(&buf[at..at + 11], b"entry seven");
        assert_eq!(payload_at + 8, at);
        let Next::Record {
            kind,
            payload,
            next: after,
            ..
        } = next_record(&buf, next)
        else {
            panic!("no second record");
        };
        assert_eq!(kind, KIND_META);
        assert_eq!(decode_meta(payload), Ok(Meta::Truncate { since: 3 }));
        assert_eq!(after, end);
        assert!(matches!(next_record(&buf, end), Next::End));
        assert!(matches!(next_record(&buf[..end], end), Next::End));

        // A flipped bit, a record cut short, a length past the end: invalid, not the end.
        let mut flipped = buf.clone();
        flipped[at + 2] ^= 1;
        assert!(matches!(next_record(&flipped, 0), Next::Invalid(_)));
        assert!(matches!(next_record(&buf[..next - 1], 0), Next::Invalid(_)));
        assert!(matches!(next_record(&buf[..5], 0), Next::Invalid(_)));
    }

    #[test]
    fn segments_start_small_and_grow() {
        let sizes: Vec<u64> = (1..=7).map(|seq| segment_bytes(seq) >> 20).collect();
        assert_eq!(sizes, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_seq(&segment_name(42)), Some(42));
        assert!(segment_name(9) < segment_name(10));
        for other in [
            "segment-1.log",
            "segment-00000000000000000001.log.tmp",
            "LOCK",
        ] {
            assert_eq!(segment_seq(other), None, "{other}");
        }
    }
}
