//! Crash tests of the log store with real SIGKILLs, what damaged segments do, and the
//! conversion of a store in the old redb layout.
//!
//! A child process (this test binary, run again with [`TORTURE_ENV`] naming the store) appends
//! entries as fast as it can, several appends in flight like openraft, now and then saving a
//! vote, purging a prefix or truncating a suffix, and prints every write once it is durable.
//! The parent SIGKILLs it at seeded random moments, reopens the store (the tail of an
//! interrupted write is discarded at open) and checks that the log is one run of consecutive
//! entries with the expected contents, and that every write reported durable is there. The
//! child writes several MiB over the rounds, so segments fill, new ones start and purged ones
//! are deleted while it is being killed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openraft::type_config::TypeConfigExt;

use openraft::type_config::alias::EntryOf;

use super::*;

type C = super::tests::TestConfig;
type Store = LogStore<C>;
type Entry = EntryOf<C>;

fn log_id(term: u64, index: u64) -> LogIdOf<C> {
    openraft::testing::log_id::<C>(term, 1, index)
}

fn vote(term: u64, node: u64) -> VoteOf<C> {
    openraft::Vote::new(term, node)
}

/// The file the child writes to; without it, the child test does nothing.
const TORTURE_ENV: &str = "TESTFLEET_LOG_STORE_TORTURE_FILE";

/// A tiny deterministic generator (SplitMix64): reproducible kill moments from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The command stored at `index` in `term`: its size varies, so entries span pages.
fn payload(term: u64, index: u64) -> String {
    let len = (index * 37 + term * 11) % 700;
    format!("{term}/{index}/{}", "x".repeat(len as usize))
}

fn entry(term: u64, index: u64) -> Entry {
    Entry::new_normal(log_id(term, index), payload(term, index))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs only as the child of `sigkilled_writers_lose_no_durable_write` (does nothing
/// otherwise): writes until it is killed, printing `durable <index>`, `purged <index>`,
/// and `vote <term>` once each is on disk, and `truncating <index>` (every entry from there
/// on is about to be removed) before it truncates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_child_writes_until_killed() {
    let Some(path) = std::env::var_os(TORTURE_ENV) else {
        return;
    };
    let mut store = Store::open(Path::new(&path)).unwrap();
    let state = store.get_log_state().await.unwrap();
    let mut next = state.last_log_id.as_ref().map_or(1, |l| l.index + 1);
    // A new term, above every term this file has seen (as a restarted node would campaign).
    let voted = store
        .read_vote()
        .await
        .unwrap()
        .map_or(0, |v| v.leader_id().term);
    let logged = state.last_log_id.as_ref().map_or(0, |l| l.leader_id.term);
    let mut term = voted.max(logged) + 1;
    store.save_vote(&vote(term, 1)).await.unwrap();
    say(&format!("vote {term}"));
    let mut rng = Rng(next ^ (std::process::id() as u64) << 32);
    loop {
        // Up to four appends in flight, answered in order, as openraft issues them.
        let mut flushed = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let count = 1 + rng.below(24);
            let entries: Vec<Entry> = (next..next + count).map(|i| entry(term, i)).collect();
            let (tx, rx) = C::oneshot();
            store.append(entries, IOFlushed::signal(tx)).await.unwrap();
            next += count;
            flushed.push((next - 1, rx));
        }
        for (last, rx) in flushed {
            rx.await.unwrap().unwrap();
            say(&format!("durable {last}"));
        }
        store
            .save_committed(Some(log_id(term, next - 1)))
            .await
            .unwrap();
        match rng.below(40) {
            0 if next > 300 => {
                let upto = next - 200;
                let purged_term = store.try_get_log_entries(upto..=upto).await.unwrap()[0]
                    .log_id
                    .leader_id
                    .term;
                store.purge(log_id(purged_term, upto)).await.unwrap();
                say(&format!("purged {upto}"));
            }
            1 if next > 10 => {
                // A new leader overwrote the last few entries: truncate, then go on in a
                // higher term (the vote first, as Raft does).
                let keep = next - 1 - rng.below(8);
                let state = store.get_log_state().await.unwrap();
                let purged = state.last_purged_log_id.map_or(0, |l| l.index);
                if keep > purged {
                    let kept_term = store.try_get_log_entries(keep..=keep).await.unwrap()[0]
                        .log_id
                        .leader_id
                        .term;
                    // Said before it happens: a kill may come before or after it is durable.
                    say(&format!("truncating {}", keep + 1));
                    store
                        .truncate_after(Some(log_id(kept_term, keep)))
                        .await
                        .unwrap();
                    next = keep + 1;
                    term += 1;
                    store.save_vote(&vote(term, 1)).await.unwrap();
                    say(&format!("vote {term}"));
                }
            }
            _ => {}
        }
    }
}

