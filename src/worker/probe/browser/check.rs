//! Checking one browser: serve [`PAGE`] on loopback, run the browser headless on it, read what
//! the page posts back.
//!
//! The server ([`Server`]) is a few lines of HTTP/1.1 over a tokio listener on `127.0.0.1:0`:
//! it answers `GET /TOKEN/` with the page and `POST /TOKEN/result` with 204, handing the body
//! on; anything else is a 404, and every response closes its connection. `TOKEN` is random per
//! check, so only the page the probe served can answer it. The page runs each step —
//! `requestAdapter()`, `createContext()` — against a timer of its own (a third of the
//! browser's timeout), so a step that never settles still leaves the page time to say what it
//! saw. The browser runs in a [`Group`] with a temporary profile, both gone when the check
//! ends, however it ends.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::discover::{self, Found};
use super::process::{Group, last_line, tail};
use super::{BrowserReport, Kind, Page};

/// The page a browser runs. `__STEP_MS__` is replaced with each step's time limit.
pub const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>testfleet browser probe</title>
<script>
"use strict";
const STEP_MS = __STEP_MS__;
function within(promise, what) {
  const late = new Promise((_, reject) => setTimeout(
    () => reject(new Error(what + " did not settle within " + STEP_MS + " ms")), STEP_MS));
  return Promise.race([promise, late]);
}
function text(e) {
  return e && e.name && e.message !== undefined ? e.name + ": " + e.message : String(e);
}
function post(result) {
  return fetch("result", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(result),
  });
}
(async () => {
  const r = {
    user_agent: navigator.userAgent,
    gpu_api: "gpu" in navigator && !!navigator.gpu,
    adapter: null,
    gpu_error: null,
    ml_api: "ml" in navigator && !!navigator.ml,
    ml_context: false,
    ml_error: null,
  };
  if (r.gpu_api) {
    try {
      const a = await within(navigator.gpu.requestAdapter(), "requestAdapter()");
      if (a) {
        const info = a.info || {};
        r.adapter = {
          vendor: String(info.vendor || ""),
          architecture: String(info.architecture || ""),
          description: String(info.description || ""),
          fallback: !!(info.isFallbackAdapter ?? a.isFallbackAdapter),
        };
      }
    } catch (e) { r.gpu_error = text(e); }
  }
  if (r.ml_api) {
    try {
      r.ml_context = !!(await within(navigator.ml.createContext(), "createContext()"));
    } catch (e) { r.ml_error = text(e); }
  }
  await post(r);
})().catch((e) => post({ user_agent: navigator.userAgent, gpu_error: "the page failed: " + text(e) }));
</script>
"#;

/// Bytes of a request's head, or of the page's result, read at most.
const MAX_REQUEST: usize = 64 * 1024;
/// Bytes of a browser's output kept, for the reason it exited.
const OUTPUT_KEPT: usize = 8 * 1024;
/// Of the browser's timeout, what `--version` may take at most.
const VERSION_LIMIT: Duration = Duration::from_secs(5);

/// How a temporary profile's name starts, before the worker's pid.
pub const PROFILE_PREFIX: &str = "testfleet-browser-";

