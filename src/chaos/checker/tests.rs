//! Each rule of the checker, shown to pass a clean run and to catch the anomaly it guards
//! against in a hand-made one.

use super::*;

fn submission(job: &str, tasks: &[(&str, Expected)], ack: Ack) -> Submission {
    Submission {
        client: 0,
        job: job.to_string(),
        tasks: tasks.iter().map(|(t, e)| (t.to_string(), *e)).collect(),
        invoked_ms: 0,
        completed_ms: 1,
        ack,
    }
}

fn task(id: &str, status: &str, attempt: u32) -> TaskRow {
    TaskRow {
        id: id.to_string(),
        job: "j".to_string(),
        status: status.to_string(),
        attempt,
    }
}

fn attempt(task: &str, attempt: u32, term: u64, outcome: &str, exit: Option<i32>) -> AttemptRow {
    AttemptRow {
        task: task.to_string(),
        attempt,
        worker: "w1".to_string(),
        term,
        outcome: Some(outcome.to_string()),
        exit_code: exit,
    }
}

/// A history of three acknowledged tasks (pass, fail with 3, time out), and three nodes that
/// agree they ended so; t2's first attempt was requeued when its worker died.
fn clean() -> (History, Vec<NodeTables>) {
    let history = History {
        submissions: vec![submission(
            "j",
            &[
                ("t1", Expected::Pass),
                ("t2", Expected::Fail(3)),
                ("t3", Expected::TimeOut),
            ],
            Ack::Acknowledged,
        )],
    };
    let node = |id| NodeTables {
        node: id,
        last_applied: 40,
        tasks: vec![
            task("t1", "passed", 1),
            task("t2", "failed", 2),
            task("t3", "timed_out", 1),
        ],
        attempts: vec![
            attempt("t1", 1, 1, "passed", Some(0)),
            attempt("t2", 1, 1, "requeued: crash", None),
            attempt("t2", 2, 2, "failed", Some(3)),
            attempt("t3", 1, 2, "timed_out", None),
        ],
        leaders: vec![
            LeaderRow { term: 1, node: 1 },
            LeaderRow { term: 2, node: 2 },
        ],
        logged_terms: match id {
            1 => vec![1],
            2 => vec![2],
            _ => vec![],
        },
    };
    (history, vec![node(1), node(2), node(3)])
}

fn kinds(verdict: &Verdict) -> Vec<AnomalyKind> {
    verdict.anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn a_clean_run_passes() {
    let (history, nodes) = clean();
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(verdict.anomalies, vec![]);
    assert_eq!(verdict.verdict, "pass");
    assert_eq!(
        (
            verdict.acknowledged,
            verdict.lost,
            verdict.duplicated,
            verdict.wrong_outcome
        ),
        (3, 0, 0, 0)
    );
    assert!(verdict.replicas_identical);
}

#[test]
fn an_acknowledged_task_missing_on_a_node_is_lost_and_an_unknown_one_is_not() {
    let (mut history, mut nodes) = clean();
    history.submissions.push(submission(
        "k",
        &[("u1", Expected::Pass)],
        Ack::Unknown("deadline exceeded".into()),
    ));
    for node in &mut nodes {
        node.tasks.retain(|t| t.id != "t1");
        node.attempts.retain(|a| a.task != "t1");
    }
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(verdict.lost, 1);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::Lost; 3]);
    let first = &verdict.anomalies[0];
    assert_eq!(
        first.to_string(),
        "Lost task t1 nodes [1] at log indexes [40]: acknowledged, but not on this node"
    );
}

#[test]
fn a_task_still_open_after_the_run_is_lost() {
    let (history, mut nodes) = clean();
    nodes[2].tasks[0].status = "running".into();
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(verdict.lost, 1);
    assert!(kinds(&verdict).contains(&AnomalyKind::Lost));
    assert!(
        kinds(&verdict).contains(&AnomalyKind::Diverged),
        "{:?}",
        verdict.anomalies
    );
}

#[test]
fn two_results_for_one_task_are_a_duplicate_and_the_older_one_is_superseded() {
    let (history, mut nodes) = clean();
    for node in &mut nodes {
        // The paused worker's attempt 1 reported after the task was given to attempt 2.
        node.attempts[1] = attempt("t2", 1, 1, "failed", Some(3));
    }
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(verdict.duplicated, 1);
    assert_eq!(
        kinds(&verdict),
        [[AnomalyKind::Duplicated; 3], [AnomalyKind::Superseded; 3]].concat()
    );
    assert!(
        verdict.anomalies[0]
            .detail
            .contains("attempt 1 on w1 (term 1): failed; attempt 2 on w1 (term 2): failed"),
        "{}",
        verdict.anomalies[0]
    );
}

