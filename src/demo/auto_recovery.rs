//! `testfleet test-auto-recovery`: auto-recovery end to end, with real processes.
//!
//! Starts a coordinator and `--num-workers` workers as processes, with a short
//! `recovery_interval` and a local restart command (printed) that relaunches a worker; runs
//! a workload; SIGKILLs the busiest worker; shows detection, requeues and recovery attempts
//! as they happen; lets the restart command bring the worker back; then checks that every
//! task ended with exactly one result, that the history rows exist, and that the worker
//! runs again under a new PID. Every process it started — the relaunched worker included —
//! is killed before it returns. It succeeds only if every check holds.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::launch::{LocalCluster, LocalWorkers};
use crate::auth::Role;
use crate::cli::Remote;
use crate::cli::{CliError, unavailable};
use crate::state::command::TaskSpec;

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn kill_pid(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a pid read from a pid file this demo's restart command wrote.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// A consistent read through the leader.
async fn query(remote: &Remote, sql: &str) -> Result<Vec<Vec<serde_json::Value>>, CliError> {
    crate::cli::query_rows(remote, sql, true).await
}

/// Runs the demonstration; `Ok(true)` when every check held.
pub async fn run(num_workers: usize, run_time: Duration) -> Result<bool, CliError> {
    if num_workers < 2 {
        return Err(CliError::Usage("--num-workers must be at least 2".into()));
    }
    let binary = super::this_binary()?;
    let temp = tempfile::Builder::new()
        .prefix("testfleet-auto-recovery-")
        .tempdir()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let dir = temp.path().to_path_buf();
    let port = super::launch::free_port().map_err(unavailable)?;
    let addr = format!("127.0.0.1:{port}");
    let restart = format!(
        "setsid {bin} worker --coordinator {addr} --name {{worker}} --slots 2 --token-file {token} < /dev/null >> {dir}/{{worker}}.restarted.log 2>&1 & echo $! > {dir}/{{worker}}.pid",
        bin = binary.display(),
        dir = dir.display(),
        // The local cluster keeps its tokens in `<dir>/auth`.
        token = crate::auth::token::token_path(&dir.join("auth"), Role::Worker).display(),
    );
    println!("restart command: {restart}");
    let args = vec![
        "--worker-heartbeat-interval-ms".to_string(),
        "200".to_string(),
        "--worker-failure-timeout-ms".to_string(),
        "1000".to_string(),
        // The demonstration's own pace (8 s attempts), not the breakers' levels.
        "--disable-circuit-breaker".to_string(),
        "--recovery-interval-ms".to_string(),
        "8000".to_string(),
        "--max-recovery-attempts".to_string(),
        "3".to_string(),
        "--restart-command".to_string(),
        restart,
    ];
    let cluster =
        LocalCluster::start_on(&binary, 1, Some(port), &dir, &args).map_err(unavailable)?;
    cluster
        .leader(Duration::from_secs(30), None)
        .await
        .map_err(unavailable)?;
    let remote = cluster.remote();
    println!("coordinator: {addr} (data in {})", dir.display());
    let mut workers = LocalWorkers::start(&binary, &dir, &cluster, "demo-w", num_workers, 2)
        .map_err(unavailable)?;
    println!("workers: {}", workers.names().join(", "));

    let result = demo(&remote, &mut workers, &dir, run_time).await;
    // Clean up every process, the relaunched ones included (their pid files).
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pid")
                && let Some(pid) = read_pid(&entry.path())
            {
                kill_pid(pid);
            }
        }
    }
    drop(workers);
    drop(cluster);
    result
}

