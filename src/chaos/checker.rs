//! The history checker: what a chaos run recorded, judged against what must hold.
//!
//! Pure: it reads a [`History`] of client submissions (each task with the outcome it was built
//! to have) and the final rows of every node ([`NodeTables`]), and returns a [`Verdict`] with
//! every [`Anomaly`] it found. Nothing here touches a process or a clock, so each rule is tested
//! with hand-made histories, and a rule that cannot fail is visible as one.
//!
//! The rules, each an [`AnomalyKind`]:
//!
//! * **Lost** — a task of an *acknowledged* submission missing on a node, or still open there
//!   once the run has settled. A submission whose outcome the client does not know (timed out,
//!   connection broken) may or may not be there; a failed one must not be.
//! * **Phantom** — a task no client ever submitted, or one of a refused submission.
//! * **Duplicated** — more than one attempt of a task carries a result (`passed`, `failed`,
//!   `timed_out`, `error`): the workload asks for no retries of test results, so a second
//!   result is a test run twice and counted twice.
//! * **Superseded** — the result that counts does not belong to the task's last attempt: a
//!   superseded attempt's report was applied instead of being recorded as stale.
//! * **WrongOutcome** — the task's final status (and exit code) differs from the one its command
//!   was built to produce.
//! * **TwoLeaders** — two nodes led in one term: by the replicated `leader_transitions`, or by
//!   the nodes' own logs (each node logs the term in which it starts leading, before it records
//!   the election through the log — a leader that could not replicate still says so there).
//! * **Diverged** — nodes hold different rows for the same task, attempt or term, or the
//!   replica check (digests of every table) found them different.
//! * **Crashed** — a coordinator stopped on its own during the run (the runner saw it exit and
//!   started it again), or its rows could not be read at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// What a task's command was built to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "exit_code")]
pub enum Expected {
    /// Exits 0.
    Pass,
    /// Exits with this non-zero code.
    Fail(i32),
    /// Runs past its timeout.
    TimeOut,
}

impl Expected {
    /// The final task status this outcome must end in.
    pub fn status(self) -> &'static str {
        match self {
            Expected::Pass => "passed",
            Expected::Fail(_) => "failed",
            Expected::TimeOut => "timed_out",
        }
    }
}

/// What the client learnt of one submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// The cluster said it is queued: every task must be there.
    Acknowledged,
    /// The cluster refused it: no task may be there.
    Failed(String),
    /// No answer (timed out, the connection broke): either way is correct.
    Unknown(String),
}

/// One submission as the client recorded it.
#[derive(Clone, Debug, Serialize)]
pub struct Submission {
    pub client: usize,
    pub job: String,
    pub tasks: Vec<(String, Expected)>,
    /// Milliseconds since the run started.
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub ack: Ack,
}

/// Every submission of a run, in the order they were invoked.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    pub submissions: Vec<Submission>,
}

/// A `tasks` row, as much of it as the checker needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub job: String,
    pub status: String,
    /// The task's current (last) attempt number.
    pub attempt: u32,
}

/// A `task_attempts` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    pub task: String,
    pub attempt: u32,
    pub worker: String,
    /// The term of the leader that assigned it (its lease).
    pub term: u64,
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
}

/// A `leader_transitions` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderRow {
    pub term: u64,
    pub node: u64,
}

/// One node's final rows.
#[derive(Clone, Debug, Default)]
pub struct NodeTables {
    pub node: u64,
    /// The node's last applied log index when the rows were read.
    pub last_applied: u64,
    pub tasks: Vec<TaskRow>,
    pub attempts: Vec<AttemptRow>,
    pub leaders: Vec<LeaderRow>,
    /// The terms this node's own log says it led (`leading: dispatch started`), across its
    /// restarts: evidence that does not depend on replication.
    pub logged_terms: Vec<u64>,
}

