//! The browser probe: its pure parts (versions, selections, discovery in a made-up `PATH`, the
//! report's keys, the server's requests), its bounds against fake browsers (a script that
//! never answers, one that exits at once), and the real headless Chromium of this machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::check::{Server, arguments, environment, parse_head};
use super::discover::{parse_version, select};
use super::process::members;
use super::*;

/// The real browser the tests run: Debian's `chromium` package (`.ci/run` installs it).
const CHROMIUM: &str = "/usr/bin/chromium";

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn only(kind: Kind, path: &Path, timeout: Duration) -> BrowserProbe {
    BrowserProbe::new(BrowserSettings {
        selection: Selection::Only(vec![Wanted::Path(kind, path.to_path_buf())]),
        timeout,
    })
}

#[test]
fn versions_are_the_first_dotted_number() {
    let cases = [
        (
            "Chromium 156.0.8078.129 built on Debian GNU/Linux 12 (bookworm)\n",
            Some("156.0.8078.129"),
        ),
        ("Google Chrome 131.0.6778.85 \n", Some("131.0.6778.85")),
        (
            "Microsoft Edge 131.0.2903.70 unknown\n",
            Some("131.0.2903.70"),
        ),
        ("Mozilla Firefox 128.5.0esr\n", Some("128.5.0esr")),
        ("Chromium 12 beta", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_version(text).as_deref(), want, "{text:?}");
    }
}

