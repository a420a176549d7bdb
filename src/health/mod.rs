//! Health: is each worker alive, and is this coordinator itself fit to lead
//! (ARCHITECTURE.md § Failure detection, ARCHITECTURE.md § Self-health).
//!
//! # Worker failure detection is leader soft state
//!
//! Workers heartbeat to the leader over their session stream every `heartbeat_interval`
//! (1 s by default). Those heartbeats are **not** replicated: 10 000 workers at 1 Hz would
//! drown the Raft log. The leader keeps last-seen times, inter-arrival histories and session
//! state in memory, in a [`detector::Detector`], and only what it concludes — a worker turning
//! suspect, failed, or alive again — becomes a command (`SetWorkerStatus { from, to, reason,
//! at }`, ARCHITECTURE.md § Commands). [`detector::Liveness::status`] names the replicated
//! status each liveness is proposed as. Losing the detector loses nothing that matters: a new
//! leader builds a fresh one.
//!
//! # The detector is pure
//!
//! [`detector::Detector`] reads no clock and does no I/O. Every event carries `now`:
//!
//! * [`detector::Detector::heartbeat`], [`detector::Detector::session_opened`] and
//!   [`detector::Detector::session_closed`] come from the worker sessions, and return the
//!   transition they caused, if any (a dropped stream makes a worker suspect at once; a
//!   heartbeat or a new session brings a suspect or failed worker back);
//! * [`detector::Detector::tick`] returns the transitions whose deadlines have passed — the
//!   suspicion and failure points of the rule documented in [`detector`];
//! * [`detector::Detector::next_deadline`] tells the driver exactly when to call `tick` next,
//!   so it sleeps until then (or until the next event) instead of polling.
//!
//! It is tested with logical time only (`base + Duration`), so every scenario reproduces.
//!
//! # The driver and leadership
//!
//! The health monitor runs only on the leader, like every loop that decides
//! (ARCHITECTURE.md § The one rule). On election it builds a detector from the applied state
//! ([`detector::Detector::track`] each known worker with its replicated status) and calls
//! [`detector::Detector::leader_changed`]: every worker's deadline starts afresh and nobody
//! can fail before the `grace` period ends, so a failover — during which every worker loses
//! its stream and reconnects — never mass-fails the fleet. Each transition is proposed with
//! `from` = the status the leader believes is current; a stale one is rejected by apply, never
//! applied twice. What happens to a failed worker afterwards (requeueing its tasks, recovery
//! attempts) is the recovery planner's business; a heartbeat from a failed worker is reported
//! as Failed → Alive and the leader decides what to make of it.
//!
//! # Coordinator self-health
//!
//! [`sampler`] measures this coordinator's own resources (CPU, memory, disk, descriptors,
//! request error rate) and judges whether it is fit to lead; a leader whose health is critical
//! hands leadership over (ARCHITECTURE.md § Self-health). Samples are replicated as
//! `HealthSample` commands. [`healing`] decides, from each sample, what the node does about
//! its health: warn, relieve disk or memory pressure, hand leadership over.

pub mod detector;
pub mod healing;
pub mod sampler;
