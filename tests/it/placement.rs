//! Hardware-aware placement end to end: a probing worker (Mesa's lavapipe passes the shader
//! check, so it offers `webgpu`) and a worker started with `--no-probe`; a plan mixing tasks
//! that require `webgpu` (in the plan's typed words) with plain ones, run with `testfleet run`
//! to its summary; `testfleet capabilities` shows what was proved; a task asking for a GPU
//! nobody has parks with the unmet requirement and what the fleet has instead.

use std::time::Duration;

use serde_json::Value;

use super::support::{
    WorkerProcess, client, eventually, local_cluster, query_consistent, run, submit_plan, test_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

fn json(args: &[&str], dir: &std::path::Path) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (code, out, err) = run(&all, dir);
    assert_eq!(code, 0, "{all:?}: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{all:?}: {e}\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webgpu_tasks_run_only_on_the_worker_that_proved_webgpu_and_the_run_counts_them() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _gpu = WorkerProcess::start_with(&addr, "gpu", dir.path(), &["--slots", "2"]);
    let _plain =
        WorkerProcess::start_with(&addr, "plain", dir.path(), &["--no-probe", "--slots", "2"]);
    eventually(LIMIT, "two healthy workers", || async {
        let rows = query_consistent(
            &mut client(&addr).await,
            "SELECT count(*) FROM workers WHERE status = 'healthy'",
        )
        .await;
        (rows[0][0].as_u64() == Some(2)).then_some(())
    })
    .await;

    // What the fleet offers, as an operator sees it.
    let fleet = json(&["capabilities", "--coordinator", &addr], dir.path());
    assert_eq!(
        fleet["offered_by"]["webgpu"],
        serde_json::json!(["gpu"]),
        "{fleet}"
    );
    let gpu = &fleet["workers"][0];
    assert_eq!(gpu["worker"], "gpu", "{fleet}");
    assert!(
        gpu["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["verified"] == true && a["backend"] == "vulkan"),
        "{gpu}"
    );
    let (code, text, err) = run(&["capabilities", "gpu", "--coordinator", &addr], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("webgpu: yes (best adapter: "), "{text}");
    assert!(text.contains("vulkan"), "{text}");
    let (code, _, err) = run(
        &["capabilities", "nobody", "--coordinator", &addr],
        dir.path(),
    );
    assert_eq!(
        (code, err.contains("no worker named \"nobody\"")),
        (2, true),
        "{err}"
    );

    // Six tasks need WebGPU with a 64 MiB buffer, six do not; each holds its slot a little
    // so the plain worker fills up and the GPU worker takes plain work as the last resort.
    let mut plan = String::from("name = \"mixed\"\n");
    for i in 0..6 {
        plan.push_str(&format!(
            "[[task]]\nname = \"shader-{i}\"\ncommand = [\"sleep\", \"0.3\"]\n\
             requires = {{ webgpu = true, min_gpu_buffer_mb = 64 }}\n\
             [[task]]\nname = \"plain-{i}\"\ncommand = [\"sleep\", \"0.3\"]\n"
        ));
    }
    let path = dir.path().join("mixed.toml");
    std::fs::write(&path, plan).unwrap();
    let summary = tokio::task::spawn_blocking({
        let (dir, addr) = (dir.path().to_path_buf(), addr.clone());
        move || {
            json(
                &["run", path.to_str().unwrap(), "--coordinator", &addr],
                &dir,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["exit_code"], 0, "{summary}");
    assert_eq!(summary["total"], 12, "{summary}");
    assert_eq!(summary["counts"]["passed"], 12, "{summary}");
    let tasks = summary["tasks"].as_array().unwrap();
    let on = |prefix: &str| -> Vec<&str> {
        (tasks.iter())
            .filter(|t| t["name"].as_str().unwrap().starts_with(prefix))
            .map(|t| t["worker_id"].as_str().unwrap())
            .collect()
    };
    assert_eq!(on("shader-"), ["gpu"; 6], "{summary}");
    assert!(on("plain-").contains(&"plain"), "{summary}");

    // A discrete GPU nobody has: the task parks and says what the fleet has instead.
    let job = submit_plan(
        dir.path(),
        &addr,
        "discrete.toml",
        "[[task]]\nname = \"big-gpu\"\ncommand = [\"true\"]\nrequires = { gpu_type = \"discrete\" }\n",
    );
    let tasks = json(
        &["tasks", "--job", &job, "--coordinator", &addr],
        dir.path(),
    );
    let reason = tasks[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.starts_with(
            "parked: no live worker has capability gpu_type=discrete (live workers have gpu_type="
        ),
        "{tasks}"
    );
    let (code, _, err) = run(&["cancel", &job, "--coordinator", &addr], dir.path());
    assert_eq!(code, 0, "{err}");
}