/// What the parent learnt from the child's reports: what must be on disk.
#[derive(Debug, Default)]
struct Durable {
    /// The highest index reported durable (and not truncated since).
    last: Option<u64>,
    purged: Option<u64>,
    vote_term: Option<u64>,
}

impl Durable {
    fn note(&mut self, line: &str) {
        let Some((what, number)) = line.split_once(' ') else {
            return;
        };
        let Ok(n) = number.trim().parse::<u64>() else {
            return;
        };
        match what {
            "durable" => self.last = self.last.max(Some(n)),
            "purged" => self.purged = self.purged.max(Some(n)),
            "truncating" => self.last = self.last.map(|l| l.min(n - 1)),
            "vote" => self.vote_term = self.vote_term.max(Some(n)),
            _ => {}
        }
    }
}

/// Reopens the file and checks it against what was reported durable.
async fn check_reopened(path: &Path, durable: &Durable, round: usize) {
    let mut store = Store::open(path)
        .unwrap_or_else(|e| panic!("round {round}: the store does not open after a kill: {e}"));
    let state = store.get_log_state().await.unwrap();
    let purged = state.last_purged_log_id.as_ref().map(|l| l.index);
    let last = state.last_log_id.as_ref().map(|l| l.index);
    assert!(
        purged >= durable.purged,
        "round {round}: purge to {:?} was durable, the store says {purged:?}",
        durable.purged
    );
    assert!(
        last >= durable.last,
        "round {round}: index {:?} was reported durable, the log ends at {last:?}",
        durable.last
    );
    let vote_term = store.read_vote().await.unwrap().map(|v| v.leader_id().term);
    assert!(
        vote_term >= durable.vote_term,
        "round {round}: vote of term {:?} was durable, the store has {vote_term:?}",
        durable.vote_term
    );
    // One run of consecutive entries right after the purged prefix (a read fails on a hole),
    // each with the contents written for its index and term, terms never going down.
    let entries = store.try_get_log_entries(..).await.unwrap();
    let first = purged.map_or(1, |p| p + 1);
    let expected: Vec<u64> = (first..=last.unwrap_or(0)).collect();
    let got: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(got, expected, "round {round}: not one consecutive run");
    let mut previous_term = 0;
    for e in &entries {
        let term = e.log_id.leader_id.term;
        assert!(
            term >= previous_term,
            "round {round}: term goes down at {e:?}"
        );
        previous_term = term;
        assert_eq!(
            *e,
            entry(term, e.log_id.index),
            "round {round}: wrong contents at index {}",
            e.log_id.index
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_writers_lose_no_durable_write() {
    let seed: u64 = std::env::var("TESTFLEET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_206);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    // libtest names omit the crate name that module_path! starts with.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let child_test = format!("{module}::torture_child_writes_until_killed");
    let mut durable = Durable::default();
    for round in 0..8 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([child_test.as_str(), "--exact", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(TORTURE_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the torture child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Kill at a random moment once it writes: between 1 and 300 durable writes in.
        let writes_before_kill = 1 + rng.below(300);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < writes_before_kill {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("seed {seed} round {round}: the child stopped reporting writes")
                });
            if line.starts_with("durable") {
                seen += 1;
            }
            durable.note(&line);
        }
        // And then a little later still, in the middle of whatever it is doing.
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child cannot finish on its own");
        reader.join().unwrap();
        for line in rx.try_iter() {
            durable.note(&line);
        }
        eprintln!("seed {seed} round {round}: killed after {durable:?}");
        check_reopened(&path, &durable, round).await;
    }
    // The rounds crossed segments: new ones were started and purged ones deleted.
    let seqs: Vec<u64> = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(|e| segment::segment_seq(&e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(
        seqs.iter().max() >= Some(&3) && !seqs.contains(&1),
        "seed {seed}: segments left {seqs:?}"
    );
}

/// A store with entries 1..=6000 in two segments, closed cleanly; returns its path.
async fn written_store(dir: &Path) -> PathBuf {
    let path = dir.join("raft-log");
    let mut store = Store::open(&path).unwrap();
    for start in (1..6000).step_by(100) {
        let entries: Vec<Entry> = (start..start + 100).map(|i| entry(1, i)).collect();
        let (tx, rx) = C::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }
    drop(store);
    assert!(
        segment_path(&path, 2).exists(),
        "the entries should fill one segment"
    );
    // The next segment, made ahead while the second filled, is removed at a clean close.
    let names: Vec<String> = files(&path)
        .into_keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["LOCK", &segment::segment_name(1), &segment::segment_name(2)]
    );
    path
}

fn segment_path(path: &Path, seq: u64) -> PathBuf {
    path.join(segment::segment_name(seq))
}

/// Every file of the store and its contents.
fn files(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Opening must fail, naming the store and the segment, saying it is damaged and what to do,
/// and leave the files as they were.
fn assert_refused_as_damaged(path: &Path, segment: &Path) {
    let before = files(path);
    let err = Store::open(path).expect_err("a damaged store must not open");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let message = err.to_string();
    for needed in [
        path.display().to_string().as_str(),
        &format!("{} is damaged", segment.display()),
        "receives a snapshot from the leader",
    ] {
        assert!(message.contains(needed), "{needed:?} missing: {message}");
    }
    assert!(files(path) == before, "the files were changed");
}

/// A bit flipped in a segment that is not the newest cannot come from a crash (only the
/// newest is ever written): refused with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_in_an_older_segment_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let first = segment_path(&path, 1);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[300_000] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    assert_refused_as_damaged(&path, &first);
}

/// An older segment cut short: refused likewise (the next segment's entries would not follow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_segment_cut_short_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let first = segment_path(&path, 1);
    for cut in [500_000, 1000] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let err = Store::open(&path).expect_err("a segment cut short must not open");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("is damaged"), "{err}");
    }
}

/// A segment whose header was overwritten, and a segment missing between two others, are
/// refused likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_without_its_header_or_a_missing_one_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let newest = segment_path(&path, 2);
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[..64].fill(0x5A);
    std::fs::write(&newest, &bytes).unwrap();
    assert_refused_as_damaged(&path, &newest);

    std::fs::rename(&newest, segment_path(&path, 3)).unwrap();
    assert_refused_as_damaged(&path, &newest);
}

/// The oldest segment of a log that was never purged, removed by hand: refused likewise (only
/// a purge deletes segments, and the last one stays on record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_segment_of_a_never_purged_log_removed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let first = segment_path(&path, 1);
    std::fs::remove_file(&first).unwrap();
    assert_refused_as_damaged(&path, &first);
}