#[test]
fn selections() {
    assert_eq!(parse_selection("auto"), Ok(Selection::Auto));
    assert_eq!(parse_selection("none"), Ok(Selection::None));
    assert_eq!(
        parse_selection("chromium, google-chrome,/opt/x/msedge,firefox=/opt/ff/run"),
        Ok(Selection::Only(vec![
            Wanted::Kind(Kind::Chromium),
            Wanted::Kind(Kind::Chrome),
            Wanted::Path(Kind::Edge, "/opt/x/msedge".into()),
            Wanted::Path(Kind::Firefox, "/opt/ff/run".into()),
        ]))
    );
    for (bad, why) in [
        ("netscape", "unknown browser \"netscape\""),
        ("/opt/x/browser", "write KIND=/opt/x/browser"),
        ("opera=/opt/opera", "unknown browser \"opera\""),
    ] {
        let err = parse_selection(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

/// Two directories on `PATH`: `chromium` in the first and a symlink to it under another name
/// in the second is one browser; a file that is not executable is not one; the order is
/// Chromium, Chrome, Edge, Firefox whatever the directories' order.
#[test]
fn discovery_finds_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let chromium = script(&a, "chromium", "exit 0");
    std::os::unix::fs::symlink(&chromium, b.join("chromium-browser")).unwrap();
    script(&a, "firefox", "exit 0");
    script(&b, "google-chrome-stable", "exit 0");
    std::fs::write(a.join("microsoft-edge"), "not executable").unwrap();
    let path_var = std::env::join_paths([&b, &a]).unwrap();

    let (found, looked_for) = select(&Selection::Auto, &path_var, &[]);
    let listed: Vec<(Kind, PathBuf)> = found.iter().map(|f| (f.kind, f.path.clone())).collect();
    assert_eq!(
        listed,
        [
            (Kind::Chromium, a.join("chromium")),
            (Kind::Chrome, b.join("google-chrome-stable")),
            (Kind::Firefox, a.join("firefox")),
        ]
    );
    assert_eq!(
        looked_for,
        "chromium, chromium-browser, google-chrome, google-chrome-stable, microsoft-edge, \
         microsoft-edge-stable, firefox, firefox-esr"
    );

    // One program that starts the browser it is called as (snap does): one per family.
    let c = dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    let snap = script(dir.path(), "snap", "exit 0");
    std::os::unix::fs::symlink(&snap, c.join("chromium")).unwrap();
    std::os::unix::fs::symlink(&snap, c.join("chromium-browser")).unwrap();
    std::os::unix::fs::symlink(&snap, c.join("firefox")).unwrap();
    let (found, _) = select(&Selection::Auto, c.as_os_str(), &[]);
    let listed: Vec<(Kind, PathBuf)> = found.iter().map(|f| (f.kind, f.path.clone())).collect();
    assert_eq!(
        listed,
        [
            (Kind::Chromium, c.join("chromium")),
            (Kind::Firefox, c.join("firefox"))
        ]
    );

    let firefox_only = Selection::Only(vec![Wanted::Kind(Kind::Firefox)]);
    let (found, _) = select(&firefox_only, &path_var, &[]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, a.join("firefox"));
    assert!(select(&Selection::None, &path_var, &[]).0.is_empty());
}

#[test]
fn chromium_runs_headless_on_a_fresh_profile_and_firefox_too() {
    let args = arguments(
        Kind::Chromium,
        "http://127.0.0.1:1/t/",
        Path::new("/p"),
        true,
    );
    for want in [
        "--headless=new",
        "--no-sandbox",
        "--user-data-dir=/p",
        "--no-first-run",
        "--disable-background-networking",
        "--no-proxy-server",
        "--enable-unsafe-webgpu",
        "--enable-features=Vulkan,WebMachineLearningNeuralNetwork",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    assert_eq!(args.last().unwrap(), "http://127.0.0.1:1/t/");
    let as_user = arguments(Kind::Chrome, "u", Path::new("/p"), false);
    assert!(!as_user.iter().any(|a| a == "--no-sandbox"), "{as_user:?}");
    let firefox = arguments(Kind::Firefox, "u", Path::new("/p"), true);
    assert_eq!(
        firefox,
        [
            "-headless",
            "-no-remote",
            "-new-instance",
            "-profile",
            "/p",
            "u"
        ]
    );
}

fn chromium_page() -> Page {
    Page {
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0".into(),
        gpu_api: true,
        adapter: Some(Adapter {
            vendor: "google".into(),
            architecture: "swiftshader".into(),
            description: String::new(),
            fallback: true,
        }),
        gpu_error: None,
        ml_api: true,
        ml_context: false,
        ml_error: Some("NotSupportedError: WebNN is not supported on this platform.".into()),
    }
}

fn found(kind: Kind, path: &str, page: Option<Page>, failure: Option<&str>) -> BrowserReport {
    BrowserReport {
        kind,
        path: path.into(),
        version: Some("156.0.8078.129".into()),
        page,
        failure: failure.map(str::to_string),
        took_ms: 480,
    }
}

#[test]
fn the_report_gives_flat_keys_and_a_list() {
    let report = BrowsersReport {
        browsers: vec![
            found(Kind::Chromium, CHROMIUM, Some(chromium_page()), None),
            found(
                Kind::Firefox,
                "/usr/bin/firefox",
                None,
                Some("timed out after 20s"),
            ),
        ],
        error: None,
        took_ms: 20_500,
    };
    let caps = report.capabilities();
    let keys: Vec<&str> = caps.keys().map(String::as_str).collect();
    assert_eq!(keys, ["browser.chromium", "browser_webgpu", "browsers"]);
    assert_eq!(
        caps["browsers"][0],
        json!({
            "name": "chromium",
            "version": "156.0.8078.129",
            "path": CHROMIUM,
            "webgpu_supported": true,
            "gpu_api": true,
            "webgpu_adapter": {
                "vendor": "google",
                "architecture": "swiftshader",
                "description": "",
                "fallback": true,
            },
            "webnn_supported": false,
            "ml_api": true,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0",
            "flags": ["--enable-unsafe-webgpu", "--enable-features=Vulkan,WebMachineLearningNeuralNetwork"],
            "reason": "createContext(): NotSupportedError: WebNN is not supported on this platform.",
        })
    );
    assert_eq!(
        caps["browsers"][1],
        json!({
            "name": "firefox",
            "version": "156.0.8078.129",
            "path": "/usr/bin/firefox",
            "webgpu_supported": false,
            "gpu_api": false,
            "webnn_supported": false,
            "ml_api": false,
            "flags": ["dom.webgpu.enabled=true", "gfx.webgpu.ignore-blocklist=true"],
            "reason": "timed out after 20s",
        })
    );
}

/// `webnn` is offered when a browser made a context; a browser with everything has no reason;
/// one without `navigator.gpu` says so.
#[test]
fn webnn_and_reasons() {
    let mut everything = chromium_page();
    everything.ml_context = true;
    everything.ml_error = None;
    let mut bare = Page {
        user_agent: "u".repeat(1000),
        ..Page::default()
    };
    bare.gpu_error = None;
    let report = BrowsersReport {
        browsers: vec![
            found(
                Kind::Chrome,
                "/usr/bin/google-chrome",
                Some(everything),
                None,
            ),
            found(Kind::Edge, "/usr/bin/microsoft-edge", Some(bare), None),
        ],
        error: None,
        took_ms: 1,
    };
    let caps = report.capabilities();
    assert_eq!(caps["webnn"], json!(true));
    assert_eq!(caps["browser.chrome"], json!(true));
    assert_eq!(caps["browser.edge"], json!(true));
    assert!(caps["browsers"][0].get("reason").is_none(), "{caps:?}");
    assert_eq!(
        caps["browsers"][1]["reason"],
        json!("no navigator.gpu; no navigator.ml")
    );
    assert_eq!(
        caps["browsers"][1]["user_agent"].as_str().unwrap().len(),
        MAX_TEXT
    );
}

/// The page's request heads, and the server end to end with a raw client: the page under the
/// token, the result posted back, anything else 404.
#[tokio::test]
async fn the_server_serves_the_page_and_takes_the_result() {
    assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    let head = parse_head(b"POST /t/result HTTP/1.1\r\ncontent-length: 12\r\n\r\n{}")
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            head.method.as_str(),
            head.target.as_str(),
            head.content_length,
            head.len
        ),
        ("POST", "/t/result", 12, 47)
    );
    assert!(parse_head(b"GET\r\n\r\n").is_err());

    let mut server = Server::start(Duration::from_secs(2)).await.unwrap();
    let url = server.url();
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let request = |text: String| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let page = request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("navigator.gpu.requestAdapter()"), "{page}");
    assert!(page.contains("const STEP_MS = 2000;"), "{page}");
    let other = request("GET /favicon.ico HTTP/1.1\r\n\r\n".into()).await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let body = r#"{"user_agent":"ua","gpu_api":true,"adapter":null,"ml_api":false}"#;
    let posted = request(format!(
        "POST {path}result HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(posted.starts_with("HTTP/1.1 204"), "{posted}");
    let seen = server.result().await.unwrap();
    assert_eq!(seen.user_agent, "ua");
    assert!(seen.gpu_api && seen.adapter.is_none() && !seen.ml_api);
}

/// No process whose command line holds `marker` is left, but zombies waiting for init.
fn left_behind(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// A "browser" that answers `--version` but never the page, and forks a helper that would
/// outlive it: the check gives up at its timeout, kills the whole group, and says so.
#[tokio::test]
async fn a_browser_that_never_answers_times_out_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().display().to_string();
    let pid_file = dir.path().join("pid");
    let body = format!(
        "if [ \"$1\" = --version ]; then echo 'Chromium 1.2.3 fake'; exit 0; fi\n\
         echo $$ > {pid}\n\
         sh -c 'sleep 300; : {marker}' &\n\
         exec sh -c 'sleep 301; : {marker}'",
        pid = pid_file.display()
    );
    let fake = script(dir.path(), "chromium", &body);
    let timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let report = only(Kind::Chromium, &fake, timeout)
        .run_in("".as_ref(), &[])
        .await;
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "{took:?}"
    );
    let b = &report.browsers[0];
    assert_eq!(b.version.as_deref(), Some("1.2.3"));
    assert!(!b.checked());
    assert_eq!(b.reason().as_deref(), Some("timed out after 1.5s"));
    assert_eq!(
        report.error.as_deref(),
        Some(&*format!(
            "no browser could be checked ({}: timed out after 1.5s)",
            fake.display()
        ))
    );
    assert!(!report.capabilities().contains_key("browser.chromium"));
    let pgid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let states = members(pgid);
    assert!(
        states.iter().all(|s| *s == 'Z'),
        "group {pgid} left: {states:?}"
    );
    assert_eq!(left_behind(&marker), Vec::<String>::new());
}

/// A "browser" that exits at once: its exit status and last words are the reason, at once.
#[tokio::test]
async fn a_browser_that_exits_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let body = "echo '[123:456:1206/235130.697694:ERROR:x.cc(1)] cannot open display' >&2; exit 3";
    let fake = script(dir.path(), "google-chrome", body);
    let started = Instant::now();
    let report = only(Kind::Chrome, &fake, Duration::from_secs(20))
        .run_in("".as_ref(), &[])
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let b = &report.browsers[0];
    assert_eq!(b.version, None);
    assert_eq!(
        b.reason().as_deref(),
        Some("exited (exit status: 3) before the page answered: cannot open display")
    );
    let missing = only(
        Kind::Chrome,
        &dir.path().join("nothing"),
        Duration::from_secs(20),
    )
    .run_in("".as_ref(), &[])
    .await;
    let reason = missing.browsers[0].reason().unwrap();
    assert!(reason.starts_with("cannot start: "), "{reason}");
}

