//! `testfleet chaos` (in progress): seeded fault runs against a real local cluster, judged by
//! a history checker.
//!
//! A run submits a workload whose every task has an outcome known in advance, records what
//! each client was told ([`checker::History`]), injects faults, lets the cluster settle, reads
//! every node's final rows and hands both to [`checker::check`]. The checker is pure and is
//! built first, so that what it can catch is shown on hand-made histories before any run
//! relies on it.

pub mod checker;
pub mod netns;
pub mod probe;
pub mod report;
pub mod resources;
pub mod run;
pub mod workload;
