//! What a worker offers, found out rather than assumed (ARCHITECTURE.md § Capabilities).
//!
//! A worker's capabilities are one JSON object, sent as `Hello.capabilities_json` and stored in
//! `workers.capabilities`; the leader flattens its top-level keys to strings
//! (`coordinator::leadership::worker_profile`) and the scheduler matches a task's capability
//! expressions (`webgpu`, `gpu_type=discrete`, `gpu_buffer_mb>=1024`) against them. Three
//! sources make the object ([`offered`], pure):
//!
//! * the basic facts every worker reports (`worker::basic_capabilities`: `os`, `arch`, `cpus`,
//!   `memory_gb`);
//! * the probes, unless `--no-probe`: the GPU probe ([`gpu`]), which proves each adapter
//!   computes before the worker claims it, and the browser probe ([`browser`]), which runs
//!   each installed browser headless on a page that reports whether WebGPU and WebNN work
//!   there; `probed` says whether they ran;
//! * capabilities declared by hand (`--capability NAME`): each is `NAME = true`, and `declared`
//!   lists them, so a reader sees which claims nobody checked. A declared name wins over what
//!   the probes found.
//!
//! # KEYS
//!
//! | key | value |
//! |---|---|
//! | `probed` | the probes ran (false with `--no-probe`: no key below but `declared` then) |
//! | `webgpu` | true only when a WebGPU-compliant adapter passed the shader check |
//! | `gpu_type` | the best verified adapter's device type: `discrete`, `integrated`, `virtual`, `other`, `cpu`; absent when none is verified |
//! | `gpu_buffer_mb` | that adapter's largest storage buffer binding, in MiB |
//! | `gpu_adapters` | every adapter found, best first: `name`, `backend`, `device_type`, `vendor_id`, `device_id`, `driver`, `driver_info`, `webgpu_compliant`, `verified`, `elements_checked`, `reason` (when not verified), `features`, `limits` |
//! | `gpu_probe_error` | why the adapter list is empty or incomplete |
//! | `browsers` | every browser found (at most 8): `name` (`chromium`, `chrome`, `edge`, `firefox`), `version`, `path`, `webgpu_supported` (`navigator.gpu` and an adapter), `gpu_api` (`navigator.gpu`), `webgpu_adapter` (`vendor`, `architecture`, `description`, `fallback`; when there is one), `webnn_supported` (`navigator.ml` and a context), `ml_api` (`navigator.ml`), `user_agent` (checked ones), `flags` (what switched WebGPU and WebNN on), `reason` (when the check failed or something is missing) |
//! | `browser.<name>` | true for each browser whose check ran to completion, e.g. `browser.chromium` |
//! | `browser_webgpu` | true when some browser has `webgpu_supported` |
//! | `webnn` | true when some browser has `webnn_supported` |
//! | `browser_probe_error` | why no browser could be checked (none found, none answered) |
//! | `declared` | the names declared by hand, sorted |
//!
//! "Best" ranks verified adapters first, then WebGPU-compliant ones, then discrete, integrated,
//! virtual, other, CPU, then the larger storage buffer: `gpu_type` and `gpu_buffer_mb`
//! describe the adapter a WebGPU client on the machine would get.
//!
//! # RE-PROBING
//!
//! [`Offer::start`] probes once before the worker's first hello (bounded: [`gpu::GpuSettings`],
//! [`browser::BrowserSettings`]; the two probes run at the same time),
//! then again every [`ProbeSettings::interval`] on a task of its own. The object holds no
//! times, so an unchanged machine gives the same text; when the text changes (an adapter
//! appears, disappears or fails its check) the agent sends it in its next `Heartbeat`
//! (`capabilities_json`, only then), and every later hello carries it too. The leader
//! registers the worker again with it, which withdraws or grants the capability in the
//! scheduler without touching the worker's other work.

pub mod browser;
pub mod gpu;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::sync::watch;

use browser::{BrowserProbe, BrowserSettings, BrowsersReport};
use gpu::{GpuProbe, GpuReport, GpuSettings};