/// The profiles of a worker that was killed are removed; those of running processes stay.
#[test]
fn orphaned_profiles_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "testfleet-browser-2147483647-abc".to_string(),
        format!("testfleet-browser-{}-abc", std::process::id()),
        "testfleet-browser-1-abc".to_string(),
        "something-else-2147483647-abc".to_string(),
    ];
    for name in &names {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    assert_eq!(super::check::remove_orphaned_profiles(dir.path()), 1);
    for name in &names[1..] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    assert!(!dir.path().join(&names[0]).exists());
}

#[tokio::test]
async fn no_browser_on_the_path_says_so_at_once() {
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let report = BrowserProbe::new(BrowserSettings::default())
        .run_in(empty.path().as_os_str(), &[])
        .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(report.browsers.is_empty());
    let error = report.error.as_deref().unwrap();
    assert!(
        error.starts_with("no browser found (looked for chromium, chromium-browser, google-chrome"),
        "{error}"
    );
    let caps = report.capabilities();
    assert_eq!(caps["browsers"], json!([]));
    assert_eq!(caps["browser_probe_error"], json!(error));
}

#[test]
fn the_browser_writes_its_temporary_files_inside_its_profile() {
    let env = environment(Path::new("/p"));
    for (name, dir) in &env {
        assert!(dir.starts_with("/p"), "{name}={}", dir.display());
    }
    let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["XDG_CONFIG_HOME", "XDG_CACHE_HOME", "TMPDIR"]);
}

