//! The benchmarks behind `testfleet bench ...`: each starts what it needs (an in-process
//! coordinator, or coordinator and worker processes through [`crate::demo::launch`]), loads it
//! through the same client calls a user's commands make, and prints a table or, with
//! `-o json`, one JSON document.
//!
//! * [`commit`] (`bench commit`): commit throughput and latency of `Bench` commands end to
//!   end over gRPC, for several writer counts, with the disk's 4 KiB append + fsync latency
//!   beside it; in-process single node, a local cluster (`--nodes`), or any cluster
//!   (`--coordinator`), open, with tokens, or with tokens and mutual TLS (`--security`).
//! * [`breakdown`] (`bench commit --nodes N --breakdown`): one commit split into its stages
//!   (append, fsync, replication, apply, reply) from every node's stage clock.
//! * [`tasks`] (`bench tasks`): trivial tasks end to end on a local cluster: throughput,
//!   dispatch latency at full and half load, a worker's memory, the scheduler's pick time;
//!   with `--queued SIZES`, a single coordinator's memory per queued task instead.
//! * [`recovery`] (`bench recovery`): a worker SIGKILLed while it runs tasks, until its tasks
//!   are requeued and until they finished on another worker.
//! * [`reconnect`] (`bench reconnect`): the leader SIGKILLed, until every worker of a large
//!   fleet holds a session with the new leader.
//! * [`failover`] (`bench failover`): the leader SIGKILLed or paused, until a new leader is
//!   elected and until the first write is acknowledged.
//! * [`catchup`] (`bench catchup`): a restarted follower, and one that was down while N
//!   commands were committed, until each has applied the leader's commit index, at several
//!   sizes of state (log replay, snapshot install), with the state's size on disk.
//! * [`breaker`] (`bench breaker`, `./run_circuit_breaker_benchmark.sh`): the same job with and
//!   without circuit breakers while one worker suffers each failure type.
//! * [`pytest`] (`bench pytest`): a pytest suite directly, with pytest-xdist, and through a
//!   local fleet without and with a timing history: wall times, shard balance, outcomes.
//! * [`claims`] (`bench claims`): the figures the replaced system claimed — recovery, and a
//!   coordinator failure with and without HA — from three checked chaos runs.
//! * [`peers`] (`bench peers etcd`, `bench peers celery`): Testfleet side by side with etcd's
//!   commits and with Celery + Redis's tasks, started and measured in one run, alternating.
//!
//! Shared by several: [`load`], the closed-loop writers (`bench commit`, `bench peers etcd`),
//! and [`cpu`], the servers' CPU time read from `/proc/PID/stat`.
//!
//! Results go in `BENCHMARKS.md`, each with the command line that reruns it and the machine it
//! ran on, so that a later change can be measured the same way.

pub mod breakdown;
pub mod breaker;
pub mod catchup;
pub mod claims;
pub mod commit;
pub mod cpu;
pub mod failover;
pub mod load;
pub mod peers;
pub mod pytest;
pub mod reconnect;
pub mod recovery;
pub mod tasks;

/// The median of `values` (the mean of the two middle values for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
