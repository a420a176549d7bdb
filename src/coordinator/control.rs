//! The client-facing `Control` gRPC service of a coordinator.
//!
//! * `Status` answers from this node's own Raft metrics, so it works on any member, even
//!   one that lost its leader.
//! * `Query` runs a read-only SQL statement on this node's DuckDB copy (stale by
//!   replication lag). With `consistent`, the leader first confirms its leadership with a
//!   quorum and waits until it has applied everything committed; a follower forwards such a
//!   query to the leader. Queries run on the blocking pool, at most
//!   [`MAX_CONCURRENT_QUERIES`] at a time, each under [`query::Limits`] (DuckDB is
//!   interrupted at the time limit), so a heavy query cannot hold up the node's own work.
//! * `ProposeBench` appends a `Bench` command — the only way to write an arbitrary command —
//!   and answers once it is applied. A follower forwards it to the leader.
//! * `StartCheck` appends a replica-check marker (forwarded to the leader like any write);
//!   `GetCheckDigest` answers from this node's own results of it
//!   ([`crate::raft::replica_check`]), so a client asks every member for its own.
//!
//! * `DrainWorker` and `RemoveWorker` are an operator's changes to a worker
//!   (`testfleet workers drain|undrain|rm`), forwarded to the leader like any write; apply
//!   decides (a removal is refused while the worker holds tasks, unless forced) and the reply
//!   describes the worker as the leader then holds it.
//!
//! This file is the edge: openraft errors become `tonic::Status` here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::leadership::Leadership;
use super::{Coordinator, FORWARDED, forwarded};
use crate::proto::control_client::ControlClient;
use crate::proto::control_server::{Control, ControlServer};
use crate::proto::{
    AddNodeRequest, FetchSnapshotRequest, MembershipReply, RemoveNodeRequest, SnapshotReply,
    SnapshotRequest, StageRow, StageTimesReply, StageTimesRequest,
};
use crate::proto::{
    BenchReply, BenchRequest, BreakerChange, BreakerInfo, BreakerList, CheckDigestReply,
    CheckDigestRequest, CheckState, DrainWorkerRequest, HealthAck, HealthReport,
    ListBreakersRequest, Member, NodeStatus, QueryReply, QueryRequest, RecoveryReport,
    RemoveWorkerRequest, SetBreakerRequest, StartCheckReply, StartCheckRequest, StatusRequest,
    TableDigest, TransferLeaderReply, TransferLeaderRequest, WorkerChangeReply,
};
use crate::query;
use crate::raft::replica_check::Answer;
use crate::raft::stages::Stage;
use crate::recovery::RecoveryLevel;
use crate::recovery::fleet::OperatorAction;
use crate::state::command::{Command, SYSTEM_SCOPE, Timestamp, worker_scope};
use crate::state::limits;
use crate::state::machine::Reply;

/// Queries one node runs at once; more wait for a turn, up to their time limit.
pub const MAX_CONCURRENT_QUERIES: usize = 2;

/// The `Control` service of one node.
pub struct ControlService {
    node: Arc<Coordinator>,
    /// Turns to run a query ([`MAX_CONCURRENT_QUERIES`]).
    queries: Arc<Semaphore>,
}

/// The tonic server for [`ControlService`].
pub fn server(node: Arc<Coordinator>) -> ControlServer<ControlService> {
    ControlServer::new(ControlService {
        node,
        queries: Arc::new(Semaphore::new(MAX_CONCURRENT_QUERIES)),
    })
    .max_decoding_message_size(MAX_CONTROL_MESSAGE)
}

/// The largest control request (a query, a health report, a bench payload).
pub const MAX_CONTROL_MESSAGE: usize = 1024 * 1024;