/// Chromium's process-singleton directories in the system's temporary directory made at or
/// after `since` (named `org.chromium.Chromium.` and a random suffix).
fn singleton_dirs_since(since: std::time::SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    (entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("org.chromium."))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect()
}

/// The real thing: Debian's Chromium 156, found on `PATH`, run headless. On these machines
/// (no GPU) `requestAdapter()` gives Chromium's SwiftShader, a fallback adapter;
/// `navigator.ml` exists but `createContext()` fails, the build having no WebNN backend on
/// Linux (ARCHITECTURE.md § Capabilities).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_chromium_runs_headless_and_reports_what_it_sees() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("skipping: no {CHROMIUM} (apt-get install chromium; .ci/run does)");
        return;
    }
    let started = Instant::now();
    // A second early: file times may be coarser than the clock.
    let since = std::time::SystemTime::now() - Duration::from_secs(1);
    let report = BrowserProbe::new(BrowserSettings::default()).run().await;
    eprintln!(
        "browser probe: {} ms: {report:#?}",
        started.elapsed().as_millis()
    );
    let b = report
        .browsers
        .iter()
        .find(|b| b.path == Path::new(CHROMIUM))
        .expect("chromium found on PATH");
    assert_eq!(b.kind, Kind::Chromium);
    let version = b.version.as_deref().expect("a version");
    assert!(version.split('.').count() == 4, "{version}");
    assert!(b.checked(), "{:?}", b.reason());
    let page = b.page.as_ref().unwrap();
    assert!(page.user_agent.contains("HeadlessChrome/"), "{page:?}");
    assert!(page.gpu_api, "{page:?}");
    assert!(b.webgpu_supported(), "{:?}", b.reason());
    let adapter = page.adapter.as_ref().unwrap();
    assert!(!adapter.vendor.is_empty(), "{adapter:?}");
    assert!(page.ml_api, "{page:?}");
    if !b.webnn_supported() {
        let reason = b.reason().unwrap();
        assert!(reason.contains("createContext(): "), "{reason}");
    }
    let caps = report.capabilities();
    assert_eq!(caps["browser.chromium"], json!(true));
    assert_eq!(caps["browser_webgpu"], json!(true));
    assert!(caps.get("browser_probe_error").is_none());
    let listed: &Value = &caps["browsers"][0];
    assert_eq!(listed["version"], json!(version));
    assert!(b.took_ms < 20_000);
    // The killed browser left nothing behind in the system's temporary directory.
    assert_eq!(singleton_dirs_since(since), Vec::<PathBuf>::new());
}

