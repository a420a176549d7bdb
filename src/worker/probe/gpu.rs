//! The GPU probe: every adapter wgpu finds, and a compute shader that proves each one computes.
//!
//! [`GpuProbe::run`] enumerates the adapters of the allowed backends ([`GpuSettings::backends`])
//! and describes each ([`AdapterReport`]: name, ids, backend, device type, driver, whether its
//! downlevel capabilities make it WebGPU-compliant, its WebGPU features and compute limits).
//! Then, adapter by adapter, it asks for a device and runs [`SHADER`] on [`ELEMENTS`] numbers,
//! reads the result back and compares every element with what the CPU computes: only then is
//! the adapter `verified`. Anything else — no device, a validation error, a wrong element, a
//! driver that does not answer — leaves it unverified with the reason.
//!
//! **Bounds.** Drivers run on threads of their own, and the caller only ever waits for them
//! with a deadline: the instance and enumeration within the whole probe's
//! [`GpuSettings::deadline`], each adapter's check within [`GpuSettings::adapter_budget`] (and
//! what is left of the deadline). A driver that does not return is reported as timed out and
//! its thread left behind, as a thread cannot be killed; while [`MAX_STUCK`] such threads of
//! one [`GpuProbe`] are still stuck, it probes no more and says why. A machine without an
//! adapter gets an empty list and the reason, in milliseconds.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wgpu::util::DeviceExt;

use crate::state::command::Timestamp;

#[cfg(test)]
pub(super) mod tests;

/// The check's program: squares one array and adds another, element by element.
pub const SHADER: &str = r"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&out)) {
        out[i] = a[i] * a[i] + b[i];
    }
}
";

/// Numbers the check computes, every one compared: 1,024 workgroups of 64.
pub const ELEMENTS: u32 = 65_536;
const WORKGROUP_SIZE: u32 = 64;

/// Threads left stuck in a driver after which a [`GpuProbe`] stops probing.
pub const MAX_STUCK: usize = 4;

/// The check's inputs and the answer it must give, as the CPU computes them (WGSL's `u32`
/// arithmetic wraps).
fn inputs(i: u32) -> (u32, u32) {
    (i, i.wrapping_mul(2_654_435_761))
}

fn expected(i: u32) -> u32 {
    let (a, b) = inputs(i);
    a.wrapping_mul(a).wrapping_add(b)
}

/// What to probe and how long it may take.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSettings {
    /// The backends whose adapters are probed ([`parse_backends`]; empty: none).
    pub backends: wgpu::Backends,
    /// The whole probe, enumeration included.
    pub deadline: Duration,
    /// One adapter's device and shader check.
    pub adapter_budget: Duration,
}

impl Default for GpuSettings {
    fn default() -> Self {
        GpuSettings {
            backends: wgpu::Backends::all(),
            deadline: Duration::from_secs(20),
            adapter_budget: Duration::from_secs(10),
        }
    }
}

/// The backend names [`parse_backends`] accepts.
pub const BACKEND_NAMES: &str = "all, none, or a comma-separated list of vulkan, gl, metal, dx12";

/// Which backends to probe: `all`, `none`, or a comma-separated list of `vulkan` (`vk`), `gl`
/// (`gles`, `opengl`), `metal`, `dx12`. Case does not matter; an unknown name is an error.
pub fn parse_backends(text: &str) -> Result<wgpu::Backends, String> {
    let mut backends = wgpu::Backends::empty();
    let names: Vec<String> = text.split(',').map(|n| n.trim().to_lowercase()).collect();
    for name in &names {
        backends |= match name.as_str() {
            "all" if names.len() == 1 => wgpu::Backends::all(),
            "none" if names.len() == 1 => wgpu::Backends::empty(),
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "metal" => wgpu::Backends::METAL,
            "dx12" => wgpu::Backends::DX12,
            _ => return Err(format!("bad backend list {text:?}: use {BACKEND_NAMES}")),
        };
    }
    Ok(backends)
}

/// The names of the backends of `backends` this build can use, e.g. `vulkan, gl`.
pub fn backend_names(backends: wgpu::Backends) -> String {
    let usable = backends & wgpu::Instance::enabled_backend_features();
    let names: Vec<&str> = wgpu::Backend::ALL
        .into_iter()
        .filter(|b| usable.contains((*b).into()))
        .map(wgpu::Backend::to_str)
        .collect();
    if names.is_empty() {
        "(none enabled)".to_string()
    } else {
        names.join(", ")
    }
}

/// What kind of device an adapter is, best first for compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    Discrete,
    Integrated,
    Virtual,
    Other,
    /// Software rendering on the CPU (Mesa's llvmpipe and lavapipe).
    Cpu,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Discrete => "discrete",
            DeviceType::Integrated => "integrated",
            DeviceType::Virtual => "virtual",
            DeviceType::Other => "other",
            DeviceType::Cpu => "cpu",
        }
    }
}

