//! Capabilities, proved rather than claimed: a worker that probes registers `webgpu` with the
//! adapters whose shader check it saw pass; one started with `--no-probe` offers nothing
//! probed, and one that declares `--capability webgpu` shows it as declared. A plan mixing a
//! task that needs `webgpu` with plain ones runs that task on the worker that proved it. A
//! capability whose adapter goes away is withdrawn at the next probe, and the worker goes on
//! with its other work; when the adapter is back, so is the capability. A worker that probes
//! browsers registers the ones it ran headless, with what their pages saw.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{
    WorkerProcess, client, count_reaches, eventually, local_cluster, log_lines, query_consistent,
    run, submit_plan, test_dir,
};

const LIMIT: Duration = Duration::from_secs(60);

/// Each registered worker's capabilities, by name, once there are `n` of them.
async fn capabilities(addr: &str, n: usize) -> Vec<(String, Value)> {
    let sql = "SELECT id, CAST(capabilities AS VARCHAR) FROM workers ORDER BY id";
    eventually(LIMIT, &format!("{n} workers registered"), || async {
        let rows = query_consistent(&mut client(addr).await, sql).await;
        (rows.len() == n).then(|| {
            rows.iter()
                .map(|row| {
                    let id = row[0].as_str().expect("a worker id").to_string();
                    let text = row[1].as_str().expect("capabilities as text");
                    (id, serde_json::from_str(text).expect("capabilities JSON"))
                })
                .collect()
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probing_worker_registers_webgpu_and_runs_the_task_that_needs_it() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _gpu = WorkerProcess::start_with(&addr, "gpu", dir.path(), &[]);
    let _plain = WorkerProcess::start_with(&addr, "plain", dir.path(), &["--no-probe"]);

    let workers = capabilities(&addr, 2).await;
    let (gpu, plain) = (&workers[0].1, &workers[1].1);
    assert_eq!(workers[0].0, "gpu");

    // The prober: webgpu, because a WebGPU-compliant adapter computed the check right.
    assert_eq!(gpu["probed"], json!(true), "{gpu}");
    assert_eq!(gpu["webgpu"], json!(true), "{gpu}");
    assert!(gpu["gpu_type"].is_string(), "{gpu}");
    assert!(gpu["gpu_buffer_mb"].as_u64() > Some(0), "{gpu}");
    let adapters = gpu["gpu_adapters"].as_array().expect("an adapter list");
    let proved: Vec<&Value> = adapters
        .iter()
        .filter(|a| a["verified"] == json!(true) && a["webgpu_compliant"] == json!(true))
        .collect();
    assert!(!proved.is_empty(), "no verified WebGPU adapter: {gpu}");
    for a in &proved {
        assert_eq!(a["elements_checked"], json!(65_536), "{a}");
        for key in ["name", "backend", "device_type", "driver", "limits"] {
            assert!(a.get(key).is_some(), "{key} missing from {a}");
        }
    }
    assert!(gpu.get("declared").is_none(), "{gpu}");
    // The worker says what it found and how long it took.
    let log = std::fs::read_to_string(dir.path().join("gpu.log")).unwrap();
    let probe = log_lines(&log, &["GPU probe", "webgpu=true"]);
    assert_eq!(probe.len(), 1, "{log}");
    eprintln!("{}", probe[0]);

    // --no-probe: the basics, and nothing probed.
    assert_eq!(plain["probed"], json!(false), "{plain}");
    for key in ["webgpu", "gpu_type", "gpu_buffer_mb", "gpu_adapters"] {
        assert!(plain.get(key).is_none(), "{key} in {plain}");
    }
    assert!(plain["cpus"].as_u64() >= Some(1), "{plain}");

    // One task needs webgpu, two do not: the first can only run on the prober.
    let plan = r#"
name = "mixed"
[[task]]
name = "shader-test"
command = ["true"]
requires = { capabilities = ["webgpu"] }
[[task]]
name = "plain-1"
command = ["true"]
[[task]]
name = "plain-2"
command = ["true"]
"#;
    let job = submit_plan(dir.path(), &addr, "mixed.toml", plan);
    count_reaches(
        &addr,
        &format!("SELECT count(*) FROM tasks WHERE job_id = '{job}' AND status = 'passed'"),
        3,
        LIMIT,
    )
    .await;
    let rows = query_consistent(
        &mut client(&addr).await,
        &format!(
            "SELECT DISTINCT a.worker_id FROM task_attempts a JOIN tasks t ON t.id = a.task_id \
             WHERE t.job_id = '{job}' AND t.name = 'shader-test'"
        ),
    )
    .await;
    assert_eq!(rows, vec![vec![json!("gpu")]]);
}

/// Debian's Chromium (`.ci/run` installs it), run headless by the worker before it registers:
/// on these machines `requestAdapter()` gives SwiftShader, so `browser_webgpu`; WebNN's
/// `createContext()` fails in this build, which the entry's `reason` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probing_worker_registers_the_browsers_it_checked() {
    const CHROMIUM: &str = "/usr/bin/chromium";
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("skipping: no {CHROMIUM} (apt-get install chromium; .ci/run does)");
        return;
    }
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let args = ["--probe-backends", "none", "--probe-browsers", "chromium"];
    let _worker = WorkerProcess::start_with(&addr, "browser", dir.path(), &args);

    let workers = capabilities(&addr, 1).await;
    let caps = &workers[0].1;
    assert_eq!(caps["probed"], json!(true), "{caps}");
    assert_eq!(caps["browser.chromium"], json!(true), "{caps}");
    assert_eq!(caps["browser_webgpu"], json!(true), "{caps}");
    assert!(caps.get("browser_probe_error").is_none(), "{caps}");
    let browsers = caps["browsers"].as_array().expect("a browser list");
    let chromium = browsers
        .iter()
        .find(|b| b["path"] == json!(CHROMIUM))
        .expect("chromium listed");
    assert_eq!(chromium["name"], json!("chromium"), "{chromium}");
    assert!(
        chromium["version"]
            .as_str()
            .is_some_and(|v| v.contains('.')),
        "{chromium}"
    );
    assert_eq!(chromium["gpu_api"], json!(true), "{chromium}");
    assert_eq!(chromium["webgpu_supported"], json!(true), "{chromium}");
    assert!(
        chromium["webgpu_adapter"]["vendor"].is_string(),
        "{chromium}"
    );
    assert!(
        chromium["flags"].as_array().is_some_and(|f| !f.is_empty()),
        "{chromium}"
    );
    if chromium["webnn_supported"] == json!(false) {
        assert!(chromium["reason"].is_string(), "{chromium}");
    }
    // The worker says what it found and how long it took (the JSON holds no times).
    let log = std::fs::read_to_string(dir.path().join("browser.log")).unwrap();
    let checked = log_lines(
        &log,
        &["browser chromium", "webgpu_supported=true", "took_ms="],
    );
    assert_eq!(checked.len(), 1, "{log}");
    eprintln!("{}", checked[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_capability_is_offered_as_declared_not_verified() {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let args = ["--no-probe", "--capability", "webgpu"];
    let _worker = WorkerProcess::start_with(&addr, "declared", dir.path(), &args);

    let workers = capabilities(&addr, 1).await;
    let caps = &workers[0].1;
    assert_eq!(caps["webgpu"], json!(true), "{caps}");
    assert_eq!(caps["declared"], json!(["webgpu"]), "{caps}");
    assert_eq!(caps["probed"], json!(false), "{caps}");
    assert!(caps.get("gpu_adapters").is_none(), "{caps}");
}

/// `webgpu` of worker `id` once it is `want`.
async fn webgpu_becomes(addr: &str, id: &str, want: bool) {
    let sql = format!(
        "SELECT CAST(capabilities AS VARCHAR) FROM workers WHERE id = '{id}' AND status = 'healthy'"
    );
    eventually(LIMIT, &format!("{id} to offer webgpu = {want}"), || async {
        let rows = query_consistent(&mut client(addr).await, &sql).await;
        let caps: Value = serde_json::from_str(rows.first()?[0].as_str()?).ok()?;
        (caps["webgpu"] == json!(want)).then_some(())
    })
    .await
}

/// lavapipe, the WebGPU-compliant software adapter, is the Vulkan driver this manifest names;
/// a worker started with `VK_ICD_FILENAMES` pointing at a copy finds it only while the copy is
/// there (the Vulkan loader reads the manifest at every probe's instance). llvmpipe through GL
/// stays, verified but not WebGPU-compliant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capability_whose_adapter_goes_away_is_withdrawn_then_granted_again() {
    let dir = test_dir();
    let system = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("lvp_icd")))
        .expect("no lavapipe manifest in /usr/share/vulkan/icd.d: apt-get install mesa-vulkan-drivers libvulkan1 (.ci/run does)");
    let manifest = dir.path().join("lvp_icd.json");
    let away = dir.path().join("lvp_icd.json.away");
    std::fs::copy(&system, &manifest).unwrap();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _worker = WorkerProcess::start_with_env(
        &addr,
        "gpu",
        dir.path(),
        // The browsers are another test's business: this one re-probes every second.
        &["--probe-interval", "1s", "--probe-browsers", "none"],
        &[("VK_ICD_FILENAMES", &manifest)],
    );
    webgpu_becomes(&addr, "gpu", true).await;

    // The adapter goes away: the next probe withdraws webgpu, and the leader registers it.
    std::fs::rename(&manifest, &away).unwrap();
    webgpu_becomes(&addr, "gpu", false).await;

    // A task that needs webgpu parks, saying why; a plain one runs on the same worker.
    let plan = r#"
name = "after-the-loss"
[[task]]
name = "shader-test"
command = ["true"]
requires = { capabilities = ["webgpu"] }
[[task]]
name = "plain"
command = ["true"]
"#;
    let job = submit_plan(dir.path(), &addr, "after.toml", plan);
    let passed = |name: &str| {
        format!(
            "SELECT count(*) FROM tasks WHERE job_id = '{job}' AND name = '{name}' \
             AND status = 'passed'"
        )
    };
    count_reaches(&addr, &passed("plain"), 1, LIMIT).await;
    let args = [
        "tasks",
        "--job",
        job.as_str(),
        "--coordinator",
        addr.as_str(),
        "-o",
        "json",
    ];
    let (code, out, err) = run(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    let tasks: Value = serde_json::from_str(&out).unwrap();
    let waiting = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == json!("shader-test"))
        .expect("the shader test is listed");
    assert_eq!(waiting["status"], json!("queued"), "{tasks}");
    assert_eq!(
        waiting["reason"],
        json!("parked: no live worker has capability webgpu"),
        "{tasks}"
    );

    // The adapter is back: webgpu is granted again and the parked task runs.
    std::fs::rename(&away, &manifest).unwrap();
    webgpu_becomes(&addr, "gpu", true).await;
    count_reaches(&addr, &passed("shader-test"), 1, LIMIT).await;
    let log = cluster.log(leader);
    let again = log_lines(&log, &["registered again", "worker=gpu"]);
    assert!(again.len() >= 2, "{log}");
}
