//! Dispatch in the submission's own commit: when nothing else is waiting for a worker, the
//! leader picks workers for a new job's tasks *before* it proposes the job, and proposes the
//! job and those assignments as one `Batch` entry (`SubmitJob`, then `AssignTasks`).
//!
//! Without this a task costs two consensus rounds in a row before its worker hears of it: the
//! submission commits and applies, its `Queued` event reaches the dispatch loop, and only then
//! is the assignment proposed and committed. At light load — the case where a task's latency
//! is what a user sees — that second round is most of the wait.
//!
//! Nothing about the assignments is weaker than the dispatch loop's:
//! * They are ordinary `AssignTasks` items with the leader's term, applied right after the job
//!   in the same entry, so apply checks them exactly as it checks the loop's (task queued,
//!   worker healthy with a free slot, term current); a refused item leaves its task queued for
//!   the loop. A worker still hears of an assignment only once the entry is committed.
//! * The picks are the scheduler's, reserved like the loop's, so no proposal in flight can
//!   take the same slot; each asks its worker's circuit breaker as the loop's do.
//! * It happens only when the scheduler holds no runnable queued task (every waiting task is
//!   parked, nobody can run it), every applied event has reached the dispatch loop (so no
//!   task just queued is still on its way to the scheduler), and recovery does not hold or
//!   pace dispatch: a new job cannot overtake a task that was waiting, so queue order
//!   (priority, requeued first, round-robin across jobs) is kept. Otherwise the job is
//!   proposed alone and the loop places it.
//!
//! A submission whose job or task ids the state already has (a retry) is proposed alone. The
//! new tasks are put in the scheduler only for the pick: the ones not picked are taken out
//! again at once and come back through their `Queued` events like any submitted task, and
//! the picked ones leave it if the proposal fails.

use std::sync::Arc;

use tonic::Status;

use super::Coordinator;
use super::jobs::write;
use super::leader::{MAX_BATCH, settle_assignments};
use super::leadership::{Leadership, lock};
use crate::scheduler::QueuedTask;
use crate::state::command::{Assignment, Command, JobId, TaskSpec, Timestamp};
use crate::state::limits;
use crate::state::machine::Reply;

/// Assignments picked for a job that is not proposed yet.
pub(super) struct Preplaced {
    leadership: Arc<Leadership>,
    picks: Vec<Assignment>,
}

/// Picks workers for the tasks of a job about to be submitted at `at`, when this node leads
/// and nothing else is waiting for a slot (see the module docs). `None` when it does not apply
/// or nothing could be picked.
pub(super) fn pick(
    node: &Coordinator,
    job: &JobId,
    tasks: &[TaskSpec],
    at: Timestamp,
) -> Option<Preplaced> {
    let leadership = node.leadership()?;
    let paced = (leadership.recovery.as_ref()).is_some_and(|r| r.dispatch_allowance().is_some());
    if paced || tasks.is_empty() {
        return None;
    }
    let picks = {
        let mut scheduler = lock(&leadership.scheduler);
        let stats = scheduler.stats();
        // Events not yet fed to the scheduler may queue tasks it does not know of yet.
        let settled = node.state().events_in_flight() == 0;
        if !settled || stats.queued != stats.parked || stats.free_slots == 0 {
            return None;
        }
        // A job or task id the state already has (a client retrying its submission, or ids
        // that collide): apply dedupes or refuses the job, and putting its ids in the
        // scheduler here would replace the entry of a task already waiting there (a parked
        // one, say), which the job's missing `Queued` events would never bring back.
        let known = node.state().with_machine(|m| {
            m.job(job).is_some() || tasks.iter().any(|t| m.task(&t.id).is_some())
        });
        if known {
            return None;
        }
        for (seq, spec) in tasks.iter().enumerate() {
            let queued = QueuedTask {
                id: spec.id.clone(),
                job: job.clone(),
                priority: spec.priority,
                requeued: false,
                // Only the order among these tasks matters here (everything else waiting is
                // parked); the real sequence numbers come with the `Queued` events.
                seq: seq as i64,
                attempt: 0,
                labels: spec.labels.clone(),
                capabilities: spec.capabilities.clone(),
                avoid_worker: None,
            };
            // None of the ids is known (above), so each is queued afresh.
            scheduler.enqueue(queued);
        }
        let picks = scheduler.pick(MAX_BATCH.min(tasks.len()));
        for spec in tasks {
            if scheduler.reservation(&spec.id).is_none() {
                scheduler.remove(&spec.id);
            }
        }
        picks
    };
    // Each assignment asks its worker's breaker, as in the dispatch loop; a refused one is
    // simply not made now.
    let (picks, refused) = leadership.allowed_by_breakers(picks, at);
    if !refused.is_empty() {
        let mut scheduler = lock(&leadership.scheduler);
        for a in &refused {
            scheduler.remove(&a.task);
            scheduler.worker_down(&a.worker);
        }
    }
    (!picks.is_empty()).then_some(Preplaced { leadership, picks })
}