/// What an interrupted write leaves at the end of the newest segment (a record cut short,
/// bytes that fail their checksum) was never acknowledged: it is discarded and zeroed, and
/// the store goes on after the last whole record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_an_interrupted_write_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let newest = segment_path(&path, 2);
    let bytes = std::fs::read(&newest).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    // Half a record: a length and checksum, then some of its bytes.
    let mut torn = Vec::new();
    segment::push_entry(&mut torn, 6001, &[0x77; 300]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    file.write_all_at(&torn[..torn.len() / 2], end as u64)
        .unwrap();
    // And an old whole record further on, which must not come back.
    file.write_all_at(&torn, end as u64 + 4096).unwrap();
    drop(file);

    let mut store = Store::open(&path).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(6000));
    let after = std::fs::read(&newest).unwrap();
    assert!(
        after[end..].iter().all(|b| *b == 0),
        "the tail was not zeroed"
    );
    append_one(&mut store, 6001).await;
    drop(store);
    let mut store = Store::open(&path).unwrap();
    let entries = store.try_get_log_entries(5991..).await.unwrap();
    assert_eq!(entries.len(), 11);
    assert_eq!(entries[10], entry(1, 6001));
}

/// What a failed write left after the last record (bytes the writer could not make durable)
/// is zeroed before the writer leaves the segment for a new one: only the newest segment may
/// end in an invalid record, so left there, it would read as damage at the next open.
#[test]
fn a_segment_left_after_a_failed_write_ends_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    let (inner, mut active) = open::open_inner::<C>(&path).unwrap();
    let first = active.segment.path.clone();
    let end = active.end;
    let mut torn = Vec::new();
    segment::push_entry(&mut torn, 1, &[0x77; 300]);
    active.segment.file.write_all_at(&torn[..200], end).unwrap();
    active.dirty_to = end + 200;

    inner.start_segment(&mut active).unwrap();
    assert_eq!(active.segment.seq, 2);
    let bytes = std::fs::read(&first).unwrap();
    assert!(
        bytes[end as usize..].iter().all(|b| *b == 0),
        "the failed write's bytes are left"
    );
    drop((inner, active));
    Store::open(&path).expect("the store opens");
}

async fn append_one(store: &mut Store, index: u64) {
    let (tx, rx) = C::oneshot();
    store
        .append(vec![entry(1, index)], IOFlushed::signal(tx))
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
}

