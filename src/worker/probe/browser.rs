//! The browser probe: which browsers are installed, and whether WebGPU and WebNN work in each,
//! seen from a page the browser really ran.
//!
//! [`BrowserProbe::run`] finds the browsers ([`discover`]: Chromium, Chrome, Edge and Firefox on
//! `PATH` and in their well-known places, one entry per real file and family, each with the version its
//! `--version` prints), then checks them one at a time ([`check`]): it serves [`check::PAGE`]
//! from a listener on `127.0.0.1:0`, starts the browser headless on it with a fresh temporary
//! profile and the flags that switch WebGPU and WebNN on ([`Kind::flags`]), and waits for the
//! page to post back what it saw — `navigator.gpu`, the adapter `requestAdapter()` gave (its
//! vendor, architecture, description, whether it is a fallback adapter), `navigator.ml` and
//! whether `createContext()` made a context, and the user agent ([`Page`]). So
//! `webgpu_supported` and `webnn_supported` are observed, per browser, not assumed from a
//! version number.
//!
//! **Bounds.** Each browser gets [`BrowserSettings::timeout`] for its `--version` and its check
//! together; the probe checks at most [`MAX_BROWSERS`], one after another, so it never takes
//! more than that many timeouts. Every browser process starts in a process group of its own
//! (and dies with the worker: `PR_SET_PDEATHSIG`); when the page has answered, or the time is
//! up, or the probe is dropped half-way (the worker stops), the whole group is killed, so the
//! helpers a browser forks go too, and the temporary profile is removed. (Chromium's crash
//! handler alone leaves the group; it exits by itself once the browser is gone.) A worker
//! killed outright takes its browsers with it but leaves their profiles, named after its pid:
//! the next probe on the machine removes those whose worker no longer runs. A browser that does
//! not answer in time is reported with `reason = "timed out after 20s"`; one that exits first
//! with its exit status and the last line it wrote.
//!
//! **No network.** The page is on loopback; Chromium-family browsers run with background
//! networking, component updates, sync, extensions and the proxy off and every host name but
//! loopback resolving to nothing; Firefox with a profile whose prefs turn updates,
//! telemetry and captive-portal checks off.
//!
//! **What this machine gives** (Debian's `chromium` 156 package, no GPU, 2 cores): a check
//! takes about half a second; with `--enable-unsafe-webgpu` `requestAdapter()` returns
//! Chromium's own SwiftShader adapter, a fallback adapter (with Vulkan forced on, Dawn refused
//! Mesa 22's lavapipe: "Vulkan shaderUniform*ArrayDynamicIndexing required"), so
//! `webgpu_supported` with `webgpu_adapter.fallback = true`; `navigator.ml` exists with the
//! WebNN feature switched on but `createContext()` fails with "WebNN is not supported on this
//! platform" (the Debian build has no WebNN backend for Linux), so `webnn_supported = false`
//! with that reason. Firefox's path is written but has not run here (no Firefox on these
//! machines).

pub mod check;
pub mod discover;
pub mod process;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

pub use discover::Found;

