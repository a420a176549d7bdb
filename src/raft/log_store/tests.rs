//! The segment log store: durability across reopen and abrupt exit, ranges, truncate and
//! purge, and openraft's storage conformance suite with a small in-memory state machine.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

use futures::StreamExt;
use openraft::EntryPayload;
use openraft::Membership;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StoredMembership;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::EntryOf;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::StoredMembershipOf;
use tempfile::TempDir;

use super::*;

openraft::declare_raft_types!(
    /// Test type config: string commands and responses, default node/term/vote types.
    pub TestConfig: D = String, R = String
);

type C = TestConfig;
type Store = LogStore<C>;
type Entry = EntryOf<C>;

fn log_id(term: u64, index: u64) -> LogIdOf<C> {
    openraft::testing::log_id::<C>(term, 1, index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry::new_blank(log_id(term, index))
}

fn normal(term: u64, index: u64, data: &str) -> Entry {
    Entry::new_normal(log_id(term, index), data.to_string())
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    Entry::new_membership(
        log_id(term, index),
        Membership::new_with_defaults(vec![voters], []),
    )
}

fn vote(term: u64, node: u64) -> VoteOf<C> {
    openraft::Vote::new(term, node)
}

/// A fresh store in a directory that does not exist yet (to exercise its creation).
fn fresh() -> (TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft").join("log");
    let store = Store::open(&path).expect("open log store");
    (dir, path, store)
}

/// Appends and waits for the durability callback, like openraft does.
async fn append(store: &mut Store, entries: Vec<Entry>) -> Result<(), io::Error> {
    let (tx, rx) = C::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await
        .expect("append callback was dropped without being called")
}

/// `term`/`index` of a batch of entries.
fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

async fn all_entries(store: &mut Store) -> Vec<Entry> {
    store
        .try_get_log_entries(..)
        .await
        .expect("read all entries")
}

async fn state(store: &mut Store) -> (Option<u64>, Option<u64>) {
    let st = store.get_log_state().await.expect("log state");
    (
        st.last_purged_log_id.map(|l| l.index),
        st.last_log_id.map(|l| l.index),
    )
}

/// Entries 0..=9: index 0 blank, 1 membership, then normal entries "c2".."c9"; term 1 up to
/// index 4, term 2 after.
fn ten_entries() -> Vec<Entry> {
    let mut v = vec![blank(1, 0), membership(1, 1, &[1, 2, 3])];
    for i in 2..10 {
        let term = if i <= 4 { 1 } else { 2 };
        v.push(normal(term, i, &format!("c{i}")));
    }
    v
}

#[tokio::test(flavor = "current_thread")]
async fn append_then_read_back_ranges() {
    let (_dir, _path, mut store) = fresh();
    assert!(all_entries(&mut store).await.is_empty());

    // Two batches: the second must continue the first.
    let entries = ten_entries();
    append(&mut store, entries[..4].to_vec()).await.unwrap();
    append(&mut store, entries[4..].to_vec()).await.unwrap();

    let all = all_entries(&mut store).await;
    assert_eq!(
        all, entries,
        "entries round-trip unchanged, payloads included"
    );

    let got = store.try_get_log_entries(2..5).await.unwrap();
    assert_eq!(ids(&got), vec![(1, 2), (1, 3), (1, 4)]);
    let got = store.try_get_log_entries(..=1).await.unwrap();
    assert_eq!(ids(&got), vec![(1, 0), (1, 1)]);
    let got = store.try_get_log_entries(8..).await.unwrap();
    assert_eq!(ids(&got), vec![(2, 8), (2, 9)]);
    let got = store.try_get_log_entries(8..100).await.unwrap();
    assert_eq!(ids(&got), vec![(2, 8), (2, 9)]);
    let got = store.try_get_log_entries(7..=7).await.unwrap();
    assert_eq!(got, vec![normal(2, 7, "c7")]);
    assert!(store.try_get_log_entries(5..5).await.unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = store.try_get_log_entries(6..3).await.unwrap();
    assert!(reversed.is_empty());
    assert!(store.try_get_log_entries(10..20).await.unwrap().is_empty());

    // The membership entry keeps its config.
    let got = store.try_get_log_entries(1..2).await.unwrap();
    match &got[0].payload {
        EntryPayload::Membership(m) => {
            assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        other => panic!("expected a membership entry, got {other:?}"),
    }

    // A reader taken before a write sees the write.
    let mut reader = store.get_log_reader().await;
    append(&mut store, vec![blank(3, 10)]).await.unwrap();
    let got = reader.try_get_log_entries(9..).await.unwrap();
    assert_eq!(ids(&got), vec![(2, 9), (3, 10)]);
}

#[tokio::test(flavor = "current_thread")]
async fn limited_read_is_bounded_but_never_empty() {
    let (_dir, _path, mut store) = fresh();
    // Four entries of ~600 KiB each: the 1 MiB budget allows two per batch.
    let big = "x".repeat(600 * 1024);
    let entries: Vec<Entry> = (0..4).map(|i| normal(1, i, &big)).collect();
    append(&mut store, entries).await.unwrap();

    let got = store.limited_get_log_entries(0, 4).await.unwrap();
    assert_eq!(ids(&got), vec![(1, 0), (1, 1)]);
    let got = store.limited_get_log_entries(3, 4).await.unwrap();
    assert_eq!(ids(&got), vec![(1, 3)]);
    assert!(
        store
            .limited_get_log_entries(2, 2)
            .await
            .unwrap()
            .is_empty()
    );

    // try_get_log_entries is never limited.
    assert_eq!(store.try_get_log_entries(0..4).await.unwrap().len(), 4);
}

#[tokio::test(flavor = "current_thread")]
async fn log_state_after_append_purge_truncate() {
    let (_dir, _path, mut store) = fresh();
    assert_eq!(state(&mut store).await, (None, None));

    append(&mut store, ten_entries()).await.unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, None);
    assert_eq!(st.last_log_id, Some(log_id(2, 9)));

    store.purge(log_id(1, 3)).await.unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(2, 9)));
    assert_eq!(ids(&all_entries(&mut store).await)[0], (1, 4));

    // A purge that does not move forward changes nothing.
    store.purge(log_id(1, 2)).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(3), Some(9)));

    store.truncate_after(Some(log_id(2, 6))).await.unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(2, 6)));
    assert_eq!(
        ids(&all_entries(&mut store).await),
        vec![(1, 4), (2, 5), (2, 6)]
    );

    // Truncating after the tail is a no-op.
    store.truncate_after(Some(log_id(2, 20))).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(3), Some(6)));

    // Truncating everything that is left: the last log id falls back to the purged one.
    store.truncate_after(Some(log_id(1, 3))).await.unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(1, 3)));
    assert!(all_entries(&mut store).await.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn truncate_none_empties_an_unpurged_log() {
    let (_dir, _path, mut store) = fresh();
    append(&mut store, ten_entries()).await.unwrap();
    store.truncate_after(None).await.unwrap();
    assert_eq!(state(&mut store).await, (None, None));
    // A new history may start again from any index.
    append(&mut store, vec![blank(5, 0)]).await.unwrap();
    assert_eq!(state(&mut store).await, (None, Some(0)));
}

#[tokio::test(flavor = "current_thread")]
async fn vote_persists_across_reopen() {
    let (_dir, path, mut store) = fresh();
    assert_eq!(store.read_vote().await.unwrap(), None);

    store.save_vote(&vote(3, 2)).await.unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote(3, 2)));
    let committed_vote = openraft::Vote::new_committed(4, 1);
    store.save_vote(&committed_vote).await.unwrap();
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(committed_vote));
    drop(reader);
    drop(store);

    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(committed_vote));
}