async fn demo(
    remote: &Remote,
    workers: &mut LocalWorkers,
    dir: &Path,
    run_time: Duration,
) -> Result<bool, CliError> {
    let started = Instant::now();
    let deadline = started + run_time;
    let tasks: Vec<TaskSpec> = (0..24)
        .map(|i| TaskSpec {
            timeout_ms: 60_000,
            ..TaskSpec::new(
                format!("demo-task-{i:02}"),
                format!("demo-task-{i:02}"),
                vec!["sh".into(), "-c".into(), format!("sleep {}", 1 + i % 3)],
            )
        })
        .collect();
    crate::cli::jobs::submit(remote, "demo-job", "auto-recovery demo", &tasks).await?;
    println!(
        "[{:5.1}s] submitted a job of {} tasks",
        started.elapsed().as_secs_f64(),
        tasks.len()
    );

    // Kill the busiest worker once it runs tasks.
    let victim = loop {
        let report = crate::cli::jobs::get_job(remote, "demo-job", true).await?;
        let mut busiest: Option<(usize, String)> = None;
        for name in workers.names() {
            let n = report
                .tasks
                .iter()
                .filter(|t| t.status == "running" && t.worker_id == name)
                .count();
            if n > 0 && busiest.as_ref().is_none_or(|(m, _)| n > *m) {
                busiest = Some((n, name));
            }
        }
        if let Some((n, name)) = busiest {
            println!(
                "[{:5.1}s] {name} runs {n} tasks",
                started.elapsed().as_secs_f64()
            );
            break name;
        }
        if Instant::now() > deadline {
            return Err(unavailable("no worker started a task"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let old_pid = workers.pid(&victim).unwrap_or(0);
    workers.kill(&victim);
    println!(
        "[{:5.1}s] SIGKILL {victim} (pid {old_pid})",
        started.elapsed().as_secs_f64()
    );

    // Watch detection, requeues and recovery attempts until the job ends and the worker is back.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut back = false;
    let mut finished = false;
    while Instant::now() < deadline && !(back && finished) {
        let status = query(
            remote,
            &format!("SELECT status, status_reason FROM workers WHERE id = '{victim}'"),
        )
        .await?;
        if let Some(row) = status.first() {
            let line = format!(
                "{victim} is {}: {}",
                row[0].as_str().unwrap_or("?"),
                row[1].as_str().unwrap_or("")
            );
            if seen.insert(line.clone()) {
                println!("[{:5.1}s] {line}", started.elapsed().as_secs_f64());
            }
            back = row[0] == "healthy" && read_pid(&dir.join(format!("{victim}.pid"))).is_some();
        }
        let rows = query(
            remote,
            "SELECT 'task ' || task_id || ': ' || recovery_type || CASE WHEN success THEN ' ok' ELSE ' failed' END \
             FROM task_recovery_history UNION ALL SELECT 'worker ' || worker_id || ' attempt ' || attempt_number || \
             ' (' || recovery_type || '): ' || CASE WHEN success THEN 'recovered' ELSE 'failed' END || \
             coalesce(' — ' || error_message, '') FROM worker_recovery_history",
        )
        .await?;
        for row in rows {
            let line = row[0].as_str().unwrap_or("").to_string();
            if seen.insert(line.clone()) {
                println!(
                    "[{:5.1}s] recovery: {line}",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let report = crate::cli::jobs::get_job(remote, "demo-job", false).await?;
        finished = report.status != "running";
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The checks.
    let mut ok = true;
    let mut check = |name: &str, passed: bool, detail: String| {
        println!(
            "{} {name}{}",
            if passed { "PASS" } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        );
        ok &= passed;
    };
    let report = crate::cli::jobs::get_job(remote, "demo-job", true).await?;
    let passed = report.tasks.iter().filter(|t| t.status == "passed").count();
    check(
        "the job finished",
        report.status == "finished",
        report.status.clone(),
    );
    check(
        "every task passed",
        passed == tasks.len(),
        format!("{passed}/{}", tasks.len()),
    );
    let twice = query(
        remote,
        "SELECT count(*) FROM (SELECT task_id FROM task_attempts WHERE outcome IN \
         ('passed','failed','timed_out','error') GROUP BY task_id HAVING count(*) > 1)",
    )
    .await?;
    check(
        "every task has exactly one result",
        twice[0][0] == 0,
        String::new(),
    );
    let requeues = query(
        remote,
        &format!(
            "SELECT count(*) FROM task_recovery_history WHERE worker_id = '{victim}' AND success"
        ),
    )
    .await?;
    check(
        "the dead worker's tasks were requeued (task_recovery_history)",
        requeues[0][0].as_u64().unwrap_or(0) > 0,
        format!("{} rows", requeues[0][0]),
    );
    let restart = query(
        remote,
        &format!(
            "SELECT attempt_number, details->>'command', details->>'exit_code' FROM worker_recovery_history \
             WHERE worker_id = '{victim}' AND success ORDER BY id DESC LIMIT 1"
        ),
    )
    .await?;
    check(
        "worker_recovery_history records the successful recovery",
        !restart.is_empty(),
        restart
            .first()
            .map(|r| format!("attempt {}, command {}, exit status {}", r[0], r[1], r[2]))
            .unwrap_or_default(),
    );
    let new_pid = read_pid(&dir.join(format!("{victim}.pid"))).unwrap_or(0);
    check(
        "the restart command brought the worker back under a new PID",
        back && new_pid > 0 && new_pid as u32 != old_pid,
        format!("pid {old_pid} -> {new_pid}"),
    );
    Ok(ok)
}