/// What a crash while a new store is created leaves behind (a partial `.creating` directory,
/// no store) is cleaned up: the store opens, new and empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_creation_was_interrupted_opens_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft-log");
    let creating = dir.path().join("raft-log.creating");
    std::fs::create_dir(&creating).unwrap();
    std::fs::write(creating.join(segment::segment_name(1)), vec![0x11; 8192]).unwrap();
    let mut store = Store::open(&path).unwrap();
    assert!(!creating.exists(), "the leftover should be gone");
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert_eq!(store.read_vote().await.unwrap(), None);
}

/// A store in the old layout (one redb file, `raft-log.redb`) is converted at the first open:
/// the same entries, vote, last purged and committed log ids; the old file is kept, renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_the_redb_layout_is_converted_at_open() {
    use redb::{Database, TableDefinition};
    const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log_entries");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("raft-log.redb");
    {
        let db = Database::create(&old).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut entries = txn.open_table(ENTRIES).unwrap();
            for i in 11..=30 {
                let bytes = encode(&entry(2, i), "entry").unwrap();
                entries.insert(i, bytes.as_slice()).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let put = |meta: &mut redb::Table<&str, &[u8]>, key, bytes: Vec<u8>| {
                meta.insert(key, bytes.as_slice()).unwrap();
            };
            put(&mut meta, "vote", encode(&vote(2, 3), "vote").unwrap());
            put(
                &mut meta,
                "last_purged_log_id",
                encode(&log_id(1, 10), "id").unwrap(),
            );
            put(
                &mut meta,
                "committed",
                encode(&log_id(2, 25), "id").unwrap(),
            );
            put(
                &mut meta,
                "format_version",
                encode(&1u32, "version").unwrap(),
            );
        }
        txn.commit().unwrap();
    }
    let path = dir.path().join("raft-log");
    let mut store = Store::open(&path).unwrap();
    assert!(!old.exists() && dir.path().join("raft-log.redb.migrated").exists());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(2, 30)));
    assert_eq!(store.read_vote().await.unwrap(), Some(vote(2, 3)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 25)));
    let entries = store.try_get_log_entries(11..=30).await.unwrap();
    assert_eq!(entries, (11..=30).map(|i| entry(2, i)).collect::<Vec<_>>());
    // And it goes on as a store of its own.
    append_one(&mut store, 31).await;
    drop(store);
    let mut store = Store::open(&path).unwrap();
    assert_eq!(
        store
            .get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index),
        Some(31)
    );
}

/// Runs only as the child of `a_kill_while_a_store_is_created_never_leaves_one_that_fails`:
/// creates a store, reports it, and waits to be killed.
#[test]
fn creating_child_creates_a_store() {
    let Some(path) = std::env::var_os(CREATE_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&path)).unwrap();
    say("log store created");
    std::thread::sleep(Duration::from_secs(60));
    drop(store);
}

/// The file a creating child creates; without it, the child test does nothing.
const CREATE_ENV: &str = "TESTFLEET_LOG_STORE_CREATE_FILE";

/// SIGKILLs processes creating a new store at seeded random moments, spread over the time a
/// child takes to start and create it (measured first); whatever is left must open.
#[test]
fn a_kill_while_a_store_is_created_never_leaves_one_that_fails() {
    let mut rng = Rng(7);
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let child_test = format!("{module}::creating_child_creates_a_store");
    let spawn = |path: &Path| {
        Command::new(std::env::current_exe().unwrap())
            .args([child_test.as_str(), "--exact", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CREATE_ENV, path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the creating child")
    };
    // How long a child takes to have its store created (the longest of three).
    let mut full = Duration::ZERO;
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut child = spawn(&dir.path().join("raft-log"));
        // (libtest prints its own text first, on the same line too.)
        let created_line = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("log store created"));
        assert!(created_line, "the child did not report its store");
        full = full.max(started.elapsed());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rounds, mut created) = (24, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log");
        let mut child = spawn(&path);
        let wait = full.mul_f64(1.5 * rng.below(1000) as f64 / 1000.0);
        std::thread::sleep(wait);
        child.kill().unwrap();
        child.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        created += usize::from(out.contains("log store created"));
        runtime.block_on(async {
            let mut store = Store::open(&path)
                .unwrap_or_else(|e| panic!("round {round} (killed after {wait:?}): {e}"));
            assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
        });
    }
    eprintln!(
        "a child creates its store {full:?} after it is started; {created} of {rounds} had \
         when killed"
    );
}
