//! Integration tests: one test binary (each binary that links DuckDB costs ~5 GB to link),
//! grouped by topic.

mod auth;
mod auto_recovery;
mod breakers;
mod capabilities;
mod chaos;
mod cli_input;
mod cluster;
mod cluster_check;
mod cluster_process;
mod conformance;
mod crash_restart;
mod fast_failover;
mod ha;
mod heal;
mod io_fault;
mod jobs_cli;
mod jobs_e2e;
mod limits;
mod logs;
mod placement;
mod reads_cli;
mod recovery;
mod replication;
mod requeue_pacing;
mod snapshot;
mod sql_sandbox;
mod support;
mod third_party;
mod tls;
mod viz;
mod worker_drain;
mod worker_faults;
mod worker_identity;
mod worker_leave;