impl From<wgpu::DeviceType> for DeviceType {
    fn from(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => DeviceType::Discrete,
            wgpu::DeviceType::IntegratedGpu => DeviceType::Integrated,
            wgpu::DeviceType::VirtualGpu => DeviceType::Virtual,
            wgpu::DeviceType::Cpu => DeviceType::Cpu,
            wgpu::DeviceType::Other => DeviceType::Other,
        }
    }
}

/// The limits of an adapter that bound compute work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeLimits {
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    /// Bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Bytes.
    pub max_buffer_size: u64,
}

impl From<&wgpu::Limits> for ComputeLimits {
    fn from(l: &wgpu::Limits) -> Self {
        ComputeLimits {
            max_compute_workgroup_size_x: l.max_compute_workgroup_size_x,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
        }
    }
}

/// One adapter, as found and as checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterReport {
    pub name: String,
    /// The backend's vendor and device ids (PCI ids for Vulkan).
    pub vendor_id: u32,
    pub device_id: u32,
    /// `vulkan`, `gl`, `metal`, `dx12`.
    pub backend: String,
    pub device_type: DeviceType,
    pub driver: String,
    pub driver_info: String,
    /// The adapter supports all of baseline WebGPU (its downlevel capabilities say so): what a
    /// browser needs to offer `navigator.gpu` on it.
    pub webgpu_compliant: bool,
    /// The WebGPU features it offers, by their spec names (`shader-f16`, `timestamp-query`).
    pub features: Vec<String>,
    pub limits: ComputeLimits,
    /// The compute shader ran and every element of its result was right.
    pub verified: bool,
    /// Elements of the result compared with the CPU's ([`ELEMENTS`] once the result is read).
    pub elements_checked: u32,
    /// Why it is not verified.
    pub reason: Option<String>,
    /// How long its check took.
    pub took_ms: u64,
}

impl AdapterReport {
    /// How good the adapter is for compute, smallest best: verified, WebGPU-compliant, by
    /// device type, the largest storage buffer; then name and backend, so ties sort the same
    /// way on every probe.
    fn rank(&self) -> impl Ord + '_ {
        (
            !self.verified,
            !self.webgpu_compliant,
            self.device_type,
            std::cmp::Reverse(self.limits.max_storage_buffer_binding_size),
            &self.name,
            &self.backend,
            self.device_id,
        )
    }
}

/// Sorts adapters best first.
fn sort(adapters: &mut [AdapterReport]) {
    adapters.sort_by(|a, b| a.rank().cmp(&b.rank()));
}

/// One run of the probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// Best first (verified, WebGPU-compliant, device type, storage size).
    pub adapters: Vec<AdapterReport>,
    /// Why the list is empty or incomplete: no adapter, enumeration timed out, stuck drivers.
    pub error: Option<String>,
    /// When the probe started, in microseconds since the Unix epoch.
    pub probed_at_us: i64,
    pub took_ms: u64,
}

impl GpuReport {
    /// The best verified adapter.
    pub fn best(&self) -> Option<&AdapterReport> {
        self.adapters.iter().find(|a| a.verified)
    }

    /// At least one WebGPU-compliant adapter passed the check.
    pub fn webgpu(&self) -> bool {
        self.adapters
            .iter()
            .any(|a| a.verified && a.webgpu_compliant)
    }
}

/// Runs probes; remembers the threads earlier runs left stuck in a driver.
#[derive(Clone, Debug)]
pub struct GpuProbe {
    settings: GpuSettings,
    /// Probe threads that have not returned yet; each decrements it when (if) it returns.
    stuck: Arc<AtomicUsize>,
}

