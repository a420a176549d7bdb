//! The `Jobs` gRPC service: submit, follow and cancel jobs.
//!
//! Writes (`SubmitJob`, `CancelJob`) become commands; a follower forwards them to the
//! leader. `GetJob` is answered by the leader from the applied view plus the scheduler's
//! soft state (why a queued task waits); a follower forwards it too, and `FollowOutput`
//! (relayed live from the worker, see [`super::output`]) the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tonic::{Request, Response, Status};

use super::{Coordinator, FORWARDED, forwarded};
use crate::proto::jobs_client::JobsClient;
use crate::proto::jobs_server::{Jobs, JobsServer};
use crate::proto::{
    CancelJobReply, CancelJobRequest, FollowOutputRequest, GetJobRequest, JobReport, ParkedTask,
    SubmitJobReply, SubmitJobRequest, TaskLine,
};
use crate::state::command::{Command, TaskSpec, Timestamp};
use crate::state::limits;
use crate::state::machine::Reply;

/// The `Jobs` service of one node.
pub struct JobsService {
    node: Arc<Coordinator>,
}

/// The largest `Jobs` message: room for a job at [`limits::MAX_JOB_BYTES`] of task text plus
/// its encoding, so that a too-large job gets the limit's own message, not tonic's.
pub const MAX_JOBS_MESSAGE: usize = 2 * limits::MAX_JOB_BYTES;

/// The tonic server for [`JobsService`].
pub fn server(node: Arc<Coordinator>) -> JobsServer<JobsService> {
    JobsServer::new(JobsService { node })
        .max_decoding_message_size(MAX_JOBS_MESSAGE)
        .max_encoding_message_size(MAX_JOBS_MESSAGE)
}

impl JobsService {
    /// A client for the leader, or why there is none.
    async fn leader<T>(
        &self,
        request: &Request<T>,
    ) -> Result<JobsClient<crate::auth::AuthChannel>, Status> {
        if request.metadata().get(FORWARDED).is_some() {
            return Err(Status::unavailable(
                "not the leader, and the request was already forwarded once; retry",
            ));
        }
        let metrics = self.node.metrics();
        let Some(id) = metrics
            .current_leader
            .filter(|id| *id != self.node.node_id())
        else {
            return Err(Status::unavailable(
                "no leader is known right now (an election may be in progress); retry shortly",
            ));
        };
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.node.peer_addr(id).map(str::to_string))
            .ok_or_else(|| Status::unavailable(format!("leader {id} has no known address")))?;
        let channel = self.node.forwarding_channel(&addr).map_err(|e| {
            Status::unavailable(format!(
                "cannot reach leader {id} at {addr}: {}",
                e.message()
            ))
        })?;
        let client = JobsClient::new(channel);
        Ok(client
            .max_decoding_message_size(MAX_JOBS_MESSAGE)
            .max_encoding_message_size(MAX_JOBS_MESSAGE))
    }

    async fn write(&self, command: Command) -> Result<Option<Reply>, Status> {
        write(&self.node, command).await
    }
}