/// Browsers checked at most (and listed in the capabilities).
pub const MAX_BROWSERS: usize = 8;
/// Bytes of a user agent, reason or adapter string in the capabilities JSON at most.
pub const MAX_TEXT: usize = 200;
/// How long a browser may take for its version and its check unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// A browser family: how it is named, found, started and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Chromium,
    Chrome,
    Edge,
    Firefox,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Chromium, Kind::Chrome, Kind::Edge, Kind::Firefox];

    /// The name in the capabilities (`browser.<name>`, `browsers[].name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chromium => "chromium",
            Kind::Chrome => "chrome",
            Kind::Edge => "edge",
            Kind::Firefox => "firefox",
        }
    }

    /// The executables it installs on `PATH`, most common first.
    pub fn executables(self) -> &'static [&'static str] {
        match self {
            Kind::Chromium => &["chromium", "chromium-browser"],
            Kind::Chrome => &["google-chrome", "google-chrome-stable"],
            Kind::Edge => &["microsoft-edge", "microsoft-edge-stable"],
            Kind::Firefox => &["firefox", "firefox-esr"],
        }
    }

    /// Chromium, Chrome and Edge take the same flags.
    pub fn is_chromium_family(self) -> bool {
        self != Kind::Firefox
    }

    /// What switches WebGPU and WebNN on where a build has them, as reported in `flags`:
    /// command-line flags for the Chromium family, prefs for Firefox. Found by experiment with
    /// Chromium 156: without `--enable-unsafe-webgpu`, `requestAdapter()` gives `null` on
    /// Linux; without the `WebMachineLearningNeuralNetwork` feature there is no `navigator.ml`.
    pub fn flags(self) -> &'static [&'static str] {
        if self.is_chromium_family() {
            &[
                "--enable-unsafe-webgpu",
                "--enable-features=Vulkan,WebMachineLearningNeuralNetwork",
            ]
        } else {
            &[
                "dom.webgpu.enabled=true",
                "gfx.webgpu.ignore-blocklist=true",
            ]
        }
    }

    /// The family an executable's file name belongs to (`chromium-browser`, `google-chrome`,
    /// `msedge`, `firefox-esr`, `chrome`...).
    pub fn of_file_name(name: &str) -> Option<Kind> {
        let name = name.to_ascii_lowercase();
        if name.contains("chromium") {
            Some(Kind::Chromium)
        } else if name.contains("edge") {
            Some(Kind::Edge)
        } else if name.contains("chrome") {
            Some(Kind::Chrome)
        } else if name.contains("firefox") {
            Some(Kind::Firefox)
        } else {
            None
        }
    }
}

/// Which browsers to probe (`--probe-browsers`).
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    /// Every browser [`discover`] finds.
    Auto,
    /// None: the browser probe does not run.
    None,
    /// These, in this order.
    Only(Vec<Wanted>),
}

/// One entry of `--probe-browsers`.
#[derive(Clone, Debug, PartialEq)]
pub enum Wanted {
    /// Whatever of this family [`discover`] finds.
    Kind(Kind),
    /// This file, checked as this family.
    Path(Kind, PathBuf),
}

/// What [`parse_selection`] accepts.
pub const SELECTION_HINT: &str = "auto, none, or a comma-separated list of chromium, chrome, \
    edge, firefox (or their executables' names), paths to browsers, and KIND=PATH";

/// `auto`, `none`, or a comma-separated list whose entries are a family (`chromium`, `chrome`,
/// `edge`, `firefox`) or an executable's name (`google-chrome`), a path to a browser (its
/// family from its file name), or `KIND=PATH` (a path whose name does not say its family).
pub fn parse_selection(text: &str) -> Result<Selection, String> {
    let bad = |why: String| format!("bad browser list {text:?}: {why}; use {SELECTION_HINT}");
    match text.trim() {
        "auto" => return Ok(Selection::Auto),
        "none" | "" => return Ok(Selection::None),
        _ => {}
    }
    let mut wanted = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let kind_named = |name: &str| {
            Kind::ALL
                .into_iter()
                .find(|k| k.as_str() == name || k.executables().contains(&name))
        };
        wanted.push(if let Some((kind, path)) = entry.split_once('=') {
            let kind = kind_named(kind).ok_or_else(|| bad(format!("unknown browser {kind:?}")))?;
            Wanted::Path(kind, PathBuf::from(path))
        } else if entry.contains('/') {
            let path = PathBuf::from(entry);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let kind = name
                .as_deref()
                .and_then(Kind::of_file_name)
                .ok_or_else(|| {
                    bad(format!(
                        "cannot tell which browser {entry:?} is: write KIND={entry}"
                    ))
                })?;
            Wanted::Path(kind, path)
        } else {
            Wanted::Kind(
                kind_named(entry).ok_or_else(|| bad(format!("unknown browser {entry:?}")))?,
            )
        });
    }
    Ok(Selection::Only(wanted))
}

/// What to probe and how long each browser may take.
#[derive(Clone, Debug, PartialEq)]
pub struct BrowserSettings {
    pub selection: Selection,
    /// One browser's `--version` and check together.
    pub timeout: Duration,
}