#[tokio::test(flavor = "current_thread")]
async fn entries_and_committed_persist_across_reopen() {
    let (_dir, path, mut store) = fresh();
    assert_eq!(store.read_committed().await.unwrap(), None);
    append(&mut store, ten_entries()).await.unwrap();
    store.save_committed(Some(log_id(2, 7))).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 7)));
    drop(store);

    let mut store = Store::open(&path).unwrap();
    assert_eq!(all_entries(&mut store).await, ten_entries());
    assert_eq!(state(&mut store).await, (None, Some(9)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 7)));

    // Appending continues after the reopened tail.
    append(&mut store, vec![normal(3, 10, "after reopen")])
        .await
        .unwrap();
    assert_eq!(state(&mut store).await, (None, Some(10)));

    store.save_committed(None).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), None);
}

#[tokio::test(flavor = "current_thread")]
async fn truncate_and_purge_persist_across_reopen() {
    let (_dir, path, mut store) = fresh();
    append(&mut store, ten_entries()).await.unwrap();
    store.purge(log_id(1, 2)).await.unwrap();
    store.truncate_after(Some(log_id(2, 7))).await.unwrap();
    drop(store);

    let mut store = Store::open(&path).unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(st.last_log_id, Some(log_id(2, 7)));
    assert_eq!(
        ids(&all_entries(&mut store).await),
        vec![(1, 3), (1, 4), (2, 5), (2, 6), (2, 7)]
    );
    // A conflicting suffix replaced after a truncate.
    append(&mut store, vec![blank(4, 8)]).await.unwrap();
    assert_eq!(state(&mut store).await, (Some(2), Some(8)));
}