/// Keys the worker sets itself, which `--capability` may not declare. `webgpu`, `webnn` and
/// `browser.<name>` stay declarable: a declaration is how a machine the probes cannot see into
/// offers them, and it wins over the probes.
pub const RESERVED: [&str; 13] = [
    "os",
    "arch",
    "cpus",
    "memory_gb",
    "probed",
    "declared",
    "gpu_type",
    "gpu_buffer_mb",
    "gpu_adapters",
    "gpu_probe_error",
    "browsers",
    "browser_webgpu",
    "browser_probe_error",
];

/// Names `--capability` takes at most.
pub const MAX_DECLARED: usize = crate::state::limits::MAX_LABELS;

/// How a worker finds out what it offers.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSettings {
    /// Probe at start and every `interval`. Off: no probed capability is offered.
    pub enabled: bool,
    pub interval: Duration,
    pub gpu: GpuSettings,
    pub browser: BrowserSettings,
    /// Capabilities declared by hand, checked ([`parse_capability_name`]), sorted, unique.
    pub declared: Vec<String>,
}

impl ProbeSettings {
    /// No probing and nothing declared: what [`crate::worker::agent::WorkerConfig::new`] starts
    /// with (in-process workers of benchmarks and tests); `testfleet worker` probes by default.
    pub fn off() -> Self {
        ProbeSettings {
            enabled: false,
            interval: DEFAULT_INTERVAL,
            gpu: GpuSettings::default(),
            browser: BrowserSettings {
                selection: browser::Selection::None,
                ..BrowserSettings::default()
            },
            declared: Vec::new(),
        }
    }
}

/// How often a worker probes again unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// The worker's probe flags (`testfleet worker`).
#[derive(clap::Args, Clone, Debug)]
pub struct ProbeArgs {
    /// Do not probe the machine (GPU adapters, browsers): the worker offers no probed
    /// capability
    #[arg(long)]
    pub no_probe: bool,
    /// Declare a capability by hand, e.g. webgpu; repeat for more. Offered as NAME = true and
    /// listed under "declared", as not verified (TESTFLEET_WORKER_CAPABILITIES: comma-separated)
    #[arg(
        long = "capability",
        env = "TESTFLEET_WORKER_CAPABILITIES",
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = parse_capability_name
    )]
    pub capabilities: Vec<String>,
    /// How often to probe again, e.g. 10m, 1h; changed capabilities are registered again
    #[arg(
        long,
        env = "TESTFLEET_WORKER_PROBE_INTERVAL",
        default_value = "10m",
        value_name = "DUR",
        value_parser = parse_interval
    )]
    pub probe_interval: Duration,
    /// The GPU backends to probe: all, none, or a comma-separated list of vulkan, gl, metal,
    /// dx12
    #[arg(
        long,
        env = "TESTFLEET_PROBE_BACKENDS",
        default_value = "all",
        value_name = "LIST",
        value_parser = gpu::parse_backends
    )]
    pub probe_backends: wgpu::Backends,
    /// The browsers to check headless for WebGPU and WebNN: auto (every Chromium, Chrome, Edge
    /// and Firefox found), none, or a comma-separated list of those names, paths, KIND=PATH
    #[arg(
        long,
        env = "TESTFLEET_PROBE_BROWSERS",
        default_value = "auto",
        value_name = "LIST",
        value_parser = browser::parse_selection
    )]
    pub probe_browsers: browser::Selection,
    /// How long one browser's check may take, e.g. 20s; then its processes are killed
    #[arg(
        long,
        env = "TESTFLEET_BROWSER_TIMEOUT",
        default_value = "20s",
        value_name = "DUR",
        value_parser = parse_browser_timeout
    )]
    pub browser_timeout: Duration,
}

impl ProbeArgs {
    pub fn settings(self) -> Result<ProbeSettings, String> {
        Ok(ProbeSettings {
            enabled: !self.no_probe,
            interval: self.probe_interval,
            gpu: GpuSettings {
                backends: self.probe_backends,
                ..GpuSettings::default()
            },
            browser: BrowserSettings {
                selection: self.probe_browsers,
                timeout: self.browser_timeout,
            },
            declared: declared(self.capabilities)?,
        })
    }
}

