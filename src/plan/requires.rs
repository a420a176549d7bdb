//! The typed requirements of a plan's `requires` table, and the capability expressions they
//! stand for.
//!
//! A task names the hardware and browser it needs in words (`webgpu = true`, `gpu_type =
//! "discrete"`, `browser = "chromium"`, `min_memory_gb = 8`, `min_gpu_buffer_mb = 1024`); the
//! scheduler matches expressions over the flat keys a worker's probes report
//! (ARCHITECTURE.md § Capabilities). [`Needs::expressions`] is the one translation:
//!
//! | `requires` key | expression | the worker key it reads |
//! |---|---|---|
//! | `webgpu = true` | `webgpu` | a WebGPU-compliant adapter passed the GPU probe's shader check |
//! | `webnn = true` | `webnn` | a browser created a WebNN context (`navigator.ml`) |
//! | `gpu_type = "discrete"` | `gpu_type=discrete` | the best verified adapter's device type |
//! | `browser = "chromium"` | `browser.chromium` | the browser probe ran that browser headless |
//! | `min_memory_gb = 8` | `memory_gb>=8` | the machine's memory |
//! | `min_gpu_buffer_mb = 1024` | `gpu_buffer_mb>=1024` | the best adapter's largest storage buffer |
//!
//! `webgpu = false` and `webnn = false` ask for nothing (they undo a `[defaults]` that asks).
//! Each key of an entry replaces the same key of `[defaults]`. The expressions travel in the
//! task's `capabilities` next to those written by hand, so nothing new crosses the wire and
//! a parked task names the expression nobody offers.

use std::ops::Range;

use toml::Spanned;

use super::raw::{RawRequires, WholeNumber};

/// The device types the GPU probe reports, best first.
pub const GPU_TYPES: [&str; 5] = ["discrete", "integrated", "virtual", "other", "cpu"];

/// The browsers the browser probe knows by name.
pub const BROWSERS: [&str; 4] = ["chromium", "chrome", "edge", "firefox"];

/// The largest `min_memory_gb`: a petabyte is no machine's memory.
const MAX_MEMORY_GB: f64 = 1_048_576.0;
/// The largest `min_gpu_buffer_mb`.
const MAX_GPU_BUFFER_MB: i64 = 1 << 30;

/// The typed requirements of one entry, checked; `None` means "not given here".
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Needs {
    webgpu: Option<bool>,
    webnn: Option<bool>,
    gpu_type: Option<String>,
    browser: Option<String>,
    min_memory_gb: Option<f64>,
    min_gpu_buffer_mb: Option<i64>,
}

/// A problem with one value: where it is and what to write instead.
pub(super) type Problem = (Range<usize>, String);

impl Needs {
    /// The typed keys of a `requires` table, each checked.
    pub(super) fn parse(raw: &RawRequires) -> Result<Needs, Problem> {
        Ok(Needs {
            webgpu: raw.webgpu.as_ref().map(|b| *b.get_ref()),
            webnn: raw.webnn.as_ref().map(|b| *b.get_ref()),
            gpu_type: one_of(raw.gpu_type.as_ref(), "gpu_type", &GPU_TYPES)?,
            browser: one_of(raw.browser.as_ref(), "browser", &BROWSERS)?,
            min_memory_gb: memory(raw.min_memory_gb.as_ref())?,
            min_gpu_buffer_mb: buffer(raw.min_gpu_buffer_mb.as_ref())?,
        })
    }

    /// `entry` on top of `self` (the defaults): each key the entry gives wins.
    pub(super) fn overlay(&self, entry: &Needs) -> Needs {
        Needs {
            webgpu: entry.webgpu.or(self.webgpu),
            webnn: entry.webnn.or(self.webnn),
            gpu_type: entry.gpu_type.clone().or_else(|| self.gpu_type.clone()),
            browser: entry.browser.clone().or_else(|| self.browser.clone()),
            min_memory_gb: entry.min_memory_gb.or(self.min_memory_gb),
            min_gpu_buffer_mb: entry.min_gpu_buffer_mb.or(self.min_gpu_buffer_mb),
        }
    }

    /// The capability expressions these requirements stand for (the table in the module
    /// documentation), in that order.
    pub(super) fn expressions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.webgpu == Some(true) {
            out.push("webgpu".to_string());
        }
        if self.webnn == Some(true) {
            out.push("webnn".to_string());
        }
        if let Some(kind) = &self.gpu_type {
            out.push(format!("gpu_type={kind}"));
        }
        if let Some(browser) = &self.browser {
            out.push(format!("browser.{browser}"));
        }
        if let Some(gb) = self.min_memory_gb {
            out.push(format!("memory_gb>={gb}"));
        }
        if let Some(mb) = self.min_gpu_buffer_mb {
            out.push(format!("gpu_buffer_mb>={mb}"));
        }
        out
    }
}

fn one_of(
    value: Option<&Spanned<String>>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.get_ref().trim().to_ascii_lowercase();
    if allowed.contains(&text.as_str()) {
        return Ok(Some(text));
    }
    Err((
        value.span(),
        format!(
            "{key} {:?} is not one of {}",
            value.get_ref(),
            allowed
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

fn memory(value: Option<&Spanned<f64>>) -> Result<Option<f64>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let gb = *value.get_ref();
    if gb.is_finite() && gb > 0.0 && gb <= MAX_MEMORY_GB {
        return Ok(Some(gb));
    }
    Err((
        value.span(),
        format!(
            "min_memory_gb must be a number of GB above 0 and at most {MAX_MEMORY_GB}, not {gb}"
        ),
    ))
}

fn buffer(value: Option<&Spanned<WholeNumber>>) -> Result<Option<i64>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let mb = value.get_ref().0;
    if (1..=MAX_GPU_BUFFER_MB).contains(&mb) {
        return Ok(Some(mb));
    }
    Err((
        value.span(),
        format!(
            "min_gpu_buffer_mb must be a whole number of MiB from 1 to {MAX_GPU_BUFFER_MB}, not {mb}"
        ),
    ))
}
