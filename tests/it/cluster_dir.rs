//! The shipped `cluster/` directory is real: every key of the coordinator files is one the
//! loader accepts, every variable of `worker.env` is one the worker reads, the systemd units
//! start what the README installs, and three coordinators started from
//! `cluster/coordinator-{1,2,3}.toml` elect a leader and run a task through a worker started
//! with the variables of `cluster/worker.env`. Only what must differ on one machine is
//! overridden, through `TESTFLEET_*` variables (which win over the file): the addresses, the
//! data paths and the credentials directory, made by the real `testfleet auth init`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testfleet::auth::{Credentials, Token};
use testfleet::config::{CoordinatorArgs, CoordinatorConfig};
use testfleet::demo::launch::free_port;

use super::support::{binary, client_as, eventually, exit_code, query_consistent, test_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// A file of the repository's `cluster/` directory.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cluster")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The text with the optional settings switched on: every comment line that is a setting
/// (`# key = value`, `# [table]`) loses its `# `. Prose comments never have that shape.
fn with_optional_settings(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key = value` with a snake_case key, or a `[table]` header.
fn is_setting(text: &str) -> bool {
    if text.starts_with('[') && text.ends_with(']') {
        return true;
    }
    text.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Resolves (layers and validates, as a starting node does) the config in `text` with its
/// paths moved into `dir`.
fn resolve_in(dir: &Path, name: &str, text: &str) -> Result<CoordinatorConfig, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    CoordinatorConfig::resolve(&CoordinatorArgs {
        config: Some(path),
        db_path: Some(dir.join("testfleet.duckdb")),
        data_dir: Some(dir.to_path_buf()),
        ..CoordinatorArgs::default()
    })
    .map_err(|e| e.to_string())
}

#[test]
fn every_key_of_the_coordinator_files_is_one_the_loader_accepts() {
    let dir = test_dir();
    let first = CoordinatorConfig::from_file(&shipped("coordinator-1.toml")).unwrap();
    for n in 1..=3u64 {
        let name = format!("coordinator-{n}.toml");
        let text = read(&shipped(&name));
        // The loader refuses unknown keys (deny_unknown_fields), so parsing is the key check;
        // resolving also runs the checks a starting node runs (timings, trust, breakers).
        let config = CoordinatorConfig::from_file(&shipped(&name)).unwrap();
        resolve_in(dir.path(), &name, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The optional settings, commented out, are real keys with valid values too.
        let optional = with_optional_settings(&text);
        assert!(optional.contains("\ntls_cert = "), "{name}: {optional}");
        let all = resolve_in(dir.path(), &name, &optional)
            .unwrap_or_else(|e| panic!("{name} with its optional settings: {e}"));
        assert!(all.tls_cert.is_some() && all.restart_command.is_some());
        assert!(all.visualization_path.is_some());

        // What makes the file this host's, and what the units and the README rely on.
        assert_eq!(config.node_id, n, "{name}");
        assert_eq!(
            config.peers.get(&n),
            Some(&config.listen.to_string()),
            "{name}: `listen` is this node's entry in [peers]"
        );
        assert_eq!(config.listen.port(), 8080, "{name}");
        assert_eq!(
            config.peers, first.peers,
            "{name}: the same [peers] everywhere"
        );
        assert_eq!(config.peers.len(), 3, "{name}");
        assert_eq!(
            config.db_path.parent(),
            Some(Path::new("/var/lib/testfleet")),
            "{name}: the coordinator unit's StateDirectory"
        );
        assert_eq!(config.data_dir(), Path::new("/var/lib/testfleet"), "{name}");
        assert_eq!(
            config.auth_dir.as_deref(),
            Some(Path::new("/etc/testfleet/auth")),
            "{name}: tokens on by default"
        );
        assert!(!config.insecure, "{name}");
        // Apart from the id and the address (and the title line), the files are one file.
        let same = |config: &CoordinatorConfig| CoordinatorConfig {
            node_id: 0,
            listen: "0.0.0.0:0".parse().unwrap(),
            ..config.clone()
        };
        assert_eq!(same(&config), same(&first), "{name}");
    }
    // A positive control: the switch-on above does reach the loader, which refuses a key it
    // does not know.
    let bad = with_optional_settings("node_id = 1\n# no_such_key = 1\n");
    let err = resolve_in(dir.path(), "bad.toml", &bad).unwrap_err();
    assert!(err.contains("unknown field `no_such_key`"), "{err}");
}

/// The variables of an EnvironmentFile, in order: `KEY=VALUE` lines (a value may be quoted);
/// with `commented`, also the `#KEY=VALUE` lines of settings shown switched off.
fn env_file(text: &str, commented: bool) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| match line.strip_prefix('#') {
            Some(rest) if commented && rest.starts_with("TESTFLEET_") => Some(rest),
            Some(_) => None,
            None => Some(line),
        })
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?}"));
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (key.trim().to_string(), value.to_string())
        })
        .collect()
}