/// A re-probing period: a duration (`plan::parse_duration`) of at least a second.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::plan::parse_duration(text)?;
    if interval < Duration::from_secs(1) {
        return Err(format!("probe interval {text:?} is under a second"));
    }
    Ok(interval)
}

/// A browser's time limit: a duration (`plan::parse_duration`) from a second to ten minutes.
pub fn parse_browser_timeout(text: &str) -> Result<Duration, String> {
    let timeout = crate::plan::parse_duration(text)?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(600) {
        return Err(format!(
            "browser timeout {text:?} is not between a second and ten minutes"
        ));
    }
    Ok(timeout)
}

/// A name `--capability` may declare: lowercase letters, digits, `_`, `-` and `.`, at most
/// 64 bytes, not a key the worker sets itself ([`RESERVED`]).
pub fn parse_capability_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!(
            "bad capability name {text:?}: use lowercase letters, digits, _, - and . (e.g. \
             webgpu), at most 64 bytes"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "capability {name:?} is set by the worker itself and cannot be declared"
        ));
    }
    Ok(name.to_string())
}

/// The declared names, sorted and without repeats.
fn declared(mut names: Vec<String>) -> Result<Vec<String>, String> {
    names.sort();
    names.dedup();
    if names.len() > MAX_DECLARED {
        return Err(format!(
            "{} capabilities declared; at most {MAX_DECLARED}",
            names.len()
        ));
    }
    Ok(names)
}

/// What the probes found, one report per probe; `None` where it did not run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reports {
    pub gpu: Option<GpuReport>,
    pub browser: Option<BrowsersReport>,
}

/// The capabilities JSON a worker offers: `base` (a JSON object; anything else counts as
/// empty), the probes' findings when they ran (`reports`, `None` with `--no-probe`), and the
/// names declared by hand.
pub fn offered(base: &str, reports: Option<&Reports>, declared: &[String]) -> String {
    let mut caps = match serde_json::from_str(base) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    caps.insert("probed".into(), reports.is_some().into());
    if let Some(gpu) = reports.and_then(|r| r.gpu.as_ref()) {
        caps.extend(gpu.capabilities());
    }
    if let Some(browser) = reports.and_then(|r| r.browser.as_ref()) {
        caps.extend(browser.capabilities());
    }
    for name in declared {
        caps.insert(name.clone(), true.into());
    }
    if !declared.is_empty() {
        caps.insert("declared".into(), declared.into());
    }
    let mut json = serde_json::Value::Object(caps.clone()).to_string();
    if json.len() > crate::state::limits::MAX_JSON_BYTES {
        caps.insert("gpu_adapters".into(), serde_json::Value::Array(Vec::new()));
        caps.insert(
            "gpu_probe_error".into(),
            "the adapter list is left out: it is over the capabilities size limit".into(),
        );
        json = serde_json::Value::Object(caps.clone()).to_string();
    }
    if json.len() > crate::state::limits::MAX_JSON_BYTES && caps.contains_key("browsers") {
        caps.insert("browsers".into(), serde_json::Value::Array(Vec::new()));
        caps.insert(
            "browser_probe_error".into(),
            "the browser list is left out: it is over the capabilities size limit".into(),
        );
        json = serde_json::Value::Object(caps).to_string();
    }
    json
}

/// The capabilities a worker offers, kept current by re-probing in the background.
pub struct Offer {
    current: watch::Receiver<String>,
    /// Held while nothing re-probes, so that `changed` waits instead of failing.
    _unchanging: Option<watch::Sender<String>>,
    reprobe: Option<tokio::task::JoinHandle<()>>,
}

