//! Raft glue: openraft's type configuration, the log store, the state machine adapter.
//!
//! Every openraft type is kept inside this folder so that an alpha bump of openraft
//! touches one place. The rest of the crate sees [`TypeConfig`], [`RaftNode`] and the
//! storage types.
//!
//! * [`log_store::LogStore`] — the Raft log and vote in redb (fsynced before openraft is
//!   told an entry is durable; truncate and purge are single atomic transactions).
//! * [`state_machine::StateMachine`] — applies committed entries to the pure
//!   [`crate::state::machine::Machine`] at once and materialises them into DuckDB in group
//!   commits.
//! * [`heal`] — opens the state machine at start; a damaged DuckDB file is set aside and
//!   rebuilt from the snapshot and the log.
//! * [`network`] / [`service`] — the two ends of coordinator-to-coordinator Raft RPC (gRPC).
//! * [`leader_watch`] — replaces a leader whose process died in milliseconds instead of
//!   waiting out its lease.
//! * [`replica_check`] — this node's digests of its DuckDB tables at replica-check markers.
//! * [`stages`] — per-entry stage timestamps of the commit path (`--stage-clock`), for
//!   `bench commit --breakdown`.

pub mod heal;
pub mod leader_watch;
pub mod log_store;
pub mod network;
pub mod replica_check;
pub mod service;
pub mod stages;
pub mod state_machine;

use crate::state::command::Command;
use crate::state::machine::Reply;

openraft::declare_raft_types!(
    /// The Raft types of Testfleet's coordinators: commands in, replies out.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A running Raft node of a coordinator.
pub type RaftNode = openraft::Raft<TypeConfig, state_machine::StateMachine>;
