//! Helpers shared by the integration tests: real `testfleet` processes on loopback.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openraft::alias::{LogIdOf, VoteOf};
use openraft::raft::VoteRequest;
use openraft::vote::RaftLeaderIdExt;
use openraft::vote::leader_id_adv::LeaderId;
use testfleet::auth::token::token_path;
use testfleet::auth::{AuthChannel, Credentials, Role, Token};
use testfleet::demo::launch::LocalCluster;
use testfleet::proto::control_client::ControlClient;
use testfleet::raft::TypeConfig;
use testfleet::raft_proto::RaftRequest;

/// The token files every coordinator of this test process checks: every test runs with auth
/// on, as a real installation does. Made once per process (in Cargo's scratch directory for
/// integration tests); tests of the auth refusals start their own coordinators.
pub fn auth_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("auth-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create the tests' auth directory");
        testfleet::auth::token::init(dir.path(), false).expect("make the tests' tokens");
        dir
    })
    .path()
}

/// The token file of `role`.
pub fn token_file(role: Role) -> std::path::PathBuf {
    token_path(auth_dir(), role)
}

/// What a client of `role` presents to the tests' coordinators (read once per process).
pub fn credentials(role: Role) -> Credentials {
    static CREDENTIALS: std::sync::OnceLock<std::collections::BTreeMap<Role, Credentials>> =
        std::sync::OnceLock::new();
    CREDENTIALS.get_or_init(|| {
        Role::ALL
            .into_iter()
            .map(|role| {
                let token = Token::read(&token_file(role)).expect("read a test token");
                (role, Credentials::none().with_token(token))
            })
            .collect()
    })[&role]
        .clone()
}

/// `addrs` as an operator reaches them.
pub fn operator(addrs: &[String]) -> testfleet::cli::Remote {
    testfleet::cli::Remote::new(addrs.to_vec(), credentials(Role::Operator))
}

/// A local cluster of `n` coordinator processes checking the tests' tokens.
pub fn local_cluster(n: u64, dir: &Path, extra: &[String]) -> LocalCluster {
    let mut args = vec!["--auth-dir".to_string(), auth_dir().display().to_string()];
    args.extend_from_slice(extra);
    LocalCluster::start(binary().as_ref(), n, dir, &args).expect("start a local cluster")
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_testfleet")
}

/// A temporary directory for one test's processes and files: removed when the test passes,
/// kept when it fails (panics), with its path printed, so that the coordinators' logs and
/// their DuckDB and redb files can be looked at after a rare failure.
pub struct TestDir(Option<tempfile::TempDir>);

/// A new [`TestDir`].
pub fn test_dir() -> TestDir {
    TestDir(Some(
        tempfile::tempdir().expect("create a temporary directory"),
    ))
}

impl TestDir {
    pub fn path(&self) -> &Path {
        self.0
            .as_ref()
            .expect("the directory lives until drop")
            .path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            let kept = dir.keep();
            eprintln!(
                "the test failed: its files (logs, DuckDB and redb) are kept in {}",
                kept.display()
            );
        }
    }
}

/// A coordinator process; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub addr: String,
    /// Its stderr lines from after it started listening.
    pub stderr: mpsc::Receiver<String>,
    /// What it wrote to stderr before it listened.
    pub startup: String,
}

