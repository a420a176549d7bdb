//! openraft's storage conformance suite against our redb log store and DuckDB state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use testfleet::raft::TypeConfig;
use testfleet::raft::log_store::LogStore;
use testfleet::raft::state_machine::StateMachine;
use testfleet::state::store::DbSettings;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<TypeConfig>, StateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log")).expect("open log store");
        let settings = DbSettings {
            threads: 1,
            memory_limit: "256MB".into(),
        };
        let sm = StateMachine::open(
            &dir.path().join("state.duckdb"),
            &dir.path().join("snapshots"),
            &settings,
        )
        .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.expect("storage conformance");
}
