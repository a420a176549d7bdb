//! The cluster's view of what its workers offer: each worker's capabilities JSON read into
//! adapters, browsers and the flat keys the scheduler matches, and which workers offer what.
//!
//! Workers write their capabilities (ARCHITECTURE.md § Capabilities; `worker::probe` makes
//! them); the replicated `workers.capabilities` column holds them. This module only reads:
//! [`flatten`] is the one place the JSON object becomes the scheduler's `key → text` map
//! (the leader's `worker_profile` uses it), [`WorkerCapabilities::parse`] reads the object
//! for people and programs, leniently (a key a worker did not send is absent, not an error),
//! and [`ClusterCapabilities`] gathers a fleet — from the applied [`Machine`] inside a
//! coordinator (the embedding API returns it) or from rows read over gRPC (`testfleet
//! capabilities`). Pure: no I/O, no clock.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::state::command::WorkerStatus;
use crate::state::machine::Machine;

/// A worker's capabilities as the scheduler matches them: every top-level key of the JSON
/// object, strings as they are and anything else as JSON text (`true`, `23`, `[..]`). Not
/// an object: nothing.
pub fn flatten(json: &str) -> BTreeMap<String, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// One GPU adapter a worker's probe found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Adapter {
    pub name: String,
    /// `vulkan`, `gl`, `metal`, `dx12`.
    pub backend: String,
    /// `discrete`, `integrated`, `virtual`, `other`, `cpu`.
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub webgpu_compliant: bool,
    /// True only when the adapter ran the probe's compute shader and gave the right answer.
    pub verified: bool,
    /// Why it is not verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub features: Vec<String>,
    /// The compute limits the probe reports, by WebGPU name.
    pub limits: BTreeMap<String, u64>,
}

/// One browser a worker's probe ran headless.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Browser {
    /// `chromium`, `chrome`, `edge`, `firefox`.
    pub name: String,
    pub version: String,
    /// `navigator.gpu` exists and gave an adapter.
    pub webgpu_supported: bool,
    /// `navigator.ml` exists and gave a context.
    pub webnn_supported: bool,
    /// Why the check failed or what was missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What one worker offers, read from its capabilities JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkerCapabilities {
    pub worker: String,
    /// `healthy`, `suspect`, `failed`, `draining`, `quarantined`, `left`.
    pub status: String,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub cpus: Option<u64>,
    pub memory_gb: Option<f64>,
    /// The probes ran (false with `--no-probe`).
    pub probed: bool,
    /// A WebGPU-compliant adapter passed the shader check.
    pub webgpu: bool,
    /// A browser created a WebNN context.
    pub webnn: bool,
    /// The best verified adapter's device type.
    pub gpu_type: Option<String>,
    /// That adapter's largest storage buffer binding, MiB.
    pub gpu_buffer_mb: Option<u64>,
    pub adapters: Vec<Adapter>,
    pub browsers: Vec<Browser>,
    /// Capabilities declared by hand (`--capability`): claimed, not checked.
    pub declared: Vec<String>,
    /// The probes' errors: why an adapter or browser list is empty or incomplete.
    pub probe_errors: Vec<String>,
    /// The flat keys the scheduler matches ([`flatten`]), without the nested lists.
    pub keys: BTreeMap<String, String>,
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    matches!(map.get(key), Some(Value::Bool(true)))
        || matches!(map.get(key), Some(Value::String(s)) if s == "true")
}