impl Offer {
    /// Probes once (unless probing is off) and starts re-probing every interval. `base` is the
    /// basic capabilities' JSON object.
    pub async fn start(base: String, settings: ProbeSettings) -> Offer {
        if !settings.enabled {
            let (tx, current) = watch::channel(offered(&base, None, &settings.declared));
            return Offer {
                current,
                _unchanging: Some(tx),
                reprobe: None,
            };
        }
        let probe = GpuProbe::new(settings.gpu.clone());
        let browsers = BrowserProbe::new(settings.browser.clone());
        let reports = probe_all(&probe, &browsers).await;
        log(&reports, true);
        let (tx, current) = watch::channel(offered(&base, Some(&reports), &settings.declared));
        let reprobe = tokio::spawn(async move {
            loop {
                tokio::time::sleep(settings.interval).await;
                let reports = probe_all(&probe, &browsers).await;
                let json = offered(&base, Some(&reports), &settings.declared);
                let changed = tx.send_if_modified(|current| {
                    let changed = *current != json;
                    *current = json;
                    changed
                });
                log(&reports, changed);
                if tx.is_closed() {
                    break;
                }
            }
        });
        Offer {
            current,
            _unchanging: None,
            reprobe: Some(reprobe),
        }
    }

    /// The capabilities JSON of the latest probe; [`Offer::changed`] waits for the next one.
    pub fn current(&mut self) -> String {
        self.current.borrow_and_update().clone()
    }

    /// Waits until a probe changes the capabilities.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.current.changed().await
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        if let Some(task) = &self.reprobe {
            task.abort();
        }
    }
}

/// Runs every probe at the same time: the GPU probe off the async threads (drivers block),
/// the browser probe as async process and socket handling.
async fn probe_all(gpu: &GpuProbe, browsers: &BrowserProbe) -> Reports {
    let gpu = gpu.clone();
    let gpu = async {
        tokio::task::spawn_blocking(move || gpu.run())
            .await
            .unwrap_or_else(|e| GpuReport {
                adapters: Vec::new(),
                error: Some(format!("the GPU probe failed: {e}")),
                probed_at_us: crate::state::command::Timestamp::now().micros(),
                took_ms: 0,
            })
    };
    let browser = async {
        if browsers.enabled() {
            Some(browsers.run().await)
        } else {
            None
        }
    };
    let (gpu, browser) = tokio::join!(gpu, browser);
    Reports {
        gpu: Some(gpu),
        browser,
    }
}

/// Logs a probe's findings: in full when they are new (`news`), else one line at debug.
fn log(reports: &Reports, news: bool) {
    if let Some(browser) = &reports.browser {
        let checked = browser.browsers.iter().filter(|b| b.checked()).count();
        if news {
            tracing::info!(
                browsers = browser.browsers.len(),
                checked,
                took_ms = browser.took_ms,
                error = browser.error.as_deref().unwrap_or(""),
                "browser probe"
            );
            for b in &browser.browsers {
                tracing::info!(
                    path = %b.path.display(),
                    version = b.version.as_deref().unwrap_or(""),
                    webgpu_supported = b.webgpu_supported(),
                    webnn_supported = b.webnn_supported(),
                    took_ms = b.took_ms,
                    reason = b.reason().as_deref().unwrap_or(""),
                    "browser {}",
                    b.kind.as_str()
                );
            }
        } else {
            tracing::debug!(
                browsers = browser.browsers.len(),
                checked,
                took_ms = browser.took_ms,
                "browser probe: nothing changed"
            );
        }
    }
    let Some(gpu) = &reports.gpu else { return };
    let verified = gpu.adapters.iter().filter(|a| a.verified).count();
    if !news {
        tracing::debug!(
            adapters = gpu.adapters.len(),
            verified,
            took_ms = gpu.took_ms,
            "GPU probe: nothing changed"
        );
        return;
    }
    tracing::info!(
        webgpu = gpu.webgpu(),
        adapters = gpu.adapters.len(),
        verified,
        took_ms = gpu.took_ms,
        error = gpu.error.as_deref().unwrap_or(""),
        "GPU probe"
    );
    for a in &gpu.adapters {
        tracing::info!(
            backend = %a.backend,
            device_type = a.device_type.as_str(),
            webgpu_compliant = a.webgpu_compliant,
            verified = a.verified,
            took_ms = a.took_ms,
            reason = a.reason.as_deref().unwrap_or(""),
            "GPU adapter {}",
            a.name
        );
    }
}