#[test]
fn a_wrapper_and_its_binary_are_one_browser() {
    let binary = found(
        Kind::Firefox,
        "/usr/bin/firefox-esr",
        Some(chromium_page()),
        None,
    );
    let wrapper = found(
        Kind::Firefox,
        "/usr/bin/firefox",
        Some(chromium_page()),
        None,
    );
    let kept = vec![binary];
    assert!(
        super::same_install(&kept, &wrapper),
        "same family and version"
    );
    let chromium = found(
        Kind::Chromium,
        "/usr/bin/chromium",
        Some(chromium_page()),
        None,
    );
    assert!(!super::same_install(&kept, &chromium), "another family");
    let mut newer = wrapper.clone();
    newer.version = Some("154.0".into());
    assert!(!super::same_install(&kept, &newer), "another version");
    let failed = found(Kind::Firefox, "/opt/firefox", None, Some("timed out"));
    assert!(
        !super::same_install(&[failed], &wrapper),
        "a failed check proves nothing"
    );
}

/// Firefox (Debian's `firefox-esr`, where installed; `.ci/run` does not install it): it runs
/// headless on a fresh profile and its page answers; this machine's ESR 153 gives WebGPU an
/// adapter and has no `navigator.ml`. Debian's `/usr/bin/firefox` wrapper and the binary are
/// reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_firefox_runs_headless_where_installed() {
    let path = Path::new("/usr/bin/firefox-esr");
    if !path.exists() {
        eprintln!(
            "skipping: no {} (apt-get install firefox-esr)",
            path.display()
        );
        return;
    }
    let report = BrowserProbe::new(BrowserSettings {
        selection: Selection::Only(vec![
            Wanted::Path(Kind::Firefox, path.to_path_buf()),
            Wanted::Path(Kind::Firefox, PathBuf::from("/usr/bin/firefox")),
        ]),
        timeout: Duration::from_secs(30),
    })
    .run()
    .await;
    eprintln!("{report:#?}");
    assert_eq!(report.browsers.len(), 1, "the wrapper is the same browser");
    let b = &report.browsers[0];
    assert!(b.checked(), "{:?}", b.reason());
    let page = b.page.as_ref().unwrap();
    assert!(page.user_agent.contains("Firefox/"), "{page:?}");
    assert!(!page.ml_api || b.reason().is_some(), "{page:?}");
    assert_eq!(report.capabilities()["browser.firefox"], json!(true));
}