impl Preplaced {
    /// Proposes the job `submit` with these assignments and settles them: the reply to the
    /// job, as [`super::jobs::write`] gives it. The job goes alone if the two together would
    /// break a limit. The proposal runs in its own task, so the picks are settled (sent to
    /// their workers, or given back) even if the caller goes away while the entry commits.
    pub(super) async fn propose(
        self,
        node: Arc<Coordinator>,
        submit: Command,
        at: Timestamp,
    ) -> Result<Option<Reply>, Status> {
        let command = match self.command(submit, at) {
            Ok(batch) => batch,
            Err(submit) => {
                self.abandon();
                return write(&node, *submit).await;
            }
        };
        tokio::spawn(async move {
            match write(&node, command).await {
                Ok(Some(reply)) => Ok(Some(self.settle(&node, reply))),
                other => {
                    self.abandon();
                    other
                }
            }
        })
        .await
        .map_err(|e| Status::internal(format!("the submission task failed: {e}")))?
    }

    /// The entry to propose: the job, then its assignments, in one `Batch`. The job alone is
    /// handed back when the two together would break a limit it keeps by itself (a job near
    /// the entry size limit); the caller then abandons the picks.
    fn command(&self, submit: Command, at: Timestamp) -> Result<Command, Box<Command>> {
        let command = Command::Batch(vec![
            submit,
            Command::AssignTasks {
                term: self.leadership.term,
                at,
                assignments: self.picks.clone(),
            },
        ]);
        match limits::check(&command) {
            Ok(()) => Ok(command),
            Err(_) => match command {
                Command::Batch(mut items) => Err(Box::new(items.swap_remove(0))),
                other => Err(Box::new(other)),
            },
        }
    }

    /// The proposal did not commit here (refused, failed, or this node no longer leads): the
    /// picks leave the scheduler and free their slots. The tasks, if the job is applied after
    /// all, arrive through their `Queued` events.
    fn abandon(self) {
        let mut scheduler = lock(&self.leadership.scheduler);
        for a in &self.picks {
            scheduler.remove(&a.task);
        }
    }

    /// The batch was applied: acts on the assignments' replies (sent to their workers, or
    /// back to the dispatch loop) and returns the job's own reply.
    fn settle(self, node: &Coordinator, reply: Reply) -> Reply {
        let (job, assigned) = match reply {
            Reply::Many(mut items) if items.len() == 2 => {
                let assigned = items.pop();
                (items.pop(), assigned)
            }
            other => (Some(other), None),
        };
        let replies = match assigned {
            Some(Reply::Many(items)) => items,
            Some(other) => vec![other; self.picks.len()],
            None => vec![Reply::rejected("not applied"); self.picks.len()],
        };
        settle_assignments(node, &self.leadership, self.picks, replies);
        job.unwrap_or_else(|| Reply::rejected("the batch had no reply for the job"))
    }
}