/// The terms a coordinator's log says it led: the `term=` of each `leading: dispatch started`
/// line (see `coordinator::leader`).
pub fn logged_terms(log: &str) -> Vec<u64> {
    (log.lines())
        .filter(|line| line.contains("leading: dispatch started"))
        .filter_map(|line| {
            let (_, rest) = line.rsplit_once(" term=")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The kinds of anomaly (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Lost,
    Phantom,
    Duplicated,
    Superseded,
    WrongOutcome,
    TwoLeaders,
    Diverged,
    /// A coordinator stopped on its own (a panic, a fatal error), or could not be read at the
    /// end: the run cannot vouch for it.
    Crashed,
}

/// One thing that must not happen, and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub task: Option<String>,
    pub nodes: Vec<u64>,
    pub terms: Vec<u64>,
    /// The nodes' last applied log indexes when their rows were read.
    pub log_indexes: Vec<u64>,
    pub detail: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if let Some(task) = &self.task {
            write!(f, " task {task}")?;
        }
        if !self.nodes.is_empty() {
            write!(f, " nodes {:?}", self.nodes)?;
        }
        if !self.terms.is_empty() {
            write!(f, " terms {:?}", self.terms)?;
        }
        if !self.log_indexes.is_empty() {
            write!(f, " at log indexes {:?}", self.log_indexes)?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The checker's answer.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Tasks of acknowledged submissions.
    pub acknowledged: usize,
    /// Tasks missing on some node though acknowledged, or there and never finished.
    pub lost: usize,
    /// Tasks with more than one result.
    pub duplicated: usize,
    /// Tasks whose final outcome is not the one built in.
    pub wrong_outcome: usize,
    pub replicas_identical: bool,
    pub anomalies: Vec<Anomaly>,
    /// `pass` when there is no anomaly, else `fail`.
    pub verdict: &'static str,
}

/// Outcomes that are a test's result (the others are the fleet's decisions about an attempt).
const RESULTS: &[&str] = &["passed", "failed", "timed_out", "error"];

/// A coordinator that stopped on its own, or could not be read at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Crash {
    pub node: u64,
    /// Milliseconds since the run started when the runner saw it.
    pub at_ms: u64,
    pub exit_code: Option<i32>,
    /// The panic or error its log ends with, or why it could not be read.
    pub why: String,
}

/// Judges a run: `history` against every node's final rows; `digests_agree` is the replica
/// check's answer over all tables (`None` when it could not be made, which counts as diverged);
/// `crashes` are the coordinators that stopped on their own.
pub fn check(
    history: &History,
    nodes: &[NodeTables],
    digests_agree: Option<bool>,
    crashes: &[Crash],
) -> Verdict {
    let mut anomalies: Vec<Anomaly> = (crashes.iter())
        .map(|c| Anomaly {
            kind: AnomalyKind::Crashed,
            task: None,
            nodes: vec![c.node],
            terms: vec![],
            log_indexes: vec![],
            detail: format!(
                "at {:.1}s, exit code {:?}: {}",
                c.at_ms as f64 / 1000.0,
                c.exit_code,
                c.why
            ),
        })
        .collect();
    let mut expected: BTreeMap<&str, (Expected, &Ack)> = BTreeMap::new();
    for submission in &history.submissions {
        for (task, outcome) in &submission.tasks {
            expected.insert(task, (*outcome, &submission.ack));
        }
    }
    let acknowledged = expected
        .values()
        .filter(|(_, ack)| **ack == Ack::Acknowledged)
        .count();

    let mut lost = BTreeSet::new();
    let mut duplicated = BTreeSet::new();
    let mut wrong = BTreeSet::new();
    for node in nodes {
        let tasks: BTreeMap<&str, &TaskRow> =
            node.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut attempts: BTreeMap<&str, Vec<&AttemptRow>> = BTreeMap::new();
        for a in &node.attempts {
            attempts.entry(a.task.as_str()).or_default().push(a);
        }
        let at = |kind, task: &str, terms: Vec<u64>, detail: String| Anomaly {
            kind,
            task: Some(task.to_string()),
            nodes: vec![node.node],
            terms,
            log_indexes: vec![node.last_applied],
            detail,
        };
        for (task, (outcome, ack)) in &expected {
            let Some(row) = tasks.get(task) else {
                if **ack == Ack::Acknowledged {
                    lost.insert(*task);
                    anomalies.push(at(
                        AnomalyKind::Lost,
                        task,
                        vec![],
                        "acknowledged, but not on this node".into(),
                    ));
                }
                continue;
            };
            if let Ack::Failed(reason) = ack {
                anomalies.push(at(
                    AnomalyKind::Phantom,
                    task,
                    vec![],
                    format!("its submission was refused ({reason}), yet it is here"),
                ));
            }
            let mine = attempts.get(task).map(Vec::as_slice).unwrap_or_default();
            let results: Vec<&&AttemptRow> = mine
                .iter()
                .filter(|a| a.outcome.as_deref().is_some_and(|o| RESULTS.contains(&o)))
                .collect();
            let terms = |rows: &[&&AttemptRow]| rows.iter().map(|a| a.term).collect::<Vec<_>>();
            if ![
                "passed",
                "failed",
                "timed_out",
                "error",
                "cancelled",
                "abandoned",
            ]
            .contains(&row.status.as_str())
            {
                lost.insert(*task);
                anomalies.push(at(
                    AnomalyKind::Lost,
                    task,
                    terms(&mine.iter().collect::<Vec<_>>()),
                    format!(
                        "still {} (attempt {}) after the run settled",
                        row.status, row.attempt
                    ),
                ));
                continue;
            }
            if results.len() > 1 {
                duplicated.insert(*task);
                let list: Vec<String> = results
                    .iter()
                    .map(|a| {
                        format!(
                            "attempt {} on {} (term {}): {}",
                            a.attempt,
                            a.worker,
                            a.term,
                            a.outcome.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                anomalies.push(at(
                    AnomalyKind::Duplicated,
                    task,
                    terms(&results),
                    format!("{} results counted: {}", results.len(), list.join("; ")),
                ));
            }
            if let Some(stale) = results.iter().find(|a| a.attempt != row.attempt) {
                anomalies.push(at(
                    AnomalyKind::Superseded,
                    task,
                    vec![stale.term],
                    format!(
                        "attempt {} on {} (term {}) has a result, but the task's last attempt \
                         is {}",
                        stale.attempt, stale.worker, stale.term, row.attempt
                    ),
                ));
            }
            let last = mine.iter().find(|a| a.attempt == row.attempt);
            let exit_ok = match outcome {
                Expected::Fail(code) => last.and_then(|a| a.exit_code) == Some(*code),
                _ => true,
            };
            if row.status != outcome.status() || !exit_ok {
                wrong.insert(*task);
                anomalies.push(at(
                    AnomalyKind::WrongOutcome,
                    task,
                    last.map(|a| vec![a.term]).unwrap_or_default(),
                    format!(
                        "built to end {outcome:?}, ended {} (exit code {:?})",
                        row.status,
                        last.and_then(|a| a.exit_code)
                    ),
                ));
            }
        }
        for task in tasks.keys().filter(|t| !expected.contains_key(*t)) {
            anomalies.push(at(
                AnomalyKind::Phantom,
                task,
                vec![],
                "no client submitted it".into(),
            ));
        }
    }

    // Who led each term, and who says so: the replicated table (as read on each node) and
    // each node's own log.
    let mut by_term: BTreeMap<u64, BTreeMap<u64, BTreeSet<String>>> = BTreeMap::new();
    for node in nodes {
        for l in &node.leaders {
            (by_term
                .entry(l.term)
                .or_default()
                .entry(l.node)
                .or_default())
            .insert("leader_transitions".into());
        }
        for term in &node.logged_terms {
            (by_term
                .entry(*term)
                .or_default()
                .entry(node.node)
                .or_default())
            .insert(format!("node {}'s log", node.node));
        }
    }
    for (term, leaders) in by_term.iter().filter(|(_, l)| l.len() > 1) {
        let evidence: Vec<String> = (leaders.iter())
            .map(|(node, sources)| {
                let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
                format!("node {node} ({})", sources.join(", "))
            })
            .collect();
        anomalies.push(Anomaly {
            kind: AnomalyKind::TwoLeaders,
            task: None,
            nodes: leaders.keys().copied().collect(),
            terms: vec![*term],
            log_indexes: vec![],
            detail: format!(
                "{} nodes led term {term}: {}",
                leaders.len(),
                evidence.join("; ")
            ),
        });
    }

    let rows_agree = diverged(nodes, &mut anomalies);
    if digests_agree != Some(true) {
        anomalies.push(Anomaly {
            kind: AnomalyKind::Diverged,
            task: None,
            nodes: nodes.iter().map(|n| n.node).collect(),
            terms: vec![],
            log_indexes: nodes.iter().map(|n| n.last_applied).collect(),
            detail: match digests_agree {
                Some(_) => "the replica check found tables that differ".into(),
                None => "the replica check could not be made".into(),
            },
        });
    }
    anomalies.sort_by(|a, b| (a.kind, &a.task, &a.nodes).cmp(&(b.kind, &b.task, &b.nodes)));
    Verdict {
        acknowledged,
        lost: lost.len(),
        duplicated: duplicated.len(),
        wrong_outcome: wrong.len(),
        replicas_identical: rows_agree && digests_agree == Some(true),
        verdict: if anomalies.is_empty() { "pass" } else { "fail" },
        anomalies,
    }
}

/// Compares every node's rows with the first node's; one anomaly per differing task or term.
/// True when all agree.
fn diverged(nodes: &[NodeTables], anomalies: &mut Vec<Anomaly>) -> bool {
    let Some((first, rest)) = nodes.split_first() else {
        return true;
    };
    let index = |n: &NodeTables| {
        let mut rows: BTreeMap<String, String> = BTreeMap::new();
        for t in &n.tasks {
            rows.insert(format!("task {}", t.id), format!("{t:?}"));
        }
        for a in &n.attempts {
            rows.insert(
                format!("task {} attempt {}", a.task, a.attempt),
                format!("{a:?}"),
            );
        }
        for l in &n.leaders {
            rows.entry(format!("term {}", l.term))
                .or_default()
                .push_str(&format!("{l:?}"));
        }
        rows
    };
    let reference = index(first);
    let mut agree = true;
    for node in rest {
        let mine = index(node);
        let keys: BTreeSet<&String> = reference.keys().chain(mine.keys()).collect();
        for key in keys {
            if reference.get(key) != mine.get(key) {
                agree = false;
                anomalies.push(Anomaly {
                    kind: AnomalyKind::Diverged,
                    task: key
                        .strip_prefix("task ")
                        .map(|t| t.split(' ').next().unwrap_or(t).to_string()),
                    nodes: vec![first.node, node.node],
                    terms: vec![],
                    log_indexes: vec![first.last_applied, node.last_applied],
                    detail: format!(
                        "{key}: node {} has {}, node {} has {}",
                        first.node,
                        reference.get(key).map_or("nothing", String::as_str),
                        node.node,
                        mine.get(key).map_or("nothing", String::as_str)
                    ),
                });
            }
        }
    }
    agree
}

#[cfg(test)]
mod tests;