#[tokio::test(flavor = "current_thread")]
async fn purge_everything_then_append_continues() {
    let (_dir, path, mut store) = fresh();
    append(&mut store, ten_entries()).await.unwrap();

    // Purge past the tail, as after installing a snapshot that is ahead of the log.
    store.purge(log_id(3, 15)).await.unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(3, 15)));
    assert_eq!(st.last_log_id, Some(log_id(3, 15)));
    assert!(all_entries(&mut store).await.is_empty());

    // Leaving a hole after the purged entry is refused, and so is going back.
    let err = append(&mut store, vec![blank(3, 17)]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let err = append(&mut store, vec![blank(3, 15)]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(all_entries(&mut store).await.is_empty());

    append(&mut store, vec![blank(3, 16), normal(3, 17, "x")])
        .await
        .unwrap();
    assert_eq!(state(&mut store).await, (Some(15), Some(17)));
    drop(store);

    let mut store = Store::open(&path).unwrap();
    assert_eq!(state(&mut store).await, (Some(15), Some(17)));
    assert_eq!(ids(&all_entries(&mut store).await), vec![(3, 16), (3, 17)]);
}

#[tokio::test(flavor = "current_thread")]
async fn append_refuses_holes_and_overwrites() {
    let (_dir, _path, mut store) = fresh();
    append(&mut store, ten_entries()).await.unwrap();

    // Not consecutive within the batch.
    let err = append(&mut store, vec![blank(3, 10), blank(3, 12)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    // Gap after the tail.
    let err = append(&mut store, vec![blank(3, 11)]).await.unwrap_err();
    assert!(err.to_string().contains("next index must be 10"), "{err}");
    // Overwrite without truncate_after first.
    let err = append(&mut store, vec![blank(3, 9)]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");

    assert_eq!(
        all_entries(&mut store).await,
        ten_entries(),
        "log unchanged"
    );

    // Appending nothing succeeds and still signals the callback.
    append(&mut store, vec![]).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn appended_entries_are_readable_before_they_are_flushed() {
    let (_dir, _path, mut store) = fresh();
    let entries = ten_entries();
    // Many appends queued without waiting for their flushes, as openraft does under load.
    let mut flushes = Vec::new();
    for entry in entries.iter().cloned() {
        let (tx, rx) = C::oneshot();
        store
            .append(vec![entry], IOFlushed::signal(tx))
            .await
            .unwrap();
        flushes.push(rx);
        // Readable as soon as append returns, flushed or not.
        let read = all_entries(&mut store).await;
        assert_eq!(read.last(), entries.get(read.len() - 1));
        assert_eq!(read.len(), flushes.len());
    }
    assert_eq!(state(&mut store).await, (None, Some(9)));
    // A limited read crosses from what is written to what is still pending, in order.
    let limited = store.limited_get_log_entries(0, 10).await.unwrap();
    assert_eq!(limited, entries);
    for flush in flushes {
        flush.await.unwrap().unwrap();
    }
    assert_eq!(all_entries(&mut store).await, entries);
}

/// Queues an append without waiting for its flush; the receiver gets the flush result.
async fn queue(
    store: &mut Store,
    batch: Vec<Entry>,
) -> openraft::type_config::alias::OneshotReceiverOf<C, Result<(), io::Error>> {
    let (tx, rx) = C::oneshot();
    store.append(batch, IOFlushed::signal(tx)).await.unwrap();
    rx
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_append_queued_with_others_fails_alone() {
    let (_dir, path, mut store) = fresh();
    let entries = ten_entries();
    // Queued back to back (the writer takes them in one transaction when it can): a good
    // append, one that would leave a hole, and the good continuation.
    let first = queue(&mut store, entries[..5].to_vec()).await;
    let hole = queue(&mut store, vec![normal(2, 7, "hole")]).await;
    let rest = queue(&mut store, entries[5..].to_vec()).await;
    first.await.unwrap().unwrap();
    let err = hole.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("next index must be 5"), "{err}");
    rest.await.unwrap().unwrap();
    assert_eq!(all_entries(&mut store).await, entries);
    drop(store);
    let mut store = Store::open(&path).unwrap();
    assert_eq!(all_entries(&mut store).await, entries);
}

/// An entry damaged on disk behind the store's back is reported, naming it, not decoded
/// into something else or skipped.
#[tokio::test(flavor = "current_thread")]
async fn reads_report_a_damaged_entry_instead_of_skipping_it() {
    let (_dir, _path, mut store) = fresh();
    append(&mut store, ten_entries()).await.unwrap();

    let (_, loc) = store.inner.log().locs(5, 5).pop().unwrap();
    let garbage = vec![0xFF; loc.len as usize];
    std::os::unix::fs::FileExt::write_all_at(&loc.segment.file, &garbage, loc.offset).unwrap();

    let err = store.try_get_log_entries(3..8).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("corrupt log entry 5"), "{err}");
    // Ranges that do not span it still read fine.
    assert_eq!(store.try_get_log_entries(6..8).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn second_open_of_the_same_file_is_refused_with_the_path() {
    let (_dir, path, store) = fresh();
    let err = Store::open(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    drop(store);
    Store::open(&path).expect("open again once the first handle is gone");
}

#[test]
fn open_reports_an_uncreatable_directory_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("log");
    let err = Store::open(&path).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn inclusive_bounds_normalises_ranges() {
    assert_eq!(inclusive_bounds(&(3..3)), None);
    assert_eq!(inclusive_bounds(&(3..4)), Some((3, 3)));
    assert_eq!(inclusive_bounds(&(3..=4)), Some((3, 4)));
    assert_eq!(inclusive_bounds(&(..)), Some((0, u64::MAX)));
    assert_eq!(inclusive_bounds(&(..0)), None);
    assert_eq!(
        inclusive_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
        None
    );
    assert_eq!(
        inclusive_bounds(&(Bound::Excluded(2), Bound::Included(3))),
        Some((3, 3))
    );
}

// ---- crash test: a child process writes, then exits without closing the database ----

const CRASH_DIR_ENV: &str = "TESTFLEET_LOG_STORE_CRASH_DIR";
const CRASH_MARKER: &str = "log-store-crash-child: about to exit abruptly";
const CRASH_EXIT_CODE: i32 = 86;

/// Runs only as the child of `acknowledged_writes_survive_abrupt_exit` (does nothing otherwise).
#[tokio::test(flavor = "current_thread")]
async fn crash_child_writes_then_exits_abruptly() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let path = PathBuf::from(dir).join("log");
    let mut store = Store::open(&path).unwrap();
    store.save_vote(&vote(7, 1)).await.unwrap();
    append(&mut store, ten_entries()).await.unwrap();
    store.purge(log_id(1, 2)).await.unwrap();
    store.truncate_after(Some(log_id(2, 7))).await.unwrap();
    append(&mut store, vec![normal(7, 8, "acknowledged")])
        .await
        .unwrap();
    // A non-durable committed id becomes durable with the next durable commit.
    store.save_committed(Some(log_id(7, 8))).await.unwrap();
    store.save_vote(&vote(8, 1)).await.unwrap();

    let mut stdout = std::io::stdout();
    writeln!(stdout, "{CRASH_MARKER}").unwrap();
    stdout.flush().unwrap();
    // Like a kill -9 for the store: no destructor runs, so the store is never closed (and,
    // unlike abort(), no core file can land in the working directory).
    std::process::exit(CRASH_EXIT_CODE);
}

#[tokio::test(flavor = "current_thread")]
async fn acknowledged_writes_survive_abrupt_exit() {
    let dir = tempfile::tempdir().unwrap();
    // libtest names omit the crate name that module_path! starts with.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let test_name = format!("{module}::crash_child_writes_then_exits_abruptly");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test_name.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .output()
        .expect("run the crash child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(CRASH_MARKER) && output.status.code() == Some(CRASH_EXIT_CODE),
        "the child should have reached its abrupt exit; status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let mut store = Store::open(&dir.path().join("log")).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote(8, 1)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(7, 8)));
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(st.last_log_id, Some(log_id(7, 8)));
    let all = all_entries(&mut store).await;
    assert_eq!(
        ids(&all),
        vec![(1, 3), (1, 4), (2, 5), (2, 6), (2, 7), (7, 8)]
    );
    assert_eq!(all.last(), Some(&normal(7, 8, "acknowledged")));
}

// ---- openraft's storage conformance suite, with a minimal in-memory state machine ----

#[derive(Default)]
struct MemState {
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    data: Vec<String>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<String>)>,
}

/// Applies entries in memory; a snapshot is the list of applied commands.
#[derive(Clone, Default)]
struct MemStateMachine {
    state: Arc<Mutex<MemState>>,
}

impl RaftSnapshotBuilder<C> for MemStateMachine {
    type SnapshotData = Vec<String>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Vec<String>>, io::Error> {
        let mut st = self.state.lock().unwrap();
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership.clone(),
        };
        let data = st.data.clone();
        st.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<C> for MemStateMachine {
    type SnapshotData = Vec<String>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let st = self.state.lock().unwrap();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures::Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = {
                let mut st = self.state.lock().unwrap();
                st.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => String::new(),
                    EntryPayload::Normal(cmd) => {
                        st.data.push(cmd.clone());
                        cmd
                    }
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                        String::new()
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Vec<String>,
    ) -> Result<(), io::Error> {
        let mut st = self.state.lock().unwrap();
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.data = snapshot.clone();
        st.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Vec<String>>>, io::Error> {
        let st = self.state.lock().unwrap();
        Ok(st.snapshot.clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: data,
        }))
    }
}

struct SuiteBuilder;

impl StoreBuilder<C, Store, MemStateMachine, TempDir> for SuiteBuilder {
    async fn build(&self) -> Result<(TempDir, Store, MemStateMachine), StorageError<C>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("log")).expect("open log store");
        Ok((dir, store, MemStateMachine::default()))
    }
}

/// openraft's own conformance suite (~45 cases; ~10 s, most of it the suite's own sleeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(SuiteBuilder)
        .await
        .expect("openraft storage suite");
}

/// Entries still pending (handed to the writer, not yet on disk) are read from memory when a
/// read asks for nothing else: the same entries, the same byte bound, and a range that also
/// needs the segments (or reaches past the tail, or has a gap) is left to the segment read.
#[tokio::test(flavor = "current_thread")]
async fn a_read_of_pending_entries_only_is_answered_from_memory() {
    let (_dir, _path, mut store) = fresh();
    append(&mut store, vec![normal(1, 1, "on disk")])
        .await
        .unwrap();
    // Pending by hand (as between `append` and the writer's commit): 2..=4.
    let pending: Vec<(u64, Arc<Vec<u8>>)> = (2..=4)
        .map(|i| {
            let entry = normal(1, i, &"x".repeat(100));
            (i, Arc::new(encode(&entry, "test entry").unwrap()))
        })
        .collect();
    store.inner.add_pending(&pending);
    let inner = &store.inner;

    let read = inner.read_pending_only::<C>(2, 4, None).unwrap().unwrap();
    assert_eq!(ids(&read), vec![(1, 2), (1, 3), (1, 4)]);
    // The byte bound stops after the entry that reaches it, as the segment read does.
    let bounded = inner
        .read_pending_only::<C>(2, 4, Some(150))
        .unwrap()
        .unwrap();
    assert_eq!(ids(&bounded), vec![(1, 2), (1, 3)]);
    // Index 1 is on disk only, 5 does not exist: both are the segment read's to answer.
    assert!(inner.read_pending_only::<C>(1, 3, None).unwrap().is_none());
    assert!(inner.read_pending_only::<C>(3, 5, None).unwrap().is_none());
    // Through the reader, the pending entries and the stored one read as one run.
    let all = store.try_get_log_entries(1..=4).await.unwrap();
    assert_eq!(ids(&all), vec![(1, 1), (1, 2), (1, 3), (1, 4)]);

    // A gap in what is pending is not papered over.
    store.inner.remove_pending_for_test(3);
    assert!(
        store
            .inner
            .read_pending_only::<C>(2, 4, None)
            .unwrap()
            .is_none()
    );
}
