//! The lists through the real binary: timestamps in UTC, a limit that cuts a list says so,
//! a queued task no worker can run says why, and a list read from a follower right after
//! `run` finished shows the job finished (read your writes).

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::support::{WorkerProcess, count_reaches, local_cluster, run, submit_plan, test_dir};

/// `text` as an RFC 3339 time in UTC (`...Z`), within a few minutes of now.
fn assert_recent_utc(text: &str) {
    assert!(text.ends_with('Z'), "not marked UTC: {text}");
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    assert!(at.offset().is_utc(), "{text}");
    let off = (OffsetDateTime::now_utc() - at).abs();
    assert!(off < time::Duration::minutes(5), "{text} is {off} from now");
}

/// `testfleet ARGS -o json` as JSON: (stdout parsed, stderr).
fn json(args: &[&str], dir: &std::path::Path) -> (serde_json::Value, String) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (code, out, err) = run(&all, dir);
    assert_eq!(code, 0, "{all:?}: {err}");
    let value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{all:?}: {e}\n{out}"));
    (value, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_print_utc_state_their_cuts_and_say_why_tasks_wait() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _worker = WorkerProcess::start(&addr, "w1", 2, dir.path());
    let c = ["--coordinator", addr.as_str()];

    // Three quick tasks and one that needs a label no worker has.
    let job = submit_plan(
        dir.path(),
        &addr,
        "plan.toml",
        "name = \"mixed\"\n\
         [[task]]\nname = \"a\"\ncommand = [\"true\"]\n\
         [[task]]\nname = \"b\"\ncommand = [\"true\"]\n\
         [[task]]\nname = \"c\"\ncommand = [\"true\"]\n\
         [[task]]\nname = \"gpu\"\ncommand = [\"true\"]\n\
         requires = { labels = { gpu = \"a100\" } }\n",
    );
    let passed = "SELECT count(*) FROM tasks WHERE status = 'passed'";
    count_reaches(&addr, passed, 3, Duration::from_secs(30)).await;

    // The queued task says why it waits, in the table and in JSON.
    let tasks_args = ["tasks", "--job", job.as_str(), c[0], c[1]];
    let (tasks, err) = json(&tasks_args, dir.path());
    assert_eq!(tasks.as_array().unwrap().len(), 4, "{tasks}");
    assert!(!err.contains("showing"), "no cut, no notice: {err}");
    let gpu = &tasks[3];
    assert_eq!(gpu["name"], "gpu", "{tasks}");
    assert_eq!(gpu["status"], "queued", "{tasks}");
    assert_eq!(
        gpu["reason"], "parked: no live worker has label gpu=a100",
        "{tasks}"
    );
    let (code, table, err) = run(&tasks_args, dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("parked: no live worker has label gpu=a100"),
        "{table}"
    );

    // A limit keeps the newest rows and says on stderr what it left out; stdout stays the
    // same JSON array.
    let mut limited = tasks_args.to_vec();
    limited.extend(["--limit", "2"]);
    let (tasks, err) = json(&limited, dir.path());
    let names: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "gpu"], "{tasks}");
    assert!(
        err.contains("showing the newest 2 of 4 tasks; use --limit N or --all"),
        "{err}"
    );
    let (code, _, err) = run(&limited, dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("showing the newest 2 of 4 tasks"), "{err}");
    let mut all = tasks_args.to_vec();
    all.push("--all");
    let (tasks, err) = json(&all, dir.path());
    assert_eq!(tasks.as_array().unwrap().len(), 4, "{tasks}");
    assert!(!err.contains("showing"), "{err}");

    // Jobs: newest first, cut by --limit, and every time in UTC.
    let second = submit_plan(
        dir.path(),
        &addr,
        "quick.toml",
        "name = \"quick\"\n[[task]]\nname = \"t\"\ncommand = [\"true\"]\n",
    );
    let (jobs, err) = json(&["jobs", "--limit", "1", c[0], c[1]], dir.path());
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["id"], second.as_str(), "the newest first: {jobs}");
    assert!(
        err.contains("showing the newest 1 of 2 jobs; use --limit N or --all"),
        "{err}"
    );
    let (jobs, _) = json(&["jobs", c[0], c[1]], dir.path());
    let submitted = jobs[1]["submitted_at"].as_str().unwrap();
    assert_recent_utc(submitted);
    let (code, table, err) = run(&["jobs", c[0], c[1]], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(table.contains(submitted), "{table}");
    let (workers, _) = json(&["workers", c[0], c[1]], dir.path());
    assert_recent_utc(workers[0]["status_changed_at"].as_str().unwrap());
    let (history, err) = json(
        &["recovery", "history", "--limit", "5", c[0], c[1]],
        dir.path(),
    );
    assert_eq!(history, serde_json::json!([]), "{err}");
}

/// `run` against the leader, then at once `jobs` against a follower: the job shows finished.
/// A plain read of the follower's own DuckDB copy would trail by replication and a flush
/// (up to 250 ms) and fail this; the lists read the leader's view unless `--stale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_a_follower_shows_what_run_just_finished() {
    let dir = test_dir();
    let cluster = local_cluster(3, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addrs = cluster.addresses();
    let all: Vec<String> = addrs.values().cloned().collect();
    let _worker = WorkerProcess::start(&all.join(","), "w1", 2, dir.path());
    let leader_addr = addrs[&leader].clone();
    let followers: Vec<String> = addrs
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .collect();
    let plan = dir.path().join("quick.toml");
    std::fs::write(
        &plan,
        "name = \"quick\"\n[[task]]\nname = \"t\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    for round in 0..8 {
        let dir = dir.path().to_path_buf();
        let (leader_addr, follower) = (leader_addr.clone(), followers[round % 2].clone());
        let (summary, jobs) = tokio::task::spawn_blocking({
            let plan = plan.to_string();
            move || {
                let (summary, _) = json(&["run", &plan, "--coordinator", &leader_addr], &dir);
                let (jobs, _) = json(&["jobs", "--coordinator", &follower], &dir);
                (summary, jobs)
            }
        })
        .await
        .unwrap();
        assert_eq!(summary["status"], "finished", "{summary}");
        let id = summary["job_id"].as_str().unwrap();
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("round {round}: job {id} is not listed: {jobs}"));
        assert_eq!(
            job["status"], "finished",
            "round {round}: the follower's list trails `run`: {job}"
        );
    }
}