impl GpuProbe {
    pub fn new(settings: GpuSettings) -> Self {
        GpuProbe {
            settings,
            stuck: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Probes every adapter of the allowed backends. Blocks for at most the deadline (plus
    /// the moment it takes to give up), whatever the drivers do.
    pub fn run(&self) -> GpuReport {
        let started = Instant::now();
        let probed_at_us = Timestamp::now().micros();
        let (mut adapters, error) = self.adapters(started + self.settings.deadline);
        sort(&mut adapters);
        GpuReport {
            adapters,
            error,
            probed_at_us,
            took_ms: started.elapsed().as_millis() as u64,
        }
    }

    fn adapters(&self, deadline: Instant) -> (Vec<AdapterReport>, Option<String>) {
        let stuck = self.stuck.load(Ordering::SeqCst);
        if stuck >= MAX_STUCK {
            return (
                Vec::new(),
                Some(format!(
                    "{stuck} earlier probe threads are still stuck in a GPU driver; not probing \
                     again until they return"
                )),
            );
        }
        let backends = self.settings.backends;
        let names = backend_names(backends);
        let found: Result<_, String> = self.bounded("gpu-probe-enumerate", deadline, move || {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                // The same in debug and release builds: no validation layers.
                flags: wgpu::InstanceFlags::empty(),
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            futures::executor::block_on(instance.enumerate_adapters(backends))
        });
        let found = match found {
            Ok(found) if found.is_empty() => {
                return (
                    Vec::new(),
                    Some(format!("no adapter found on backends {names}")),
                );
            }
            Ok(found) => found,
            Err(why) => {
                return (
                    Vec::new(),
                    Some(format!("enumerating adapters on backends {names}: {why}")),
                );
            }
        };
        let reports = found
            .into_iter()
            .map(|adapter| self.check(adapter, deadline))
            .collect();
        (reports, None)
    }

    /// Describes `adapter` and runs the shader check on it, within its budget.
    fn check(&self, adapter: wgpu::Adapter, deadline: Instant) -> AdapterReport {
        let started = Instant::now();
        let info = adapter.get_info();
        let limits = adapter.limits();
        let downlevel = adapter.get_downlevel_capabilities();
        let mut features: Vec<String> = (adapter.features() & wgpu::Features::all_webgpu_mask())
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        features.sort();
        let mut report = AdapterReport {
            name: info.name,
            vendor_id: info.vendor,
            device_id: info.device,
            backend: info.backend.to_str().to_string(),
            device_type: info.device_type.into(),
            driver: info.driver,
            driver_info: info.driver_info,
            webgpu_compliant: downlevel.is_webgpu_compliant(),
            features,
            limits: ComputeLimits::from(&limits),
            verified: false,
            elements_checked: 0,
            reason: None,
            took_ms: 0,
        };
        let outcome = match unusable(&downlevel, &limits) {
            Some(why) => Err(CheckFailed::from(format!("cannot run the check: {why}"))),
            None => {
                let budget = self.settings.adapter_budget;
                let until = deadline.min(Instant::now() + budget);
                match self.bounded("gpu-probe-check", until, move || compute(&adapter, budget)) {
                    Ok(checked) => checked,
                    Err(why) => Err(why),
                }
            }
        };
        match outcome {
            Ok(checked) => {
                report.verified = true;
                report.elements_checked = checked;
            }
            Err(CheckFailed { reason, checked }) => {
                report.reason = Some(reason);
                report.elements_checked = checked;
            }
        }
        report.took_ms = started.elapsed().as_millis() as u64;
        report
    }

    /// Runs `work` on a thread of its own and waits for it until `until`. A thread that has
    /// not returned by then is left behind and counted in `stuck` until it does.
    fn bounded<T: Send + 'static, E: From<String>>(
        &self,
        name: &str,
        until: Instant,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, E> {
        let (tx, rx) = mpsc::sync_channel(1);
        let stuck = self.stuck.clone();
        stuck.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(work));
                stuck.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(result.map_err(|panic| panic_text(&*panic)));
            });
        if let Err(e) = spawned {
            self.stuck.fetch_sub(1, Ordering::SeqCst);
            return Err(E::from(format!("cannot start a probe thread: {e}")));
        }
        let within = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(within) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(E::from(format!("the driver panicked: {panic}"))),
            Err(_) => Err(E::from(format!(
                "the driver did not answer within {} ms (hung?)",
                within.as_millis()
            ))),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Why the check cannot run on an adapter with these capabilities, if it cannot.
fn unusable(downlevel: &wgpu::DownlevelCapabilities, limits: &wgpu::Limits) -> Option<String> {
    let bytes = u64::from(ELEMENTS) * 4;
    if !downlevel
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
    {
        Some("no compute shaders".to_string())
    } else if limits.max_storage_buffers_per_shader_stage < 3 {
        Some("fewer than 3 storage buffers per shader stage".to_string())
    } else if limits.max_compute_workgroup_size_x < WORKGROUP_SIZE
        || limits.max_compute_invocations_per_workgroup < WORKGROUP_SIZE
    {
        Some(format!("workgroups smaller than {WORKGROUP_SIZE}"))
    } else if limits.max_compute_workgroups_per_dimension < ELEMENTS / WORKGROUP_SIZE {
        Some(format!(
            "fewer than {} workgroups per dimension",
            ELEMENTS / WORKGROUP_SIZE
        ))
    } else if limits.max_storage_buffer_binding_size < bytes {
        Some(format!("storage buffers smaller than {bytes} bytes"))
    } else {
        None
    }
}

/// A failed check: why, and how many elements had been compared (and found right) before.
#[derive(Debug)]
struct CheckFailed {
    reason: String,
    checked: u32,
}

impl From<String> for CheckFailed {
    fn from(reason: String) -> Self {
        CheckFailed { reason, checked: 0 }
    }
}

/// Runs [`SHADER`] on a device of `adapter` and compares every element of its result with the
/// CPU's: the number of elements checked, all right.
fn compute(adapter: &wgpu::Adapter, budget: Duration) -> Result<u32, CheckFailed> {
    let (device, queue) =
        futures::executor::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("testfleet probe"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| format!("no device: {e}"))?;
    // Errors are collected instead of panicking in wgpu's default handler.
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = errors.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        if let Ok(mut errors) = sink.lock() {
            errors.push(e.to_string());
        }
    }));

    let numbers = |pick: fn((u32, u32)) -> u32| -> Vec<u8> {
        (0..ELEMENTS)
            .flat_map(|i| pick(inputs(i)).to_le_bytes())
            .collect()
    };
    let input = |label, contents: &[u8]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let a = input("a", &numbers(|(a, _)| a));
    let b = input("b", &numbers(|(_, b)| b));
    let size = u64::from(ELEMENTS) * 4;
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("out"),
        size,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("probe"),
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: a.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: b.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: out.as_entire_binding(),
            },
        ],
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(ELEMENTS / WORKGROUP_SIZE, 1, 1);
    }
    encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, size);
    queue.submit([encoder.finish()]);

    let (mapped_tx, mapped_rx) = mpsc::channel();
    readback.map_async(wgpu::MapMode::Read, .., move |result| {
        let _ = mapped_tx.send(result);
    });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(budget),
        })
        .map_err(|e| format!("the device did not finish: {e}"))?;
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    if !errors.is_empty() {
        return Err(format!("the device reported: {}", errors.join("; ")).into());
    }
    mapped_rx
        .try_recv()
        .map_err(|_| "the result was never mapped".to_string())?
        .map_err(|e| format!("reading the result back: {e}"))?;
    let view = readback
        .get_mapped_range(..)
        .map_err(|e| format!("reading the result back: {e}"))?;
    compare(&view)
}

