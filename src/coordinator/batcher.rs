//! Coalesces the small commands that worker sessions propose into one log entry.
//!
//! Every attempt a worker runs sends the leader two reports — started, finished — and each
//! becomes a command. Proposed one by one they cost one log entry each on every node: an
//! AppendEntries slot, a fsynced append, an apply, a row flush. Under load, many sessions
//! report at the same moment; the [`Batcher`] takes every report already waiting when it gets
//! to run and proposes them together as one [`Command::Batch`], whose reply holds each
//! command's own reply in order. Nothing waits to fill a batch: an idle leader proposes a lone
//! report at once, unwrapped, so the batch size grows only with the backlog.
//!
//! A session may hand over a pair (`Batcher::propose_after`): a held start notice and its
//! attempt's result, which always go into the same entry, the start first.
//!
//! Batches are proposed without waiting for the previous one to commit (openraft pipelines
//! them), so a report never waits behind another batch's commit. Each command is still checked
//! on its own by the state machine: a stale report in a batch is recorded as stale and changes
//! nothing, exactly as it would alone.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Coordinator;
use crate::state::command::Command;
use crate::state::machine::Reply;

/// The most commands proposed in one batch (a pair may take it one over).
const MAX_BATCH: usize = 256;

/// A command waiting to be proposed, one to apply just before it in the same entry (its reply
/// is not wanted), and where the command's reply goes.
struct Pending {
    before: Option<Command>,
    command: Command,
    reply: oneshot::Sender<Result<Reply, String>>,
}

impl Pending {
    fn commands(&self) -> usize {
        1 + usize::from(self.before.is_some())
    }
}

/// Hands commands to the batching task of one leadership term.
pub struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the batching task of `node`; it stops when `cancel` is cancelled.
    pub fn start(node: Arc<Coordinator>, cancel: CancellationToken) -> Batcher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(node, pending, cancel));
        Batcher { queue }
    }

    /// Proposes `command` (possibly together with others) and waits for its own reply; the
    /// error says why it was not committed (e.g. this node stopped leading).
    pub async fn propose(&self, command: Command) -> Result<Reply, String> {
        self.enqueue(None, command).await
    }

    /// Proposes `before` and `command` in the same entry, in that order, and waits for
    /// `command`'s reply (`before`'s is not kept: a worker's start notice, say, whose result
    /// follows it).
    pub async fn propose_after(&self, before: Command, command: Command) -> Result<Reply, String> {
        self.enqueue(Some(before), command).await
    }

    async fn enqueue(&self, before: Option<Command>, command: Command) -> Result<Reply, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                before,
                command,
                reply,
            })
            .map_err(|_| "this leadership term has ended".to_string())?;
        answer
            .await
            .map_err(|_| "this leadership term has ended".to_string())?
    }

    /// Proposes `command` without waiting for it: for decisions whose outcome their owner
    /// learns from the applied state (a breaker transition refused as stale is noticed by
    /// [`crate::recovery::fleet::FleetBreakers::reconcile`]).
    pub fn submit(&self, command: Command) {
        let (reply, _) = oneshot::channel();
        let _ = self.queue.send(Pending {
            before: None,
            command,
            reply,
        });
    }
}

/// Takes whatever is queued, up to [`MAX_BATCH`], and proposes it as one entry.
async fn run(
    node: Arc<Coordinator>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            first = pending.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut commands = first.commands();
        let mut batch = vec![first];
        while commands < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => {
                    commands += next.commands();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        tokio::spawn(propose(node.clone(), batch));
    }
}

/// Proposes one batch and answers each of its commands.
async fn propose(node: Arc<Coordinator>, batch: Vec<Pending>) {
    let mut commands = Vec::with_capacity(batch.iter().map(Pending::commands).sum());
    // Each reply and the position of its own command among `commands`.
    let mut replies = Vec::with_capacity(batch.len());
    for pending in batch {
        commands.extend(pending.before);
        replies.push((pending.reply, commands.len()));
        commands.push(pending.command);
    }
    let count = commands.len();
    let single = count == 1;
    let command = if single {
        commands.into_iter().next().unwrap_or(Command::Noop)
    } else {
        Command::Batch(commands)
    };
    match node.write(command).await {
        Ok(response) => {
            let answers = split(response.data, count, single);
            for (reply, at) in replies {
                let answer = answers.get(at).cloned().unwrap_or(Reply::Applied);
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (reply, _) in replies {
                let _ = reply.send(Err(message.clone()));
            }
        }
    }
}

/// The reply of each of `count` commands proposed together: a batch answers with one reply
/// per command, in order; a lone command (or a batch refused as a whole) with one reply.
fn split(reply: Reply, count: usize, single: bool) -> Vec<Reply> {
    match reply {
        Reply::Many(items) if !single && items.len() == count => items,
        other => vec![other; count],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::TaskStatus;

    #[test]
    fn each_command_of_a_batch_gets_its_own_reply_in_order() {
        let items = vec![
            Reply::Applied,
            Reply::Stale {
                reason: "late".into(),
            },
            Reply::Task {
                status: TaskStatus::Passed,
            },
        ];
        assert_eq!(split(Reply::Many(items.clone()), 3, false), items);
    }

    #[test]
    fn a_lone_command_keeps_its_reply_even_when_it_is_a_list() {
        let many = Reply::Many(vec![Reply::Applied, Reply::Applied]);
        assert_eq!(split(many.clone(), 1, true), vec![many]);
    }

    #[test]
    fn a_reply_for_the_whole_batch_goes_to_every_command() {
        let refused = Reply::Stale {
            reason: "whole batch".into(),
        };
        assert_eq!(
            split(refused.clone(), 2, false),
            vec![refused.clone(), refused]
        );
    }
}