/// The `Key=` values of a unit file, in order (`Key` may repeat).
fn unit(name: &str) -> Vec<(String, String)> {
    read(&shipped(&format!("systemd/{name}")))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The one value of `key` in `unit`.
fn one<'a>(unit: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<&str> = unit
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "{key}: {values:?}");
    values[0]
}

/// A systemd time span as the units write them (`30s`, `6min`).
fn span(text: &str) -> Duration {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap();
    let n: u64 = text[..split].parse().unwrap();
    match &text[split..] {
        "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(60 * n),
        other => panic!("unit {other:?} of {text:?}"),
    }
}

#[test]
fn worker_env_names_only_variables_the_worker_reads() {
    let env = read(&shipped("worker.env"));
    let (code, help, err) = cli(&["worker", "--help"], Path::new("."), &[]);
    assert_eq!(code, 0, "{err}");
    for (key, _) in env_file(&env, true) {
        assert!(
            help.contains(&format!("[env: {key}=")),
            "worker.env sets {key}, which `testfleet worker --help` does not list:\n{help}"
        );
    }
    let set: BTreeMap<String, String> = env_file(&env, false).into_iter().collect();
    for key in [
        "TESTFLEET_COORDINATOR",
        "TESTFLEET_TOKEN_FILE",
        "TESTFLEET_WORKER_STATE_DIR",
        "TESTFLEET_WORKER_GRACE",
    ] {
        assert!(set.contains_key(key), "worker.env must set {key}");
    }
    assert_eq!(
        set["TESTFLEET_COORDINATOR"].split(',').count(),
        3,
        "every coordinator"
    );
    assert_eq!(
        set["TESTFLEET_TOKEN_FILE"], "/etc/testfleet/auth/worker.token",
        "the worker token where the coordinators' auth_dir keeps it"
    );
}

#[test]
fn the_units_start_what_the_readme_installs() {
    let readme = read(&shipped("README.md"));
    let env: BTreeMap<String, String> = env_file(&read(&shipped("worker.env")), false)
        .into_iter()
        .collect();
    let grace = testfleet::plan::parse_duration(&env["TESTFLEET_WORKER_GRACE"]).unwrap();

    let coordinator = unit("testfleet-coordinator.service");
    let config = "/etc/testfleet/coordinator.toml";
    assert_eq!(
        one(&coordinator, "ExecStart"),
        format!("/usr/local/bin/testfleet coordinator --config {config}")
    );
    for n in 1..=3 {
        let install = format!("cluster/coordinator-{n}.toml {config}");
        assert!(readme.contains(&install), "README: `{install}`");
    }
    assert_eq!(one(&coordinator, "StateDirectory"), "testfleet");
    assert_eq!(one(&coordinator, "ReadWritePaths"), "/var/lib/testfleet");

    for name in ["testfleet-worker.service", "testfleet-worker@.service"] {
        let worker = unit(name);
        assert!(
            one(&worker, "ExecStart").starts_with("/usr/local/bin/testfleet worker"),
            "{name}"
        );
        assert_eq!(
            one(&worker, "EnvironmentFile"),
            "/etc/testfleet/worker.env",
            "{name}"
        );
        assert_eq!(one(&worker, "KillMode"), "mixed", "{name}");
        // systemd must not SIGKILL a draining worker before it has handed its tasks back.
        let stop = span(one(&worker, "TimeoutStopSec"));
        assert!(
            stop >= grace + Duration::from_secs(30),
            "{name}: TimeoutStopSec {stop:?} vs TESTFLEET_WORKER_GRACE {grace:?}"
        );
        // The state directory the worker is told to use is the one systemd makes for it, and
        // the tests run below it.
        let state = one(&worker, "StateDirectory");
        let first = state.split_whitespace().next().unwrap();
        assert_eq!(
            env["TESTFLEET_WORKER_STATE_DIR"],
            format!("/var/lib/{first}"),
            "{name}"
        );
        assert!(
            one(&worker, "WorkingDirectory").starts_with(&env["TESTFLEET_WORKER_STATE_DIR"]),
            "{name}"
        );
        assert!(
            readme.contains(&format!("cluster/systemd/{name}")),
            "{name}"
        );
    }
    assert!(readme.contains("cluster/worker.env /etc/testfleet/worker.env"));
    for name in [
        "testfleet-coordinator.service",
        "testfleet-worker.service",
        "testfleet-worker@.service",
    ] {
        let unit = unit(name);
        assert_eq!(one(&unit, "User"), "testfleet", "{name}");
        assert_eq!(one(&unit, "Restart"), "on-failure", "{name}");
        assert_eq!(one(&unit, "NoNewPrivileges"), "yes", "{name}");
        assert_eq!(one(&unit, "ProtectSystem"), "strict", "{name}");
        assert_eq!(one(&unit, "CapabilityBoundingSet"), "", "{name}");
        assert!(!one(&unit, "LimitNOFILE").is_empty(), "{name}");
    }
}

