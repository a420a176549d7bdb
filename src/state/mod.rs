//! Replicated state: the command catalogue, the pure state machine, and its DuckDB store.
//!
//! # The one rule
//!
//! Every change to what the system knows — a worker's status, a job submitted, a task
//! assigned, finished or requeued, a recovery decision, a breaker transition — is a
//! [`command::Command`] appended to the Raft log. Nothing changes replicated state any other
//! way. Each node applies the committed log in order:
//!
//! ```text
//!   entry ──▶ Machine::apply(command) ──▶ Reply (to the proposer)
//!                     │
//!                     └─ Changes (keys of changed rows, appended history rows)
//!                               │
//!   end of an apply call ──▶ Store::commit(changes + last_applied + membership)
//!                               one DuckDB transaction, then responders are answered
//! ```
//!
//! # Determinism
//!
//! [`machine::Machine`] is pure: no I/O, no clock, no randomness. Timestamps travel inside
//! commands; history row ids come from counters advanced in apply (never from the
//! proposer, since a new leader may commit entries an old one proposed). A command that
//! cannot apply is rejected with a reason, identically on every node, and the rejection
//! counts as applied. Failures that are not deterministic — the disk, DuckDB — are
//! [`error::StoreError`]s: they stop the node instead of skipping the entry.
//!
//! # Materialisation
//!
//! [`store::Store`] keeps DuckDB's tables equal to the machine's view: the rows named in
//! [`machine::Changes`] are written in bulk (Appender into staging tables, one merge per
//! table), never a statement per row. On start the machine is rebuilt from the tables and
//! openraft replays the log after `raft_meta.last_applied`. Snapshots are every replicated
//! table's rows ([`store::SnapshotImage`]); installing one replaces them in one transaction.

pub mod command;
pub mod digest;
pub mod error;
pub mod exit;
pub mod limits;
pub mod load;
pub mod machine;
pub mod rows;
pub mod schema;
pub mod store;
pub mod view;
