//! The dashboard in a real headless Chromium (installed by `.ci/run`): a 3-node cluster with
//! two workers, the page opened on a follower with the operator's cookie; it shows the leader
//! and both workers healthy, then one worker is SIGKILLed and the page — never reloaded (a
//! marker set in the page survives) — shows it failed. A screenshot is saved as the test's
//! artifact. Chromium is driven over its DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL on file descriptors 3 and 4), so
//! the test needs no driver or network port.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use testfleet::auth::Role;

use super::support::{WorkerProcess, local_cluster, test_dir, token_file};

/// Generous: Chromium starts slowly on a loaded 2-core machine (a full test run beside it).
const LIMIT: Duration = Duration::from_secs(120);

/// A headless Chromium and the DevTools pipe to it.
struct Browser {
    child: Child,
    commands: std::fs::File,
    replies: mpsc::Receiver<Value>,
    next: u64,
    _profile: tempfile::TempDir,
}

fn chromium() -> String {
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        let found = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
        if let Some(path) = found {
            return path.display().to_string();
        }
    }
    panic!("no Chromium on PATH: install it (Debian: apt-get install chromium; .ci/run does)");
}

/// Two pipes `(read, write)`, close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start() -> Browser {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (reply_read, reply_write) = pipe();
        let (cmd_fd, reply_fd) = (cmd_read.as_raw_fd(), reply_write.as_raw_fd());
        let mut command = Command::new(chromium());
        command
            .args([
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--no-proxy-server",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if unsafe { libc::geteuid() } == 0 {
            command.arg("--no-sandbox");
        }
        command.arg("about:blank");
        // Chromium reads commands on fd 3 and writes replies on fd 4.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_fd, 3) < 0 || libc::dup2(reply_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop(cmd_read);
        drop(reply_write);
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(reply_read));
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        Browser {
            child,
            commands: std::fs::File::from(cmd_write),
            replies,
            next: 0,
            _profile: profile,
        }
    }

    /// Calls `method` (on the page's session, if given) and returns its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    panic!("{method}: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` evaluates to `want`; the last value otherwise, in the panic.
    fn wait_for(&mut self, session: &str, expression: &str, want: &Value, what: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let got = self.eval(session, expression);
            if &got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the page shows {got}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_leader_and_a_killed_worker_failing_without_a_reload() {
    let dir = test_dir();
    let cluster = local_cluster(3, dir.path(), &[]);
    let leader = cluster.leader(LIMIT, None).await.unwrap();
    let addr = cluster.addr(leader).to_string();
    let _w1 = WorkerProcess::start_with(&addr, "w1", dir.path(), &["--no-probe"]);
    let mut w2 = WorkerProcess::start_with(&addr, "w2", dir.path(), &["--no-probe"]);
    // Any node serves the dashboard: open it on a follower.
    let follower = (cluster.addresses().into_iter())
        .find(|(id, _)| *id != leader)
        .map(|(_, a)| a)
        .unwrap();
    let token = std::fs::read_to_string(token_file(Role::Operator)).unwrap();
    let shot = dir.path().join("dashboard.png");
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");

    tokio::task::block_in_place(|| {
        let mut browser = Browser::start();
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let page = attached["sessionId"].as_str().unwrap().to_string();
        browser.call(
            None,
            "Storage.setCookies",
            json!({ "cookies": [{
                "name": "testfleet_token",
                "value": token.trim(),
                "url": format!("http://{follower}/"),
            }] }),
        );
        browser.call(
            Some(&page),
            "Page.navigate",
            json!({ "url": format!("http://{follower}/") }),
        );

        let workers = "Array.from(document.querySelectorAll('tr[data-worker]')).map(r => \
                       r.dataset.worker + ':' + r.querySelector('.status').textContent).join(',')";
        browser.wait_for(
            &page,
            "document.getElementById('leader') && document.getElementById('leader').textContent",
            &json!(format!("node {leader}")),
            "the leader",
        );
        browser.wait_for(
            &page,
            workers,
            &json!("w1:healthy,w2:healthy"),
            "two healthy workers",
        );
        browser.wait_for(
            &page,
            "document.getElementById('live').textContent.startsWith('live')",
            &json!(true),
            "the live stream",
        );
        // The four pictures load (SVG rendered by the node itself).
        browser.wait_for(
            &page,
            "Array.from(document.querySelectorAll('.pictures img')).filter(i => i.complete && i.naturalWidth > 0).length",
            &json!(4),
            "the four pictures",
        );
        // A reload would lose this.
        browser.eval(&page, "window.__kept = 42");

        w2.kill();
        let deadline = Instant::now() + LIMIT;
        loop {
            let shown = browser.eval(&page, workers);
            // Failed, then recovery's states: any of them is the page following the kill
            // (on a loaded machine a poll can miss the short `failed` in between).
            let after_failure = ["failed", "recovering", "permanently_failed"]
                .map(|s| json!(format!("w1:healthy,w2:{s}")));
            if after_failure.contains(&shown) {
                break;
            }
            assert!(Instant::now() < deadline, "w2 never shown failed: {shown}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            browser.eval(&page, "window.__kept"),
            json!(42),
            "the page was not reloaded"
        );

        let png = browser.call(
            Some(&page),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(&shot, &bytes).unwrap();
        std::fs::write(&artifact, &bytes).unwrap();
        eprintln!(
            "dashboard screenshot: {} ({} bytes)",
            artifact.display(),
            bytes.len()
        );
    });
}