/// Proposes `command` on `node`: its reply once applied, `None` when this node does not lead
/// (the caller forwards), or the failure as a status a client can act on.
pub(super) async fn write(node: &Coordinator, command: Command) -> Result<Option<Reply>, Status> {
    match node.write(command).await {
        Ok(response) => Ok(Some(response.data)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(None),
        Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
        Err(RaftError::Fatal(e)) => {
            // For a client this coordinator is unavailable: it should try another.
            Err(Status::unavailable(format!(
                "this node's Raft stopped ({e}); use another coordinator"
            )))
        }
    }
}

fn task_spec(t: crate::proto::TaskSpec) -> TaskSpec {
    TaskSpec {
        id: t.id,
        name: t.name,
        command: t.command,
        env: t.env.into_iter().collect(),
        cwd: t.cwd,
        timeout_ms: t.timeout_ms,
        priority: t.priority,
        labels: t.labels.into_iter().collect(),
        capabilities: t.capabilities,
        max_retries: t.max_retries,
        timeout_retries: t.timeout_retries,
        flaky_retries: t.flaky_retries,
    }
}

/// The wire form of a task spec.
pub fn task_spec_message(t: &TaskSpec) -> crate::proto::TaskSpec {
    crate::proto::TaskSpec {
        id: t.id.clone(),
        name: t.name.clone(),
        command: t.command.clone(),
        env: t.env.clone().into_iter().collect(),
        cwd: t.cwd.clone(),
        timeout_ms: t.timeout_ms,
        priority: t.priority,
        labels: t.labels.clone().into_iter().collect(),
        capabilities: t.capabilities.clone(),
        max_retries: t.max_retries,
        timeout_retries: t.timeout_retries,
        flaky_retries: t.flaky_retries,
    }
}

#[tonic::async_trait]
impl Jobs for JobsService {
    type FollowOutputStream = super::output::OutputStream;

    async fn follow_output(
        &self,
        request: Request<FollowOutputRequest>,
    ) -> Result<Response<Self::FollowOutputStream>, Status> {
        let Some(leadership) = self.node.leadership() else {
            let mut leader = self.leader(&request).await?;
            let stream = leader
                .follow_output(forwarded(request.into_inner()))
                .await?
                .into_inner();
            return Ok(Response::new(Box::pin(stream)));
        };
        let stream = super::output::follow(self.node.clone(), leadership, request.into_inner())?;
        Ok(Response::new(stream))
    }

    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobReply>, Status> {
        let r = request.get_ref();
        if r.job_id.is_empty() {
            return Err(Status::invalid_argument(
                "job_id is empty: generate a UUID per job",
            ));
        }
        let tasks: Vec<TaskSpec> = r.tasks.iter().cloned().map(task_spec).collect();
        limits::check_job(&r.job_id, &r.name, &tasks).map_err(Status::invalid_argument)?;
        // On the leader, with nothing else waiting, the job's tasks get their workers in the
        // same entry (`preplace`): one commit instead of two before a worker hears of them.
        // The assignments are stamped with the submission's own time.
        let at = Timestamp::now();
        let preplaced = super::preplace::pick(&self.node, &r.job_id, &tasks, at);
        let submit = Command::SubmitJob {
            job: r.job_id.clone(),
            name: r.name.clone(),
            tasks,
            at,
        };
        let reply = match preplaced {
            Some(picks) => picks.propose(self.node.clone(), submit, at).await?,
            None => self.write(submit).await?,
        };
        match reply {
            Some(Reply::JobAccepted {
                job,
                tasks,
                duplicate,
            }) => Ok(Response::new(SubmitJobReply {
                job_id: job,
                tasks,
                duplicate,
            })),
            Some(Reply::Rejected { reason }) => Err(Status::invalid_argument(reason)),
            Some(other) => Err(Status::internal(format!("unexpected reply {other:?}"))),
            None => {
                let mut leader = self.leader(&request).await?;
                leader.submit_job(forwarded(request.into_inner())).await
            }
        }
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<JobReport>, Status> {
        let Some(leadership) = self.node.leadership() else {
            let mut leader = self.leader(&request).await?;
            return leader.get_job(forwarded(request.into_inner())).await;
        };
        let r = request.into_inner();
        let parked: BTreeMap<String, String> = leadership.parked().into_iter().collect();
        let report = self.node.state().with_machine(|m| {
            let job = m.job(&r.job_id)?;
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            let mut tasks = Vec::new();
            let mut parked_tasks = Vec::new();
            for t in m.tasks_of(job) {
                let id = t.id();
                *counts.entry(t.status.as_str().to_string()).or_default() += 1;
                if let Some(reason) = parked.get(id) {
                    parked_tasks.push(ParkedTask {
                        task_id: id.to_string(),
                        name: t.spec.name().to_string(),
                        reason: reason.clone(),
                    });
                }
                if r.include_tasks {
                    let attempt = t.current.as_ref();
                    let (exit_code, signal) =
                        crate::state::exit::split(attempt.and_then(|a| a.exit_code));
                    tasks.push(TaskLine {
                        id: id.to_string(),
                        name: t.spec.name().to_string(),
                        status: t.status.as_str().to_string(),
                        attempt: t.attempt,
                        worker_id: attempt.map(|a| a.worker.clone()).unwrap_or_default(),
                        exit_code,
                        signal,
                        duration_ms: attempt.and_then(|a| a.duration_ms),
                        output_tail: attempt
                            .and_then(|a| a.output_tail.clone())
                            .unwrap_or_default(),
                        reason: t.reason.as_deref().unwrap_or_default().to_string(),
                    });
                }
            }
            Some(JobReport {
                job_id: job.id.clone(),
                name: job.name.clone(),
                status: job.status.as_str().to_string(),
                total: job.tasks.len() as u32,
                counts: counts.into_iter().collect(),
                tasks,
                parked: parked_tasks,
            })
        });
        report
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no job {}", r.job_id)))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobReply>, Status> {
        let r = request.get_ref();
        let command = Command::CancelJob {
            job: r.job_id.clone(),
            reason: if r.reason.is_empty() {
                "cancelled by a client".to_string()
            } else {
                r.reason.clone()
            },
            at: Timestamp::now(),
        };
        match self.write(command).await? {
            Some(Reply::Rejected { reason }) => Ok(Response::new(CancelJobReply {
                cancelled: false,
                detail: reason,
            })),
            Some(_) => Ok(Response::new(CancelJobReply {
                cancelled: true,
                detail: String::new(),
            })),
            None => {
                let mut leader = self.leader(&request).await?;
                leader.cancel_job(forwarded(request.into_inner())).await
            }
        }
    }
}