/// openraft's role name as shown to users.
pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// This node's status, as `Control.Status` answers it and `/api/status` shows it.
pub fn node_status(node: &Coordinator) -> NodeStatus {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, member)| Member {
            id: *id,
            addr: member.addr.clone(),
            voter: voters.contains(id),
            // The leader tracks how far each follower's log matches its own.
            matched: match &metrics.replication {
                Some(_) if *id == metrics.id => metrics.last_log_index,
                Some(replication) => replication
                    .get(id)
                    .and_then(|m| m.as_ref().map(|l| l.index)),
                None => None,
            },
            millis_since_heard: metrics
                .heartbeat
                .as_ref()
                .filter(|_| *id != metrics.id)
                .and_then(|beats| beats.get(id).cloned().flatten())
                .map(|at| openraft::Instant::elapsed(&*at).as_millis() as u64),
        })
        .collect();
    let leader_addr = metrics
        .current_leader
        .and_then(|id| membership.get_node(&id).map(|n| n.addr.clone()))
        .unwrap_or_default();
    let health = node
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    NodeStatus {
        node_id: metrics.id,
        role: role_name(metrics.state).to_string(),
        term: metrics.current_term,
        leader_id: metrics.current_leader,
        leader_addr,
        last_applied: metrics.last_applied.as_ref().map(|l| l.index),
        last_log_index: metrics.last_log_index,
        purged_index: metrics.purged.as_ref().map(|l| l.index),
        committed: metrics.local_committed.as_ref().map(|l| l.index),
        members,
        millis_since_quorum_ack: metrics
            .last_quorum_acked
            .as_ref()
            .map(|at| openraft::Instant::elapsed(&**at).as_millis() as u64),
        db_path: node.config().db_path.display().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance: node.instance(),
        name: node.config().name.clone().unwrap_or_default(),
        health_level: health
            .as_ref()
            .map_or(String::new(), |h| h.level_name().to_string()),
        health_at_us: health.as_ref().map(|h| h.at.micros()),
        health_reasons: health.map(|h| h.reasons).unwrap_or_default(),
    }
}

impl ControlService {
    /// A client for the leader named by a `ForwardToLeader`, unless this request was
    /// already forwarded once.
    async fn leader_client<T>(
        &self,
        request: &Request<T>,
        leader: Option<(u64, String)>,
    ) -> Result<ControlClient<crate::auth::AuthChannel>, Status> {
        if request.metadata().get(FORWARDED).is_some() {
            return Err(Status::unavailable(
                "this node is not the leader and the request was already forwarded once; retry",
            ));
        }
        let Some((id, addr)) = leader else {
            return Err(Status::unavailable(
                "no leader is known right now (an election may be in progress); retry shortly",
            ));
        };
        let channel = self.node.forwarding_channel(&addr).map_err(|e| {
            Status::unavailable(format!(
                "cannot reach leader {id} at {addr}: {}",
                e.message()
            ))
        })?;
        Ok(ControlClient::new(channel))
    }

    /// Whether this node knows the worker as drained.
    fn drained(&self, worker: &str) -> bool {
        (self.node.state()).with_machine(|m| m.worker(worker).is_some_and(|w| w.drain.is_some()))
    }

    /// The reply to an operator's change of `worker`, once apply answered `reply`.
    fn worker_changed(
        &self,
        worker: &str,
        reply: Reply,
        drained_before: bool,
    ) -> Result<WorkerChangeReply, Status> {
        if let Reply::Rejected { reason } = reply {
            return Err(if reason.starts_with("unknown worker") {
                Status::not_found(format!(
                    "no worker is named {worker:?} (`testfleet workers --all` lists them)"
                ))
            } else {
                Status::failed_precondition(reason)
            });
        }
        let requeued = match &reply {
            Reply::Many(items) => items.len() as u32,
            _ => 0,
        };
        let (status, drained, holding) = (self.node.state())
            .with_machine(|m| {
                let w = m.worker(worker)?;
                let holding = m.held_by(worker).count() as u32;
                Some((w.status.as_str().to_string(), w.drain.is_some(), holding))
            })
            .ok_or_else(|| Status::not_found(format!("no worker is named {worker:?}")))?;
        let unchanged = drained == drained_before && requeued == 0 && status != "left";
        Ok(WorkerChangeReply {
            worker_id: worker.to_string(),
            status,
            drained,
            holding,
            requeued,
            unchanged,
        })
    }