/// Removes from `dir` the temporary profiles of workers that were killed before they could
/// remove them (`PROFILE_PREFIX` + a pid that no longer runs). Their browsers died with them
/// (`PR_SET_PDEATHSIG`); the directories did not. Returns how many it removed.
pub fn remove_orphaned_profiles(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PROFILE_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !runs(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Process `pid` exists (perhaps as someone else's).
fn runs(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A duration as a reason says it: `20s`, `1.5s`.
pub fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Finds `found`'s version and checks it, within `timeout` for both.
pub async fn browser(found: &Found, timeout: Duration) -> BrowserReport {
    let started = Instant::now();
    let version = discover::version(&found.path, timeout.min(VERSION_LIMIT)).await;
    let left = timeout.saturating_sub(started.elapsed());
    let page = page(found, left, timeout).await;
    let took = started.elapsed();
    let (version, version_error) = match version {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let report = BrowserReport {
        kind: found.kind,
        path: found.path.clone(),
        version,
        failure: page.as_ref().err().cloned(),
        page: page.ok(),
        took_ms: took.as_millis() as u64,
    };
    tracing::debug!(
        browser = found.kind.as_str(),
        path = %found.path.display(),
        version = report.version.as_deref().unwrap_or(""),
        version_error = version_error.as_deref().unwrap_or(""),
        webgpu_supported = report.webgpu_supported(),
        webnn_supported = report.webnn_supported(),
        took_ms = report.took_ms,
        reason = report.reason().as_deref().unwrap_or(""),
        "browser check"
    );
    report
}

/// Runs the browser on the page for at most `budget` and returns what the page posted.
/// `timeout` is the browser's whole timeout, as the reason states it.
async fn page(found: &Found, budget: Duration, timeout: Duration) -> Result<Page, String> {
    let timed_out = || format!("timed out after {}", seconds(timeout));
    if budget.is_zero() {
        return Err(timed_out());
    }
    let step = (timeout / 3).max(Duration::from_millis(500));
    let mut server = Server::start(step)
        .await
        .map_err(|e| format!("cannot serve the page: {e}"))?;
    // Declared before the group, so dropped after it: removed once the browser is dead.
    let profile = tempfile::Builder::new()
        .prefix(&format!("{PROFILE_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| format!("cannot make a temporary profile: {e}"))?;
    if found.kind == Kind::Firefox {
        std::fs::write(profile.path().join("user.js"), firefox_prefs())
            .map_err(|e| format!("cannot write the profile's prefs: {e}"))?;
    }
    let mut command = Command::new(&found.path);
    command.args(arguments(
        found.kind,
        &server.url(),
        profile.path(),
        is_root(),
    ));
    for (name, dir) in environment(profile.path()) {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        command.env(name, dir);
    }
    if found.kind == Kind::Firefox {
        command.env("MOZ_HEADLESS", "1");
    }
    let mut group = Group::spawn(command).map_err(|e| format!("cannot start: {e}"))?;
    // Drained all along (a full pipe would stop the browser); they end when the group dies.
    let stdout = tokio::spawn(tail(group.child().stdout.take(), OUTPUT_KEPT));
    let stderr = tokio::spawn(tail(group.child().stderr.take(), OUTPUT_KEPT));
    let outcome = tokio::select! {
        biased;
        result = server.result() => Some(Ok(result)),
        status = group.wait() => Some(Err(status)),
        () = tokio::time::sleep(budget) => None,
    };
    group.stop().await;
    let Some(outcome) = outcome else {
        return Err(timed_out());
    };
    match outcome {
        Ok(result) => result,
        Err(status) => {
            let err = stderr.await.unwrap_or_default();
            let out = stdout.await.unwrap_or_default();
            let said = last_line(&err, 160)
                .or_else(|| last_line(&out, 160))
                .map_or_else(String::new, |line| format!(": {line}"));
            Err(match status {
                Ok(status) => format!("exited ({status}) before the page answered{said}"),
                Err(e) => format!("lost the browser process: {e}"),
            })
        }
    }
}

/// The directories the browser is told to use, all inside its temporary profile, so that
/// removing the profile removes everything it wrote. `TMPDIR` matters most: Chromium makes its
/// process-singleton directory (`org.chromium.Chromium.` and a random suffix, holding a socket
/// and a cookie) there, and a browser that is killed, as every probe's is, never removes it, so
/// each probe left one in `/tmp`.
pub fn environment(profile: &Path) -> [(&'static str, PathBuf); 3] {
    [
        ("XDG_CONFIG_HOME", profile.join("config")),
        ("XDG_CACHE_HOME", profile.join("cache")),
        ("TMPDIR", profile.join("tmp")),
    ]
}

/// The browser's command line, without the program.
pub fn arguments(kind: Kind, url: &str, profile: &Path, root: bool) -> Vec<String> {
    let profile = profile.display();
    let mut args: Vec<String> = Vec::new();
    if kind.is_chromium_family() {
        args.push("--headless=new".into());
        if root {
            // Chromium refuses to run as root with its sandbox.
            args.push("--no-sandbox".into());
        }
        args.extend(
            [
                &format!("--user-data-dir={profile}") as &str,
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                // Not --disable-crashpad-for-testing: Chromium 156 then never loads the page
                // (its network service crashes over and over). The crash handler it starts
                // leaves the group, and exits by itself once the browser is gone.
                "--disable-breakpad",
                "--no-pings",
                "--mute-audio",
                "--password-store=basic",
                "--use-mock-keychain",
                "--no-proxy-server",
                // Loopback only: every host name resolves to nothing.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ]
            .map(String::from),
        );
    } else {
        args.extend(
            [
                "-headless",
                "-no-remote",
                "-new-instance",
                "-profile",
                &profile.to_string(),
            ]
            .map(String::from),
        );
    }
    if kind.is_chromium_family() {
        args.extend(kind.flags().iter().map(|f| f.to_string()));
    }
    args.push(url.to_string());
    args
}

/// Firefox's prefs for the temporary profile: WebGPU on ([`Kind::flags`]), and nothing that
/// reaches the network.
fn firefox_prefs() -> String {
    let mut prefs: Vec<String> = Kind::Firefox
        .flags()
        .iter()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| format!("user_pref(\"{k}\", {v});"))
        .collect();
    for (pref, value) in [
        ("app.update.enabled", "false"),
        ("app.update.auto", "false"),
        ("browser.shell.checkDefaultBrowser", "false"),
        ("browser.startup.homepage_override.mstone", "\"ignore\""),
        ("browser.aboutwelcome.enabled", "false"),
        ("datareporting.policy.dataSubmissionEnabled", "false"),
        ("datareporting.healthreport.uploadEnabled", "false"),
        ("toolkit.telemetry.enabled", "false"),
        ("toolkit.telemetry.reportingpolicy.firstRun", "false"),
        ("network.captive-portal-service.enabled", "false"),
        ("network.connectivity-service.enabled", "false"),
        ("network.proxy.type", "0"),
        ("extensions.update.enabled", "false"),
        ("browser.safebrowsing.malware.enabled", "false"),
        ("browser.safebrowsing.phishing.enabled", "false"),
        ("browser.safebrowsing.downloads.enabled", "false"),
        ("services.settings.server", "\"http://127.0.0.1:9/\""),
    ] {
        prefs.push(format!("user_pref(\"{pref}\", {value});"));
    }
    prefs.join("\n") + "\n"
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The page's server: one listener on loopback, for one check.
pub struct Server {
    port: u16,
    token: String,
    results: mpsc::Receiver<Result<Page, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Listens on `127.0.0.1:0` and serves [`PAGE`] with `step` as its steps' limit.
    pub async fn start(step: Duration) -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let page = PAGE.replace("__STEP_MS__", &step.as_millis().to_string());
        let (tx, results) = mpsc::channel(1);
        let task = tokio::spawn(serve(listener, page, token.clone(), tx));
        Ok(Server {
            port,
            token,
            results,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{}/", self.port, self.token)
    }

    /// What the page posted (waits until it does).
    pub async fn result(&mut self) -> Result<Page, String> {
        match self.results.recv().await {
            Some(result) => result,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    page: String,
    token: String,
    results: mpsc::Sender<Result<Page, String>>,
) {
    let page = std::sync::Arc::new(page);
    // Dropped, with every connection in it, when the server is.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (page, token, results) = (page.clone(), token.clone(), results.clone());
                    connections.spawn(async move {
                        if let Err(e) = answer(stream, &page, &token, &results).await {
                            tracing::debug!(%e, "browser probe: a connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(%e, "browser probe: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// A request, as far as the server reads it.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub content_length: usize,
    /// Bytes of the head, up to and with the blank line.
    pub len: usize,
}

/// Parses a request's head from the bytes read so far: `Ok(None)` while the blank line that
/// ends it has not come.
pub fn parse_head(bytes: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| "a head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (request.next(), request.next()) else {
        return Err(format!("a bad request line {text:?}"));
    };
    let mut content_length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| format!("a bad Content-Length {value:?}"))?;
        }
    }
    Ok(Some(Head {
        method: method.to_string(),
        target: target.to_string(),
        content_length,
        len: end + 4,
    }))
}

/// Answers one request on `stream` and closes it.
async fn answer(
    mut stream: TcpStream,
    page: &str,
    token: &str,
    results: &mpsc::Sender<Result<Page, String>>,
) -> io::Result<()> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head = loop {
        if let Some(head) = parse_head(&bytes).map_err(io::Error::other)? {
            break head;
        }
        if bytes.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", b"").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let page_path = format!("/{token}/");
    let result_path = format!("/{token}/result");
    match (head.method.as_str(), head.target.as_str()) {
        ("GET", target) if target == page_path => {
            respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                page.as_bytes(),
            )
            .await
        }
        ("POST", target) if target == result_path => {
            if head.content_length > MAX_REQUEST {
                return respond(&mut stream, "413 Content Too Large", "", b"").await;
            }
            let mut body = bytes.split_off(head.len);
            while body.len() < head.content_length {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                body.extend_from_slice(&buf[..n]);
            }
            body.truncate(head.content_length);
            let result = serde_json::from_slice::<Page>(&body)
                .map_err(|e| format!("the page posted something unreadable: {e}"));
            let _ = results.try_send(result);
            respond(&mut stream, "204 No Content", "", b"").await
        }
        _ => respond(&mut stream, "404 Not Found", "", b"").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