#[test]
fn a_result_from_a_superseded_attempt_alone_is_caught() {
    let (history, mut nodes) = clean();
    for node in &mut nodes {
        node.attempts[1] = attempt("t2", 1, 1, "failed", Some(3));
        node.attempts[2] = attempt("t2", 2, 2, "requeued: crash", None);
    }
    let verdict = check(&history, &nodes, Some(true), &[]);
    // The last attempt carries no exit code 3 either: the outcome that counts is not its own.
    assert_eq!(
        kinds(&verdict),
        [[AnomalyKind::Superseded; 3], [AnomalyKind::WrongOutcome; 3]].concat()
    );
    assert_eq!(verdict.anomalies[0].terms, vec![1]);
}

#[test]
fn the_wrong_status_or_exit_code_is_a_wrong_outcome() {
    let (history, mut nodes) = clean();
    for node in &mut nodes {
        node.attempts[2].exit_code = Some(4);
        node.tasks[2].status = "passed".into();
    }
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(verdict.wrong_outcome, 2);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::WrongOutcome; 6]);
}

#[test]
fn two_leaders_in_one_term_are_caught() {
    let (history, mut nodes) = clean();
    for node in &mut nodes {
        node.leaders.push(LeaderRow { term: 2, node: 3 });
    }
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::TwoLeaders]);
    assert_eq!(verdict.anomalies[0].nodes, vec![2, 3]);
}

#[test]
fn a_second_leader_only_its_own_log_knows_of_is_caught() {
    // A leader cut off before it could record its election: the table never shows it.
    let (history, mut nodes) = clean();
    nodes[2].logged_terms.push(2);
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::TwoLeaders]);
    assert_eq!(verdict.anomalies[0].nodes, vec![2, 3]);
    assert_eq!(
        verdict.anomalies[0].detail,
        "2 nodes led term 2: node 2 (leader_transitions, node 2's log); node 3 (node 3's log)"
    );
}

#[test]
fn the_terms_a_node_led_are_read_from_its_log() {
    let log = "\
2026-12-06T18:13:37.385726Z  INFO testfleet::coordinator::leader: leading: dispatch started node_id=1 term=1
2026-12-06T18:13:38.000000Z  INFO testfleet::coordinator::leader: no longer leading node_id=1 term=1
2026-12-06T18:14:14.238257Z  INFO testfleet::coordinator::leader: leading: dispatch started node_id=1 term=7
garbage leading: dispatch started term=x
";
    assert_eq!(logged_terms(log), vec![1, 7]);
}

#[test]
fn nodes_that_differ_or_an_unchecked_cluster_are_diverged() {
    let (history, mut nodes) = clean();
    nodes[1].attempts[0].worker = "w2".into();
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::Diverged]);
    assert_eq!(verdict.anomalies[0].task.as_deref(), Some("t1"));
    assert!(!verdict.replicas_identical);

    let (history, nodes) = clean();
    for digests in [Some(false), None] {
        let verdict = check(&history, &nodes, digests, &[]);
        assert_eq!(kinds(&verdict), vec![AnomalyKind::Diverged]);
        assert!(!verdict.replicas_identical && verdict.verdict == "fail");
    }
}

#[test]
fn a_task_nobody_submitted_or_a_refused_one_present_is_a_phantom() {
    let (mut history, mut nodes) = clean();
    history.submissions.push(submission(
        "k",
        &[("r1", Expected::Pass)],
        Ack::Failed("invalid".into()),
    ));
    for node in &mut nodes {
        node.tasks.push(task("r1", "passed", 1));
        node.attempts.push(attempt("r1", 1, 2, "passed", Some(0)));
        node.tasks.push(task("x1", "passed", 1));
    }
    let verdict = check(&history, &nodes, Some(true), &[]);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::Phantom; 6]);
}

#[test]
fn a_node_that_stopped_on_its_own_fails_the_run() {
    let (history, nodes) = clean();
    let crash = Crash {
        node: 2,
        at_ms: 12_500,
        exit_code: Some(1),
        why: "panicked at update.rs: follower log reversion is not allowed".into(),
    };
    let verdict = check(&history, &nodes, Some(true), &[crash]);
    assert_eq!(kinds(&verdict), vec![AnomalyKind::Crashed]);
    assert_eq!(
        verdict.anomalies[0].to_string(),
        "Crashed nodes [2]: at 12.5s, exit code Some(1): panicked at update.rs: follower log \
         reversion is not allowed"
    );
    assert_eq!(verdict.verdict, "fail");
}