/// Compares the result's bytes with [`expected`], element by element.
fn compare(bytes: &[u8]) -> Result<u32, CheckFailed> {
    let got = bytes.chunks_exact(4).count();
    if got != ELEMENTS as usize {
        return Err(format!("the result has {got} elements, not {ELEMENTS}").into());
    }
    for (i, chunk) in (0..ELEMENTS).zip(bytes.chunks_exact(4)) {
        let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        if value != expected(i) {
            return Err(CheckFailed {
                reason: format!(
                    "wrong result: element {i} is {value}, expected {}",
                    expected(i)
                ),
                checked: i,
            });
        }
    }
    Ok(ELEMENTS)
}

/// Adapters listed in the capabilities JSON at most (the best ones).
pub const MAX_LISTED: usize = 16;
/// Bytes of an adapter's name, driver or driver info in the capabilities JSON at most.
const MAX_TEXT: usize = 256;

impl GpuReport {
    /// What the probe adds to the worker's capabilities (ARCHITECTURE.md § Capabilities):
    /// `webgpu`, `gpu_type` and `gpu_buffer_mb` for the scheduler to match, `gpu_adapters`
    /// with each adapter's facts, and `gpu_probe_error` when the probe could not look at
    /// everything. Only facts that stay the same from one probe to the next: no times, so an
    /// unchanged machine gives the same JSON and is not registered again.
    pub fn capabilities(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut caps = serde_json::Map::new();
        caps.insert("webgpu".into(), self.webgpu().into());
        if let Some(best) = self.best() {
            caps.insert("gpu_type".into(), best.device_type.as_str().into());
            let mb = best.limits.max_storage_buffer_binding_size / (1024 * 1024);
            caps.insert("gpu_buffer_mb".into(), mb.into());
        }
        let text = |s: &str| {
            let mut s = s.to_string();
            crate::state::limits::clip(&mut s, MAX_TEXT);
            s
        };
        let adapters: Vec<serde_json::Value> = (self.adapters.iter().take(MAX_LISTED))
            .map(|a| {
                let mut adapter = json!({
                    "name": text(&a.name),
                    "backend": a.backend,
                    "device_type": a.device_type.as_str(),
                    "vendor_id": a.vendor_id,
                    "device_id": a.device_id,
                    "driver": text(&a.driver),
                    "driver_info": text(&a.driver_info),
                    "webgpu_compliant": a.webgpu_compliant,
                    "verified": a.verified,
                    "elements_checked": a.elements_checked,
                    "features": a.features,
                    "limits": a.limits,
                });
                if let Some(reason) = &a.reason {
                    adapter["reason"] = text(reason).into();
                }
                adapter
            })
            .collect();
        caps.insert("gpu_adapters".into(), adapters.into());
        if let Some(error) = &self.error {
            caps.insert("gpu_probe_error".into(), text(error).into());
        }
        caps
    }
}