fn objects<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Map<String, Value>> {
    map.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

impl WorkerCapabilities {
    /// Reads `json` (a worker's capabilities object) for `worker` in `status`. Keys that are
    /// missing or of another type read as absent; nothing fails.
    pub fn parse(worker: &str, status: &str, json: &str) -> WorkerCapabilities {
        let map = match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let adapters = objects(&map, "gpu_adapters")
            .map(|a| Adapter {
                name: text(a, "name").unwrap_or_default(),
                backend: text(a, "backend").unwrap_or_default(),
                device_type: text(a, "device_type").unwrap_or_default(),
                driver: text(a, "driver").unwrap_or_default(),
                driver_info: text(a, "driver_info").unwrap_or_default(),
                webgpu_compliant: flag(a, "webgpu_compliant"),
                verified: flag(a, "verified"),
                reason: text(a, "reason"),
                features: (a.get("features").and_then(Value::as_array).into_iter())
                    .flatten()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect(),
                limits: (a.get("limits").and_then(Value::as_object).into_iter())
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect(),
            })
            .collect();
        let browsers = objects(&map, "browsers")
            .map(|b| Browser {
                name: text(b, "name").unwrap_or_default(),
                version: text(b, "version").unwrap_or_default(),
                webgpu_supported: flag(b, "webgpu_supported"),
                webnn_supported: flag(b, "webnn_supported"),
                reason: text(b, "reason"),
            })
            .collect();
        let declared = (map.get("declared").and_then(Value::as_array).into_iter())
            .flatten()
            .filter_map(|d| d.as_str().map(String::from))
            .collect();
        let probe_errors = ["gpu_probe_error", "browser_probe_error"]
            .iter()
            .filter_map(|k| text(&map, k))
            .collect();
        let keys = flatten(json)
            .into_iter()
            .filter(|(_, v)| !v.starts_with('[') && !v.starts_with('{'))
            .collect();
        WorkerCapabilities {
            worker: worker.to_string(),
            status: status.to_string(),
            os: text(&map, "os"),
            arch: text(&map, "arch"),
            cpus: map.get("cpus").and_then(Value::as_u64),
            memory_gb: map.get("memory_gb").and_then(Value::as_f64),
            probed: flag(&map, "probed"),
            webgpu: flag(&map, "webgpu"),
            webnn: flag(&map, "webnn"),
            gpu_type: text(&map, "gpu_type"),
            gpu_buffer_mb: map.get("gpu_buffer_mb").and_then(Value::as_u64),
            adapters,
            browsers,
            declared,
            probe_errors,
            keys,
        }
    }

    /// Does this worker meet a capability expression (`webgpu`, `gpu_type=discrete`,
    /// `memory_gb>=8`), as the scheduler decides it?
    pub fn meets(&self, expression: &str) -> bool {
        crate::scheduler::meets(expression, &self.keys)
    }

    /// One line for `testfleet workers`: `webgpu(cpu, 128 MiB) chromium 2 cpus 23 GB`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.webgpu {
            let mut gpu = self.gpu_type.clone().unwrap_or_default();
            if let Some(mb) = self.gpu_buffer_mb {
                gpu.push_str(&format!(", {mb} MiB"));
            }
            parts.push(format!("webgpu({gpu})"));
        }
        if self.webnn {
            parts.push("webnn".to_string());
        }
        for b in &self.browsers {
            parts.push(b.name.clone());
        }
        for d in &self.declared {
            parts.push(format!("{d}(declared)"));
        }
        if let Some(cpus) = self.cpus {
            parts.push(format!("{cpus} cpus"));
        }
        if let Some(gb) = self.memory_gb {
            parts.push(format!("{gb} GB"));
        }
        if !self.probed {
            parts.push("not probed".to_string());
        }
        parts.join(" ")
    }
}

/// Which workers offer what, over a fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterCapabilities {
    /// Every worker that has not left, by name.
    pub workers: Vec<WorkerCapabilities>,
    /// For each capability a task can ask for — `webgpu`, `webnn`, `browser_webgpu`,
    /// `gpu_type=<type>`, `browser.<name>`, each declared name — the healthy workers that
    /// offer it. A key
    /// nobody offers is absent.
    pub offered_by: BTreeMap<String, Vec<String>>,
}

impl ClusterCapabilities {
    /// The fleet from `(worker, status, capabilities JSON)` rows; workers that left are
    /// left out.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut workers: Vec<WorkerCapabilities> = rows
            .into_iter()
            .filter(|(_, status, _)| *status != WorkerStatus::Left.as_str())
            .map(|(id, status, json)| WorkerCapabilities::parse(id, status, json))
            .collect();
        workers.sort_by(|a, b| a.worker.cmp(&b.worker));
        let mut offered_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in workers
            .iter()
            .filter(|w| w.status == WorkerStatus::Healthy.as_str())
        {
            let mut offers: Vec<String> = Vec::new();
            if w.webgpu {
                offers.push("webgpu".into());
            }
            if w.webnn {
                offers.push("webnn".into());
            }
            if w.keys.get("browser_webgpu").is_some_and(|v| v == "true") {
                offers.push("browser_webgpu".into());
            }
            if let Some(kind) = &w.gpu_type {
                offers.push(format!("gpu_type={kind}"));
            }
            offers.extend(
                (w.keys.iter())
                    .filter(|(k, v)| k.starts_with("browser.") && v.as_str() == "true")
                    .map(|(k, _)| k.clone()),
            );
            offers.extend(w.declared.iter().cloned());
            offers.sort();
            offers.dedup();
            for offer in offers {
                offered_by.entry(offer).or_default().push(w.worker.clone());
            }
        }
        ClusterCapabilities {
            workers,
            offered_by,
        }
    }

    /// The fleet as the applied state knows it (inside a coordinator).
    pub fn from_machine(machine: &Machine) -> Self {
        Self::from_rows(machine.workers().values().map(|w| {
            (
                w.id.as_str(),
                w.status.as_str(),
                w.capabilities_json.as_str(),
            )
        }))
    }

    /// The workers (any status but left) that meet `expression`, by name.
    pub fn meeting(&self, expression: &str) -> Vec<&str> {
        (self.workers.iter())
            .filter(|w| w.meets(expression))
            .map(|w| w.worker.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests;
