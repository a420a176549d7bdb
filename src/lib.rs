//! Testfleet runs test suites across a fleet of workers and keeps them running when machines
//! fail. Coordinators form a Raft cluster (openraft); every decision is a command in the
//! log, applied into DuckDB on every node.
//!
//! Where to start: [`state`] (the replicated state and its rules), [`raft`] (consensus
//! glue), [`coordinator`] (one node and its services), [`cli`] (the client commands).
//! [`bench`](mod@bench) and [`demo`] run real clusters of processes to measure and show them.

pub mod auth;
pub mod bench;
pub mod capabilities;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod demo;
pub mod embed;
pub mod health;
pub mod http;
#[cfg(feature = "negative-controls")]
pub mod negative;
pub mod plan;
pub mod query;
pub mod raft;
pub mod recovery;
pub mod scheduler;
pub mod state;
pub mod viz;
pub mod worker;

/// Generated client-facing gRPC API (`proto/fleet.proto`).
pub mod proto {
    tonic::include_proto!("testfleet.v1");
}

/// Generated coordinator-to-coordinator Raft API (`proto/raft.proto`).
pub mod raft_proto {
    tonic::include_proto!("testfleet.raft.v1");
}