impl Process {
    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit by itself: its exit status (`None` if it
    /// still runs) and every stderr line it wrote since it started listening.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait().expect("poll the child") {
                Some(status) => break Some(status),
                None if Instant::now() > deadline => break None,
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        // The pipe closes when the process is gone; a live one gives what it wrote so far.
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            lines.push(line);
        }
        (status, lines.join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `testfleet coordinator <args>` with `--port 0` and waits until it listens. It checks
/// the tests' tokens unless `args` name an `--auth-dir` of their own.
pub fn start_coordinator(args: &[&str], dir: &Path) -> Process {
    let auth = auth_dir().display().to_string();
    let own_auth = args.contains(&"--auth-dir") || args.contains(&"--insecure");
    let mut child = Command::new(binary())
        .arg("coordinator")
        .args(args)
        .args(if own_auth {
            vec![]
        } else {
            vec!["--auth-dir", auth.as_str()]
        })
        .args(["--port", "0"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the testfleet binary");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the test stops listening, or the child blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("coordinator listening")
                    && let Some(addr) = field(&line, "addr")
                {
                    return Process {
                        child,
                        addr,
                        stderr: rx,
                        startup: seen.join("\n"),
                    };
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the coordinator did not start listening within 60 s; its stderr:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// The value of `key=value` in a tracing line.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    Some(
        rest.split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// An operator's gRPC client, retried until the server accepts connections.
pub async fn client(addr: &str) -> ControlClient<AuthChannel> {
    client_as(addr, &credentials(Role::Operator)).await
}

/// A gRPC client presenting `credentials`, retried until the server accepts connections.
pub async fn client_as(addr: &str, credentials: &Credentials) -> ControlClient<AuthChannel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match testfleet::cli::connect(addr, credentials).await {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the node behind `control` names a leader.
pub async fn wait_for_leader(control: &mut ControlClient<AuthChannel>) {
    eventually(Duration::from_secs(30), "a leader", || {
        let mut control = control.clone();
        async move {
            let status = control
                .status(testfleet::proto::StatusRequest {})
                .await
                .ok()?;
            status.into_inner().leader_id
        }
    })
    .await;
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a query through the `Control` service and returns its rows as JSON values.
pub async fn query(
    client: &mut ControlClient<AuthChannel>,
    sql: &str,
) -> Vec<Vec<serde_json::Value>> {
    query_with(client, sql, false).await
}

/// Like [`query`], but linearizable: the node confirms it leads and writes everything applied
/// to DuckDB before reading (a plain read may lag by the flush interval).
pub async fn query_consistent(
    client: &mut ControlClient<AuthChannel>,
    sql: &str,
) -> Vec<Vec<serde_json::Value>> {
    query_with(client, sql, true).await
}

async fn query_with(
    client: &mut ControlClient<AuthChannel>,
    sql: &str,
    consistent: bool,
) -> Vec<Vec<serde_json::Value>> {
    let mut refusals = 0;
    let reply = loop {
        let result = client
            .query(testfleet::proto::QueryRequest {
                sql: sql.to_string(),
                consistent,
                timeout_ms: 0,
            })
            .await;
        match result {
            // A read is always safe to repeat.
            Err(s) if refused_for_leadership(&s) && refusals < 200 => {
                refusals += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other.unwrap_or_else(|e| panic!("query {sql:?} failed: {e}")),
        }
    }
    .into_inner();
    reply
        .rows_json
        .iter()
        .map(|r| serde_json::from_str(r).expect("row JSON"))
        .collect()
}

/// Runs `testfleet bench ARGS --data-dir DIR -o json` to completion and returns its report;
/// the test fails with the benchmark's stderr if it fails or prints no JSON.
pub fn bench_json(args: &[&str], dir: &Path) -> serde_json::Value {
    let out = Command::new(binary())
        .arg("bench")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .args(["-o", "json"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run testfleet bench {args:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "testfleet bench {args:?}: exit {:?}\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stderr}"))
}

/// Runs the binary with `args` to completion, as an operator: (exit code, stdout, stderr).
pub fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    run_as(args, dir, Some(&token_file(Role::Operator)))
}

/// Runs the binary with `args` presenting the token in `token_file` (none: no token).
pub fn run_as(args: &[&str], dir: &Path, token_file: Option<&Path>) -> (i32, String, String) {
    let mut command = Command::new(binary());
    match token_file {
        Some(file) => command.env("TESTFLEET_TOKEN_FILE", file),
        None => command.env_remove("TESTFLEET_TOKEN_FILE"),
    };
    let out = command
        .args(args)
        .current_dir(dir)
        // A worker's run marker goes in the test's directory, not the home directory.
        .env("TESTFLEET_WORKER_STATE_DIR", dir)
        .env("NO_COLOR", "1")
        .env_remove("TESTFLEET_TOKEN")
        .env_remove("TESTFLEET_COORDINATOR")
        .stdin(Stdio::null())
        .output()
        .expect("run the testfleet binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `testfleet worker` process; killed (SIGKILL) when dropped.
/// A one-node cluster with one worker of one slot: (its directory, the cluster, the node's
/// address, the worker).
pub async fn one_node_one_worker() -> (TestDir, LocalCluster, String, WorkerProcess) {
    let dir = test_dir();
    let cluster = local_cluster(1, dir.path(), &[]);
    let leader = cluster.leader(Duration::from_secs(60), None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let worker = WorkerProcess::start(&addr, "w1", 1, dir.path());
    (dir, cluster, addr, worker)
}

/// Waits up to `limit` until the leader's answer to `sql` (a `count(*)`) is `n`.
pub async fn count_reaches(addr: &str, sql: &str, n: u64, limit: Duration) {
    eventually(limit, &format!("{sql} to reach {n}"), || async {
        let rows = query_consistent(&mut client(addr).await, sql).await;
        (rows[0][0].as_u64() == Some(n)).then_some(())
    })
    .await
}

/// Waits up to `limit` for `child` to exit; its exit code (`None`: still running, or killed by
/// a signal).
pub fn exit_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    pub fn start(coordinators: &str, name: &str, slots: u32, dir: &Path) -> WorkerProcess {
        WorkerProcess::start_with(coordinators, name, dir, &["--slots", &slots.to_string()])
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Commits `count` Bench commands through `addr`'s Control service with `writers` concurrent
/// proposers; returns the highest acknowledged log index.
pub async fn commit_bench(addr: &str, count: usize, writers: usize) -> u64 {
    let control = client(addr).await;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut control = control.clone();
        let share = count / writers + usize::from(w < count % writers);
        tasks.push(tokio::spawn(async move {
            let mut highest = 0;
            for _ in 0..share {
                // A node that knows no leader, or whose forward met a node that no longer
                // leads (an election, on a starved machine), refuses before proposing and
                // says to retry: the write is retried, never doubled.
                let mut refusals = 0;
                let reply = loop {
                    match control
                        .propose_bench(testfleet::proto::BenchRequest {
                            payload: vec![7; 16],
                        })
                        .await
                    {
                        Err(s) if refused_for_leadership(&s) && refusals < 200 => {
                            refusals += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        other => break other.expect("a write to a healthy cluster"),
                    }
                };
                highest = highest.max(reply.into_inner().log_index);
            }
            highest
        }));
    }
    let mut highest = 0;
    for t in tasks {
        highest = highest.max(t.await.unwrap());
    }
    highest
}

/// A refusal a node gives before it proposes or reads anything, because leadership is moving
/// (an election on a starved machine): the call can be repeated as it is.
fn refused_for_leadership(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (status.message().contains("no leader is known")
            || status.message().contains("already forwarded once; retry"))
}

/// Runs `testfleet cluster check -o json` (or the table output with `json` false) against
/// `addrs`: (exit code, stdout, stderr). Run off the async runtime: it takes seconds.
pub async fn cluster_check(addrs: &[String], json: bool) -> (i32, String, String) {
    let coordinators = addrs.join(",");
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["cluster", "check", "--coordinator", coordinators.as_str()];
        if json {
            args.extend(["-o", "json"]);
        }
        run(&args, &std::env::temp_dir())
    })
    .await
    .expect("run cluster check")
}

/// Like [`cluster_check`] with `-o json`: (exit code, the parsed report, stderr). Panics,
/// with the output, when stdout is not a JSON report.
pub async fn cluster_check_json(addrs: &[String]) -> (i32, serde_json::Value, String) {
    let (code, out, err) = cluster_check(addrs, true).await;
    let report = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("cluster check printed no JSON report ({e}); exit {code}\nstdout:\n{out}\nstderr:\n{err}")
    });
    (code, report, err)
}

/// A vote that, from a peer, makes the node adopt term 1000: a transfer-authorised election
/// with a log far ahead of the node's.
pub fn disruptive_vote() -> RaftRequest {
    let leader = LeaderId::new_committed(1000, 9);
    let mut vote = VoteRequest::<TypeConfig>::new(
        VoteOf::<TypeConfig>::new(1000, 9),
        Some(LogIdOf::<TypeConfig>::new(leader, 1 << 40)),
    );
    vote.leadership_transfer = true;
    RaftRequest {
        payload: testfleet::raft::network::encode("vote", &vote).unwrap(),
    }
}

/// The node's term, as it reports it.
pub async fn term(control: &mut ControlClient<AuthChannel>) -> u64 {
    control
        .status(testfleet::proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .term
}

/// `SELECT count(*) FROM <table>` (a table name, optionally with a WHERE clause), read
/// consistently.
pub async fn count(control: &mut ControlClient<AuthChannel>, table: &str) -> u64 {
    let rows = query_consistent(control, &format!("SELECT count(*) FROM {table}")).await;
    rows[0][0].as_u64().unwrap()
}

/// Waits until the node's status shows a term of at least `at_least`: a vote's reply can come
/// before its term shows, and the node may have campaigned again since.
pub async fn until_term(control: &mut ControlClient<AuthChannel>, at_least: u64) {
    eventually(
        Duration::from_secs(10),
        "the node to reach the term",
        || {
            let mut control = control.clone();
            async move { (term(&mut control).await >= at_least).then_some(()) }
        },
    )
    .await;
}

/// Writes `plan` (TOML) to `<dir>/<file>`, submits it with `run --detach` as an operator and
/// returns the job id.
pub fn submit_plan(dir: &Path, addr: &str, file: &str, plan: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, plan).expect("write the plan");
    let (code, job, err) = run(
        &[
            "run",
            path.to_str().unwrap(),
            "--detach",
            "--coordinator",
            addr,
        ],
        dir,
    );
    assert_eq!(code, 0, "run --detach {file}: {err}");
    job.trim().to_string()
}

impl WorkerProcess {
    /// A worker of one slot started with `extra` arguments (e.g. `--inject-fault SPEC`), its
    /// run marker in `dir` and its log appended to `<dir>/<name>.log` (across restarts).
    pub fn start_with(coordinators: &str, name: &str, dir: &Path, extra: &[&str]) -> WorkerProcess {
        Self::start_with_env(coordinators, name, dir, extra, &[])
    }

    /// As [`WorkerProcess::start_with`], with these environment variables set too.
    pub fn start_with_env(
        coordinators: &str,
        name: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> WorkerProcess {
        Self::spawn(coordinators, name, dir, dir, extra, env)
    }

    /// As [`WorkerProcess::start_with`], with `work_dir` as the worker's working directory
    /// (where its attempts of tasks without a `cwd` run) instead of `dir`, which still holds
    /// its run marker and its log.
    pub fn start_in(
        coordinators: &str,
        name: &str,
        dir: &Path,
        work_dir: &Path,
        extra: &[&str],
    ) -> WorkerProcess {
        Self::spawn(coordinators, name, dir, work_dir, extra, &[])
    }

    fn spawn(
        coordinators: &str,
        name: &str,
        dir: &Path,
        work_dir: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> WorkerProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .expect("worker log");
        let child = Command::new(binary())
            .args(["worker", "--coordinator", coordinators, "--name", name])
            .args(extra)
            .envs(env.iter().copied())
            .env("TESTFLEET_TOKEN_FILE", token_file(Role::Worker))
            .env("TESTFLEET_WORKER_STATE_DIR", dir)
            // The browser probe starts every installed browser (seconds each on a loaded
            // machine, and before the first hello): only the tests that pass
            // --probe-browsers get it.
            .env("TESTFLEET_PROBE_BROWSERS", "none")
            .current_dir(work_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn a worker");
        WorkerProcess { child }
    }

    /// Sends SIGTERM: the worker leaves (it finishes what it runs, then exits 0).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }
}

/// The lines of `log` that contain every one of `parts`.
pub fn log_lines<'a>(log: &'a str, parts: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .collect()
}

/// A tmpfs mounted on a directory; lazily unmounted (`umount -l`) when dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=1m`) on `dir` (created), read-only if asked.
    /// `None`, after saying why on stderr, when this process may not mount (it is not root):
    /// the caller skips the test. Any other failure panics.
    pub fn mount(dir: &Path, options: &str, read_only: bool) -> Option<Tmpfs> {
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(dir).expect("create the mount point");
        let target = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        let data = std::ffi::CString::new(options).unwrap();
        let flags = if read_only { libc::MS_RDONLY } else { 0 };
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        if rc == 0 {
            return Some(Tmpfs(dir.to_path_buf()));
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "mounting a tmpfs on {} failed: {err}",
            dir.display()
        );
        eprintln!(
            "SKIPPED: mounting a tmpfs needs root (CAP_SYS_ADMIN), which this test process lacks \
             ({err}); nothing was tested"
        );
        None
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2(2) with a valid path; MNT_DETACH, so an open file cannot keep it.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}