impl Default for BrowserSettings {
    fn default() -> Self {
        BrowserSettings {
            selection: Selection::Auto,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the page saw, as it posted it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Page {
    pub user_agent: String,
    /// `navigator.gpu` exists.
    pub gpu_api: bool,
    /// What `requestAdapter()` gave; `None` for `null` or an error.
    pub adapter: Option<Adapter>,
    /// Why there is no adapter: `requestAdapter()` threw, or the step timed out.
    pub gpu_error: Option<String>,
    /// `navigator.ml` exists.
    pub ml_api: bool,
    /// `navigator.ml.createContext()` gave a context.
    pub ml_context: bool,
    pub ml_error: Option<String>,
}

/// A WebGPU adapter, as `GPUAdapter.info` describes it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Adapter {
    pub vendor: String,
    pub architecture: String,
    pub description: String,
    /// A fallback adapter: software, or otherwise not what the browser would choose.
    pub fallback: bool,
}

/// One browser, as found and as checked.
#[derive(Clone, Debug, PartialEq)]
pub struct BrowserReport {
    pub kind: Kind,
    /// Where it was found (before symlinks are resolved).
    pub path: PathBuf,
    /// From its `--version`, e.g. `156.0.8078.129`.
    pub version: Option<String>,
    /// What the page saw; `None` when the check did not complete.
    pub page: Option<Page>,
    /// Why the check did not complete (it timed out, the browser exited, could not start).
    pub failure: Option<String>,
    pub took_ms: u64,
}

/// Whether `report` is a browser already in `reports`: the same family and version, both
/// checked.
fn same_install(reports: &[BrowserReport], report: &BrowserReport) -> bool {
    report.version.is_some()
        && reports
            .iter()
            .any(|r| r.checked() && r.kind == report.kind && r.version == report.version)
}

impl BrowserReport {
    /// The check ran to completion: the page answered.
    pub fn checked(&self) -> bool {
        self.page.is_some()
    }

    pub fn webgpu_supported(&self) -> bool {
        self.page
            .as_ref()
            .is_some_and(|p| p.gpu_api && p.adapter.is_some())
    }

    pub fn webnn_supported(&self) -> bool {
        self.page.as_ref().is_some_and(|p| p.ml_api && p.ml_context)
    }

    /// Why the check failed or what it found missing; `None` when everything is there.
    pub fn reason(&self) -> Option<String> {
        let Some(page) = &self.page else {
            return Some(self.failure.clone().unwrap_or_else(|| "not checked".into()));
        };
        let mut missing = Vec::new();
        if !page.gpu_api {
            missing.push("no navigator.gpu".to_string());
        } else if page.adapter.is_none() {
            missing.push(match &page.gpu_error {
                Some(e) => format!("requestAdapter(): {e}"),
                None => "requestAdapter() gave no adapter".into(),
            });
        }
        if !page.ml_api {
            missing.push("no navigator.ml".to_string());
        } else if !page.ml_context {
            missing.push(match &page.ml_error {
                Some(e) => format!("createContext(): {e}"),
                None => "createContext() gave no context".into(),
            });
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }
}

/// One run of the probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrowsersReport {
    /// In the order they were found.
    pub browsers: Vec<BrowserReport>,
    /// Why no browser could be checked, when none could.
    pub error: Option<String>,
    pub took_ms: u64,
}

fn clipped(text: &str) -> String {
    let mut text = text.to_string();
    crate::state::limits::clip(&mut text, MAX_TEXT);
    text
}

impl BrowsersReport {
    /// What the probe adds to the worker's capabilities (ARCHITECTURE.md § Capabilities):
    /// `browsers` with each browser's findings; for the scheduler, which matches top-level
    /// keys only, `browser.<name>` for each browser checked, `browser_webgpu` and `webnn` when
    /// some browser has them; `browser_probe_error` when none could be checked. No times, so
    /// an unchanged machine gives the same JSON.
    pub fn capabilities(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut caps = serde_json::Map::new();
        let listed: Vec<serde_json::Value> = (self.browsers.iter().take(MAX_BROWSERS))
            .map(|b| {
                let page = b.page.clone().unwrap_or_default();
                let mut entry = json!({
                    "name": b.kind.as_str(),
                    "path": clipped(&b.path.to_string_lossy()),
                    "webgpu_supported": b.webgpu_supported(),
                    "gpu_api": page.gpu_api,
                    "webnn_supported": b.webnn_supported(),
                    "ml_api": page.ml_api,
                    "flags": b.kind.flags(),
                });
                if let Some(version) = &b.version {
                    entry["version"] = clipped(version).into();
                }
                if let Some(a) = &page.adapter {
                    entry["webgpu_adapter"] = json!({
                        "vendor": clipped(&a.vendor),
                        "architecture": clipped(&a.architecture),
                        "description": clipped(&a.description),
                        "fallback": a.fallback,
                    });
                }
                if b.checked() {
                    entry["user_agent"] = clipped(&page.user_agent).into();
                }
                if let Some(reason) = b.reason() {
                    entry["reason"] = clipped(&reason).into();
                }
                entry
            })
            .collect();
        for b in self.browsers.iter().filter(|b| b.checked()) {
            caps.insert(format!("browser.{}", b.kind.as_str()), true.into());
        }
        if self.browsers.iter().any(BrowserReport::webgpu_supported) {
            caps.insert("browser_webgpu".into(), true.into());
        }
        if self.browsers.iter().any(BrowserReport::webnn_supported) {
            caps.insert("webnn".into(), true.into());
        }
        caps.insert("browsers".into(), listed.into());
        if let Some(error) = &self.error {
            caps.insert("browser_probe_error".into(), clipped(error).into());
        }
        caps
    }
}

/// Runs the browser probe with its settings.
#[derive(Clone, Debug)]
pub struct BrowserProbe {
    settings: BrowserSettings,
}

impl BrowserProbe {
    pub fn new(settings: BrowserSettings) -> Self {
        BrowserProbe { settings }
    }

    /// Whether it probes anything (`--probe-browsers none` does not).
    pub fn enabled(&self) -> bool {
        self.settings.selection != Selection::None
    }

    /// Finds the selected browsers and checks each, one after another: at most
    /// [`MAX_BROWSERS`] × [`BrowserSettings::timeout`]. Dropping the future kills what it
    /// started.
    pub async fn run(&self) -> BrowsersReport {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        self.run_in(&path_var, discover::WELL_KNOWN_DIRS).await
    }

    /// [`BrowserProbe::run`], looking on `path_var` and in `dirs` instead of `PATH` and
    /// [`discover::WELL_KNOWN_DIRS`].
    pub async fn run_in(&self, path_var: &std::ffi::OsStr, dirs: &[&str]) -> BrowsersReport {
        let started = Instant::now();
        let orphans = check::remove_orphaned_profiles(&std::env::temp_dir());
        if orphans > 0 {
            tracing::info!(orphans, "removed the browser profiles of killed workers");
        }
        let (found, looked_for) = discover::select(&self.settings.selection, path_var, dirs);
        let mut browsers: Vec<BrowserReport> = Vec::new();
        for found in found.into_iter().take(MAX_BROWSERS) {
            let report = check::browser(&found, self.settings.timeout).await;
            // A wrapper script and the binary it runs (Debian's /usr/bin/firefox and
            // /usr/bin/firefox-esr) are different files but one browser: the same family
            // and version, checked once is enough.
            if report.checked() && same_install(&browsers, &report) {
                tracing::debug!(path = %report.path.display(), "the same browser again");
                continue;
            }
            browsers.push(report);
        }
        let error = if browsers.is_empty() {
            Some(format!("no browser found (looked for {looked_for})"))
        } else if !browsers.iter().any(BrowserReport::checked) {
            let why: Vec<String> = browsers
                .iter()
                .map(|b| format!("{}: {}", b.path.display(), b.reason().unwrap_or_default()))
                .collect();
            Some(format!("no browser could be checked ({})", why.join("; ")))
        } else {
            None
        };
        BrowsersReport {
            browsers,
            error,
            took_ms: started.elapsed().as_millis() as u64,
        }
    }
}