    /// Appends an operator's change of `worker` on this leader and describes the worker after
    /// it; apply's refusal is the error.
    async fn operator_change(
        &self,
        worker: &str,
        command: Command,
    ) -> Result<WorkerChangeReply, Status> {
        limits::check(&command).map_err(Status::invalid_argument)?;
        let before = self.drained(worker);
        match self.node.write(command).await {
            Ok(response) => self.worker_changed(worker, response.data, before),
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// Appends an operator's change of a worker (`command`) and describes the worker after it;
    /// a follower hands the request to the leader with `forward`.
    async fn change_worker<T, F, Fut>(
        &self,
        request: Request<T>,
        command: Command,
        forward: F,
    ) -> Result<Response<WorkerChangeReply>, Status>
    where
        F: FnOnce(ControlClient<crate::auth::AuthChannel>, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<WorkerChangeReply>, Status>>,
    {
        let worker = match &command {
            Command::DrainWorker { worker, .. } | Command::RemoveWorker { worker, .. } => {
                worker.clone()
            }
            _ => return Err(Status::internal("not a change of a worker")),
        };
        limits::check(&command).map_err(Status::invalid_argument)?;
        let before = self.drained(&worker);
        match self.node.write(command).await {
            Ok(response) => Ok(Response::new(self.worker_changed(
                &worker,
                response.data,
                before,
            )?)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = self.leader_of(f.leader_id, f.leader_node.map(|n| n.addr));
                let client = self.leader_client(&request, leader).await?;
                forward(client, forwarded(request.into_inner())).await
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// This node's leadership, or a client of the leader to forward `request` to.
    async fn leading<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Result<Arc<Leadership>, ControlClient<crate::auth::AuthChannel>>, Status> {
        if let Some(leadership) = self.node.leadership() {
            return Ok(Ok(leadership));
        }
        let leader_id = self.node.metrics().current_leader;
        let leader = self.leader_of(leader_id, None);
        Ok(Err(self.leader_client(request, leader).await?))
    }

    /// The breaker list of this leader.
    fn breakers(&self, leadership: &Leadership) -> BreakerList {
        let now = Timestamp::now();
        let (enabled, snapshots) = leadership.with_breakers(|b, _| (b.enabled(), b.snapshots(now)));
        let recovery = leadership.recovery.as_ref();
        let level = recovery.and_then(|r| r.level());
        let policy = recovery.map(|r| r.current_policy());
        BreakerList {
            enabled,
            recovery_level: match level {
                Some(level) => crate::recovery::planner::level_name(level),
                None if recovery.is_none() => "off",
                None => "base",
            }
            .to_string(),
            max_recovery_attempts: policy.as_ref().map_or(0, |p| p.max_recovery_attempts),
            recovery_interval_ms: policy
                .as_ref()
                .map_or(0, |p| p.recovery_interval.as_millis() as u64),
            breakers: (snapshots.into_iter())
                .map(|(scope, s)| BreakerInfo {
                    scope,
                    state: s.state.to_string(),
                    since_us: s.since.0,
                    failure_rate: s.failure_rate,
                    calls: s.calls_in_window as u64,
                    failures: s.failures_in_window as u64,
                    rejected: s.rejected_calls,
                    trials_in_flight: s.trials_in_flight,
                    reopens: s.reopens,
                    next_trial_at_us: s.next_trial_at.map_or(0, |t| t.0),
                })
                .collect(),
        }
    }

    fn leader_of(&self, leader_id: Option<u64>, addr: Option<String>) -> Option<(u64, String)> {
        let id = leader_id?;
        let addr = addr.or_else(|| self.node.peer_addr(id).map(str::to_string))?;
        Some((id, addr))
    }
}

/// This node's Raft has stopped: for a client, this coordinator is unavailable (it should try
/// another one), not a request that failed.
fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "this node's Raft has stopped ({e}); use another coordinator"
    ))
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(node_status(&self.node)))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        let sql = request.get_ref().sql.clone();
        query::check_read_only(&sql).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let requested = Duration::from_millis(u64::from(request.get_ref().timeout_ms));
        let limits = query::Limits {
            timeout: if requested.is_zero() {
                query::DEFAULT_TIMEOUT
            } else {
                requested.min(query::DEFAULT_TIMEOUT)
            },
            ..query::Limits::default()
        };
        if request.get_ref().consistent {
            // Confirming leadership waits on openraft, which sets no limit of its own: a chaos
            // run saw a consistent read on a leader whose followers kept crashing never
            // answered. The query's own time limit bounds the wait.
            let confirmed = tokio::time::timeout(
                limits.timeout,
                self.node.raft().ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "cannot confirm leadership within {} ms (a majority of the coordinators \
                     may be down); retry once the cluster has a quorum",
                    limits.timeout.as_millis()
                ))
            })?;
            match confirmed {
                Ok(_) => {}
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    let leader = self.leader_of(f.leader_id, f.leader_node.map(|n| n.addr));
                    let mut client = self.leader_client(&request, leader).await?;
                    return client.query(forwarded(request.into_inner())).await;
                }
                Err(RaftError::APIError(e)) => {
                    return Err(Status::unavailable(format!(
                        "cannot confirm leadership: {e}"
                    )));
                }
                Err(RaftError::Fatal(e)) => return Err(fatal(e)),
            }
        }
        if request.get_ref().consistent {
            // Everything applied must be in DuckDB before a linearizable read of it.
            let state = self.node.state().clone();
            tokio::task::spawn_blocking(move || state.flush())
                .await
                .map_err(|e| Status::internal(format!("flush task failed: {e}")))?
                .map_err(|e| Status::internal(format!("cannot write applied entries: {e}")))?;
        }
        let turn = match tokio::time::timeout(limits.timeout, self.queries.clone().acquire_owned())
            .await
        {
            Ok(Ok(turn)) => turn,
            Ok(Err(_)) => return Err(Status::internal("the query queue is closed")),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "this node is busy: {MAX_CONCURRENT_QUERIES} queries were running for all of \
                     {} ms; retry later",
                    limits.timeout.as_millis()
                )));
            }
        };
        let last_applied = self.node.state().last_applied_index().unwrap_or(0);
        // Opening a reader waits for a DuckDB flush in progress (the flusher runs at a low
        // priority and may take a while on a loaded machine), and a query blocks up to its
        // time limit: never on a runtime thread.
        let state = self.node.state().clone();
        let result = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let reader = state
                .reader()
                .map_err(|e| Status::internal(format!("cannot open a read connection: {e}")))?;
            query::run_query_with(&reader, &sql, limits)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))??;
        let rows_json = result
            .rows
            .iter()
            .map(|row| serde_json::to_string(row).unwrap_or_else(|_| "[]".to_string()))
            .collect();
        Ok(Response::new(QueryReply {
            columns: result.columns,
            column_types: result.column_types,
            rows_json,
            last_applied,
        }))
    }

    async fn propose_bench(
        &self,
        request: Request<BenchRequest>,
    ) -> Result<Response<BenchReply>, Status> {
        let payload = request.get_ref().payload.clone();
        let command = Command::Bench { payload };
        limits::check(&command).map_err(Status::invalid_argument)?;
        let proposed = crate::raft::stages::now_us();
        match self.node.write(command).await {
            Ok(response) => {
                let index = response.log_id.index;
                let clock = &self.node.stages;
                clock.record_at(index, index, Stage::Proposed, proposed);
                clock.record(index, index, Stage::Replied);
                Ok(Response::new(BenchReply {
                    log_index: index,
                    term: response.log_id.leader_id.term,
                }))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = self.leader_of(f.leader_id, f.leader_node.map(|n| n.addr));
                let mut client = self.leader_client(&request, leader).await?;
                client.propose_bench(forwarded(request.into_inner())).await
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    async fn stage_times(
        &self,
        request: Request<StageTimesRequest>,
    ) -> Result<Response<StageTimesReply>, Status> {
        let r = request.get_ref();
        if r.last_index < r.first_index {
            return Err(Status::invalid_argument(format!(
                "last_index {} is before first_index {}",
                r.last_index, r.first_index
            )));
        }
        let clock = &self.node.stages;
        let rows = clock
            .read(r.first_index, r.last_index)
            .into_iter()
            .map(|(index, at)| StageRow {
                index,
                at_us: at.to_vec(),
            })
            .collect();
        Ok(Response::new(StageTimesReply {
            enabled: clock.enabled(),
            node_id: self.node.node_id(),
            rows,
        }))
    }

    async fn report_health(
        &self,
        request: Request<HealthReport>,
    ) -> Result<Response<HealthAck>, Status> {
        let r = request.get_ref();
        let command = Command::HealthSample {
            node: r.node_id,
            cpu: r.cpu,
            mem_bytes: r.mem_bytes,
            disk_free_bytes: r.disk_free_bytes,
            net_errors: r.net_errors,
            error_rate: r.error_rate,
            at: Timestamp(r.at_us),
        };
        limits::check(&command).map_err(Status::invalid_argument)?;
        match self.node.write(command).await {
            Ok(response) => Ok(Response::new(HealthAck {
                log_index: response.log_id.index,
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = self.leader_of(f.leader_id, f.leader_node.map(|n| n.addr));
                let mut client = self.leader_client(&request, leader).await?;
                client.report_health(forwarded(request.into_inner())).await
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }
    async fn report_recovery(
        &self,
        request: Request<RecoveryReport>,
    ) -> Result<Response<HealthAck>, Status> {
        let r = request.get_ref();
        let command = Command::RecordSystemRecovery {
            system_status: r.system_status.clone(),
            success: r.success,
            affected_workers: r.affected_workers,
            affected_tasks: r.affected_tasks,
            details_json: r.details_json.clone(),
            at: Timestamp(r.at_us),
        };
        limits::check(&command).map_err(Status::invalid_argument)?;
        match self.node.write(command).await {
            Ok(response) => Ok(Response::new(HealthAck {
                log_index: response.log_id.index,
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = self.leader_of(f.leader_id, f.leader_node.map(|n| n.addr));
                let mut client = self.leader_client(&request, leader).await?;
                client
                    .report_recovery(forwarded(request.into_inner()))
                    .await
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    async fn start_check(
        &self,
        request: Request<StartCheckRequest>,
    ) -> Result<Response<StartCheckReply>, Status> {
        let id = request.get_ref().check_id.clone();
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("the check id is empty"));
        }
        let command = Command::CheckReplicas {
            id: id.clone(),
            at: Timestamp::now(),
        };
        limits::check(&command).map_err(Status::invalid_argument)?;
        // Proposed on its own, never batched: only a top-level entry is a check marker.
        match self.node.write(command).await {
            Ok(response) => Ok(Response::new(StartCheckReply {
                check_id: id,
                log_index: response.log_id.index,
                term: response.log_id.leader_id.term,
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = self.leader_of(f.leader_id, f.leader_node.map(|n| n.addr));
                let mut client = self.leader_client(&request, leader).await?;
                client.start_check(forwarded(request.into_inner())).await
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    async fn drain_worker(
        &self,
        request: Request<DrainWorkerRequest>,
    ) -> Result<Response<WorkerChangeReply>, Status> {
        let r = request.get_ref();
        let command = Command::DrainWorker {
            worker: r.worker_id.clone(),
            drain: r.drain,
            reason: r.reason.clone(),
            at: Timestamp::now(),
        };
        self.change_worker(request, command, |mut leader, request| async move {
            leader.drain_worker(request).await
        })
        .await
    }

    async fn list_breakers(
        &self,
        request: Request<ListBreakersRequest>,
    ) -> Result<Response<BreakerList>, Status> {
        match self.leading(&request).await? {
            Ok(leadership) => Ok(Response::new(self.breakers(&leadership))),
            Err(mut leader) => leader.list_breakers(forwarded(request.into_inner())).await,
        }
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        if let Err(mut leader) = self.leading(&request).await? {
            return leader
                .transfer_leader(forwarded(request.into_inner()))
                .await;
        }
        super::transfer::transfer(&self.node, request.get_ref().to)
            .await
            .map(Response::new)
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        if let Err(mut leader) = self.leading(&request).await? {
            return leader.add_node(forwarded(request.into_inner())).await;
        }
        super::membership::add(&self.node, request.get_ref())
            .await
            .map(Response::new)
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        if let Err(mut leader) = self.leading(&request).await? {
            return leader.remove_node(forwarded(request.into_inner())).await;
        }
        super::membership::remove(&self.node, request.get_ref().id)
            .await
            .map(Response::new)
    }

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotReply>, Status> {
        if let Err(mut leader) = self.leading(&request).await? {
            return leader.snapshot(forwarded(request.into_inner())).await;
        }
        super::membership::snapshot(&self.node)
            .await
            .map(Response::new)
    }

    async fn recover_worker(
        &self,
        request: Request<crate::proto::RecoverWorkerRequest>,
    ) -> Result<Response<WorkerChangeReply>, Status> {
        let leadership = match self.leading(&request).await? {
            Ok(leadership) => leadership,
            Err(mut leader) => {
                return leader.recover_worker(forwarded(request.into_inner())).await;
            }
        };
        let r = request.into_inner();
        let level = match r.level.as_str() {
            "low" => RecoveryLevel::Low,
            "medium" | "" => RecoveryLevel::Medium,
            "high" => RecoveryLevel::High,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown recovery level {other:?}: use low, medium or high"
                )));
            }
        };
        let Some(recovery) = leadership.recovery.as_ref() else {
            return Err(Status::failed_precondition(
                "auto-recovery is disabled on this cluster (--disable-auto-recovery): nothing \
                 would carry the recovery out",
            ));
        };
        if let Some(attempt) = recovery.working_on(&r.worker) {
            let now = attempt.map_or("waiting for its next attempt".to_string(), |(n, s)| {
                format!("attempt {n}, {s}")
            });
            return Err(Status::failed_precondition(format!(
                "worker {} is being recovered already ({now}); wait for that recovery to end",
                r.worker
            )));
        }
        let command = Command::RecoverWorker {
            worker: r.worker.clone(),
            level: crate::recovery::planner::level_name(level).to_string(),
            reason: "asked from the command line".to_string(),
            at: Timestamp::now(),
        };
        let reply = self.operator_change(&r.worker, command).await?;
        leadership.recovery_event(crate::recovery::RecoveryEvent::OperatorRecover {
            worker: r.worker.clone(),
            level,
        });
        Ok(Response::new(reply))
    }

    async fn reset_worker(
        &self,
        request: Request<crate::proto::ResetWorkerRequest>,
    ) -> Result<Response<WorkerChangeReply>, Status> {
        let leadership = match self.leading(&request).await? {
            Ok(leadership) => leadership,
            Err(mut leader) => {
                return leader.reset_worker(forwarded(request.into_inner())).await;
            }
        };
        let r = request.into_inner();
        // A worker with a session is back in service at once; one without is `failed`,
        // which its next hello turns healthy.
        let to = if leadership.connected().contains(&r.worker) {
            crate::state::command::WorkerStatus::Healthy
        } else {
            crate::state::command::WorkerStatus::Failed
        };
        let command = Command::ResetWorker {
            worker: r.worker.clone(),
            to,
            reason: if r.reason.is_empty() {
                "no reason given".to_string()
            } else {
                r.reason.clone()
            },
            at: Timestamp::now(),
        };
        let reply = self.operator_change(&r.worker, command).await?;
        leadership.recovery_event(crate::recovery::RecoveryEvent::OperatorReset {
            worker: r.worker.clone(),
        });
        Ok(Response::new(reply))
    }

    type FetchSnapshotStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<crate::proto::SnapshotPart, Status>>>;

    async fn fetch_snapshot(
        &self,
        request: Request<FetchSnapshotRequest>,
    ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
        let parts = super::membership::snapshot_parts(&self.node, request.get_ref().min_index)?;
        Ok(Response::new(tokio_stream::iter(
            parts.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
    }

    async fn set_breaker(
        &self,
        request: Request<SetBreakerRequest>,
    ) -> Result<Response<BreakerChange>, Status> {
        let leadership = match self.leading(&request).await? {
            Ok(leadership) => leadership,
            Err(mut leader) => return leader.set_breaker(forwarded(request.into_inner())).await,
        };
        let r = request.get_ref();
        let action =
            <OperatorAction as clap::ValueEnum>::from_str(&r.action.replace('_', "-"), true)
                .map_err(|_| {
                    Status::invalid_argument(format!(
                        "unknown breaker action {:?}: use reset, force_open or disable",
                        r.action
                    ))
                })?;
        let scope = if r.target == SYSTEM_SCOPE {
            SYSTEM_SCOPE.to_string()
        } else {
            let known = (self.node.state()).with_machine(|m| m.worker(&r.target).is_some());
            if !known {
                return Err(Status::not_found(format!(
                    "no worker is named {:?}; name a worker (see `testfleet workers`) or `system`",
                    r.target
                )));
            }
            worker_scope(&r.target)
        };
        let reason = match r.reason.trim() {
            "" => "no reason given".to_string(),
            given => given.to_string(),
        };
        let command = leadership
            .with_breakers(|b, _| b.operator(&scope, action, &reason, Timestamp::now()))
            .map_err(Status::failed_precondition)?;
        limits::check(&command).map_err(Status::invalid_argument)?;
        let (from, to) = match &command {
            Command::BreakerTransition { from, to, .. } => (*from, *to),
            _ => return Err(Status::internal("an operator's change is a transition")),
        };
        match self.node.write(command).await {
            Ok(response) if !response.data.is_rejected() => Ok(Response::new(BreakerChange {
                scope,
                from: from.to_string(),
                to: to.to_string(),
            })),
            Ok(response) => Err(Status::failed_precondition(format!(
                "the change was refused: {:?}",
                response.data
            ))),
            Err(e) => Err(Status::unavailable(format!(
                "the change was not committed: {e}"
            ))),
        }
    }

    async fn remove_worker(
        &self,
        request: Request<RemoveWorkerRequest>,
    ) -> Result<Response<WorkerChangeReply>, Status> {
        let r = request.get_ref();
        let command = Command::RemoveWorker {
            worker: r.worker_id.clone(),
            force: r.force,
            reason: r.reason.clone(),
            at: Timestamp::now(),
        };
        self.change_worker(request, command, |mut leader, request| async move {
            leader.remove_worker(request).await
        })
        .await
    }

    async fn get_check_digest(
        &self,
        request: Request<CheckDigestRequest>,
    ) -> Result<Response<CheckDigestReply>, Status> {
        let r = request.get_ref();
        let state = self.node.state();
        let answer = state.check_answer(&r.check_id, r.log_index);
        let mut reply = CheckDigestReply {
            node_id: self.node.node_id(),
            last_applied: state.last_applied_index().unwrap_or(0),
            ..Default::default()
        };
        match answer {
            Answer::Pending { .. } => reply.set_state(CheckState::Pending),
            Answer::Computing => reply.set_state(CheckState::Computing),
            Answer::Done(digests) => {
                reply.set_state(CheckState::Done);
                reply.log_index = digests.log_index;
                reply.tables = digests
                    .tables
                    .into_iter()
                    .map(|t| TableDigest {
                        table: t.table,
                        rows: t.rows,
                        sha256: t.sha256,
                    })
                    .collect();
            }
            Answer::Failed(e) => {
                reply.set_state(CheckState::Failed);
                reply.error = e;
            }
            Answer::Missed(e) => {
                reply.set_state(CheckState::Missed);
                reply.error = e;
            }
        }
        Ok(Response::new(reply))
    }
}