/// Runs the binary with `args` and `env` (inherited `TESTFLEET_*` variables removed): (exit
/// code, stdout, stderr).
fn cli(args: &[&str], dir: &Path, env: &[(&str, String)]) -> (i32, String, String) {
    let out = command(dir, env)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the testfleet binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary, in `dir`, with none of this process's `TESTFLEET_*` variables and `env`.
fn command(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TESTFLEET_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// A child process killed (SIGKILL) when dropped, with the file its stderr goes to.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(mut command: Command, log: PathBuf) -> Running {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn the testfleet binary");
        Running { child, log }
    }

    /// Panics with the log if the process has exited.
    fn alive(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{what} exited ({status}); its log:\n{}", read(&self.log));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over plain HTTP/1.1, as `curl http://addr/path` does: (status, Location header,
/// body).
async fn http_get(addr: &str, path: &str) -> (u16, Option<String>, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let location = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim().to_string());
    (status, location, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_files_run_a_three_node_cluster_and_a_worker() {
    let dir = test_dir();
    let root = dir.path();

    // Credentials as the README makes them, with the real binary.
    let auth = root.join("etc-testfleet").join("auth");
    std::fs::create_dir_all(auth.parent().unwrap()).unwrap();
    let (code, out, err) = cli(&["auth", "init", auth.to_str().unwrap()], root, &[]);
    assert_eq!(code, 0, "auth init: {out}{err}");
    let operator_token = auth.join("operator.token");
    let worker_token = auth.join("worker.token");

    // Three nodes on loopback: the files' addresses and paths are another machine's.
    let ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = (1..=3)
        .map(|n| format!("{n}={}", addrs[n - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for n in 1..=3usize {
        let data = root.join(format!("node-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        let config = shipped(&format!("coordinator-{n}.toml"));
        let env = [
            ("TESTFLEET_BIND", "127.0.0.1".to_string()),
            ("TESTFLEET_PORT", ports[n - 1].to_string()),
            ("TESTFLEET_PEERS", peers.clone()),
            (
                "TESTFLEET_DB_PATH",
                data.join("testfleet.duckdb").display().to_string(),
            ),
            ("TESTFLEET_DATA_DIR", data.display().to_string()),
            ("TESTFLEET_AUTH_DIR", auth.display().to_string()),
            // Three nodes share this machine's cores and memory.
            ("TESTFLEET_DUCKDB_THREADS", "1".to_string()),
            ("TESTFLEET_DUCKDB_MEMORY_LIMIT", "256MB".to_string()),
        ];
        let mut command = command(&data, &env);
        command
            .args(["coordinator", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info");
        nodes.push(Running::start(command, root.join(format!("node-{n}.log"))));
    }

    let operator = Credentials::none().with_token(Token::read(&operator_token).unwrap());
    for (n, addr) in addrs.iter().enumerate() {
        nodes[n].alive(&format!("coordinator {}", n + 1));
        let mut control = client_as(addr, &operator).await;
        super::support::wait_for_leader(&mut control).await;
    }

    // The operator's view, through the commands the README shows.
    let operator_env = [
        ("TESTFLEET_COORDINATOR", addrs.join(",")),
        ("TESTFLEET_TOKEN_FILE", operator_token.display().to_string()),
    ];
    let (code, status, err) = cli(&["status"], root, &operator_env);
    assert_eq!(code, 0, "status: {err}");
    assert!(status.starts_with("Leader: "), "{status}");
    let (code, members, err) = cli(&["cluster", "members", "-o", "json"], root, &operator_env);
    assert_eq!(code, 0, "cluster members: {err}");
    let members: serde_json::Value = serde_json::from_str(&members).unwrap();
    let lines = members["members"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{members}");
    assert!(lines.iter().all(|m| m["role"] == "voter"), "{members}");
    assert_eq!(
        lines.iter().filter(|m| m["leader"] == true).count(),
        1,
        "{members}"
    );
    for addr in &addrs {
        // Probes and metrics are open (metrics_auth = false); the dashboard asks for a login.
        let (code, _, body) = http_get(addr, "/readyz").await;
        assert_eq!(code, 200, "{addr}/readyz: {body}");
        let (code, _, body) = http_get(addr, "/metrics").await;
        assert_eq!(code, 200, "{addr}/metrics");
        assert!(body.contains("testfleet_raft_term"), "{body}");
        let (code, location, _) = http_get(addr, "/").await;
        assert!(
            (300..400).contains(&code) && location.as_deref().is_some_and(|l| l.contains("/login")),
            "{addr}/: {code} {location:?}"
        );
    }

    // A worker with the variables of worker.env; only the coordinators, its token, its state
    // directory (a root-owned path here) and the browser probe (seconds per installed browser)
    // differ.
    let mut env: BTreeMap<String, String> = env_file(&read(&shipped("worker.env")), false)
        .into_iter()
        .collect();
    env.insert("TESTFLEET_COORDINATOR".into(), addrs.join(","));
    env.insert(
        "TESTFLEET_TOKEN_FILE".into(),
        worker_token.display().to_string(),
    );
    let state = root.join("worker-state");
    let work = state.join("work");
    std::fs::create_dir_all(&work).unwrap();
    env.insert(
        "TESTFLEET_WORKER_STATE_DIR".into(),
        state.display().to_string(),
    );
    env.insert("TESTFLEET_PROBE_BROWSERS".into(), "none".into());
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut worker_command = command(&work, &env);
    worker_command.arg("worker");
    let mut worker = Running::start(worker_command, root.join("worker.log"));

    // One task, run to its end as an operator runs a plan.
    let plan = root.join("plan.toml");
    std::fs::write(
        &plan,
        "name = \"cluster-dir\"\n[[task]]\nname = \"hello\"\n\
         command = [\"sh\", \"-c\", \"echo hello from $(pwd)\"]\ntimeout = \"60s\"\n",
    )
    .unwrap();
    let mut run = command(root, &operator_env);
    run.args(["run", plan.to_str().unwrap()]);
    let mut run = Running::start(run, root.join("run.log"));
    let code = exit_code(&mut run.child, LIMIT);
    worker.alive("the worker");
    assert_eq!(
        code,
        Some(0),
        "run: {}\nworker log:\n{}",
        read(&run.log),
        read(&worker.log)
    );

    // It ran on the worker of worker.env: its default name (no TESTFLEET_WORKER_NAME), its
    // labels, its working directory.
    let control = client_as(&addrs[0], &operator).await;
    let rows = eventually(LIMIT, "the worker's row and the task's attempt", || {
        let mut control = control.clone();
        async move {
            let rows = query_consistent(
                &mut control,
                "SELECT w.id, w.labels::VARCHAR, a.output_tail FROM task_attempts a \
                 JOIN workers w ON w.id = a.worker_id",
            )
            .await;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await;
    let name = rows[0][0].as_str().unwrap();
    assert!(name.ends_with("-1"), "the default name HOST-1: {name}");
    let labels = rows[0][1].as_str().unwrap();
    assert!(
        labels.contains("\"os\":\"linux\"") && labels.contains("\"pool\":\"default\""),
        "{labels}"
    );
    let output = rows[0][2].as_str().unwrap_or_default();
    assert!(
        output.contains(&format!("hello from {}", work.display())),
        "{output}"
    );

    // Every replica agrees.
    let (code, out, err) = cli(&["cluster", "check"], root, &operator_env);
    assert_eq!(code, 0, "cluster check: {out}{err}");
    for (n, node) in nodes.iter_mut().enumerate() {
        node.alive(&format!("coordinator {}", n + 1));
    }
}
