//! `testfleet capabilities [WORKER] [-o json]`: what each worker offers, in detail — its GPU
//! adapters (backend, device type, name, driver, whether the shader check passed, limits),
//! its browsers (version, WebGPU, WebNN), what was declared by hand and why a probe found
//! nothing — and which workers offer each capability a task can ask for.
//!
//! Read through the leader like `testfleet workers` (`--stale`: the answering node's copy),
//! and read into [`crate::capabilities::ClusterCapabilities`], the same view the embedding API
//! returns.

use super::args::Target;
use super::{CliError, Output};
use crate::capabilities::{ClusterCapabilities, WorkerCapabilities};
use serde_json::Value as Json;

/// Prints every worker's capabilities (those that left are not shown), or one worker's.
pub async fn run(target: &Target, worker: Option<&str>) -> Result<(), CliError> {
    let remote = target.remote()?;
    let sql = "SELECT id, status, CAST(capabilities AS VARCHAR) FROM workers ORDER BY id";
    let result = super::query_result(&remote, sql, !target.stale).await?;
    let rows: Vec<(String, String, String)> = (result.rows.iter())
        .map(|r| {
            let cell = |i: usize| match r.get(i) {
                Some(Json::String(s)) => s.clone(),
                _ => String::new(),
            };
            (cell(0), cell(1), cell(2))
        })
        .collect();
    let fleet = ClusterCapabilities::from_rows(
        rows.iter()
            .map(|(id, status, json)| (id.as_str(), status.as_str(), json.as_str())),
    );
    print!("{}", render(&fleet, worker, target.output)?);
    Ok(())
}

/// The text or JSON `run` prints; an unknown worker is a usage error naming the known ones.
pub fn render(
    fleet: &ClusterCapabilities,
    worker: Option<&str>,
    output: Output,
) -> Result<String, CliError> {
    if let Some(name) = worker {
        let Some(w) = fleet.workers.iter().find(|w| w.worker == name) else {
            let known: Vec<&str> = fleet.workers.iter().map(|w| w.worker.as_str()).collect();
            return Err(CliError::Usage(format!(
                "no worker named {name:?} (workers: {}); `testfleet workers --all` lists those that left",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        return Ok(match output {
            Output::Json => serde_json::to_string_pretty(w).unwrap_or_default() + "\n",
            Output::Table => describe(w),
        });
    }
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(fleet).unwrap_or_default() + "\n",
        Output::Table => {
            if fleet.workers.is_empty() {
                return Ok("no workers\n".to_string());
            }
            let mut out: String = fleet
                .workers
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("\n");
            out.push_str("\nOffered by healthy workers:\n");
            if fleet.offered_by.is_empty() {
                out.push_str("  nothing beyond the basics\n");
            }
            for (capability, workers) in &fleet.offered_by {
                out.push_str(&format!("  {capability}: {}\n", workers.join(", ")));
            }
            out
        }
    })
}

/// One worker, for people.
fn describe(w: &WorkerCapabilities) -> String {
    let mut out = format!("{} ({})", w.worker, w.status);
    let basics: Vec<String> = [
        w.os.clone(),
        w.arch.clone(),
        w.cpus.map(|c| format!("{c} cpus")),
        w.memory_gb.map(|g| format!("{g} GB")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !basics.is_empty() {
        out.push_str(&format!(": {}", basics.join(", ")));
    }
    out.push('\n');
    if !w.probed {
        out.push_str("  not probed (--no-probe)\n");
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    if w.probed {
        let best = match (&w.gpu_type, w.gpu_buffer_mb) {
            (Some(kind), Some(mb)) => format!(" (best adapter: {kind}, {mb} MiB storage buffer)"),
            (Some(kind), None) => format!(" (best adapter: {kind})"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  webgpu: {}{best}   webnn: {}\n",
            yes(w.webgpu),
            yes(w.webnn)
        ));
    }
    if !w.adapters.is_empty() {
        out.push_str("  adapters:\n");
        let rows: Vec<Vec<String>> = (w.adapters.iter())
            .map(|a| {
                let limits = [
                    "max_storage_buffer_binding_size",
                    "max_compute_invocations_per_workgroup",
                ]
                .iter()
                .filter_map(|k| a.limits.get(*k).map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" ");
                let verified = match &a.reason {
                    Some(reason) if !a.verified => format!("no: {reason}"),
                    _ => yes(a.verified).to_string(),
                };
                vec![
                    a.backend.clone(),
                    a.device_type.clone(),
                    a.name.clone(),
                    a.driver.clone(),
                    verified,
                    limits,
                ]
            })
            .collect();
        out.push_str(&indent(&super::table(
            &["BACKEND", "TYPE", "NAME", "DRIVER", "VERIFIED", "LIMITS"],
            &rows,
        )));
    }
    if !w.browsers.is_empty() {
        out.push_str("  browsers:\n");
        let rows: Vec<Vec<String>> = (w.browsers.iter())
            .map(|b| {
                vec![
                    b.name.clone(),
                    b.version.clone(),
                    yes(b.webgpu_supported).to_string(),
                    yes(b.webnn_supported).to_string(),
                    b.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&indent(&super::table(
            &["NAME", "VERSION", "WEBGPU", "WEBNN", "NOTE"],
            &rows,
        )));
    }
    for error in &w.probe_errors {
        out.push_str(&format!("  probe: {error}\n"));
    }
    if !w.declared.is_empty() {
        out.push_str(&format!(
            "  declared by hand (not checked): {}\n",
            w.declared.join(", ")
        ));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_adapters_browsers_and_who_offers_what() {
        let probed = r#"{"os":"linux","cpus":2,"memory_gb":23,"probed":true,"webgpu":true,
            "gpu_type":"cpu","gpu_buffer_mb":128,
            "gpu_adapters":[{"name":"llvmpipe","backend":"vulkan","device_type":"cpu",
              "driver":"llvmpipe","verified":true,"limits":{"max_storage_buffer_binding_size":134217728}},
              {"name":"llvmpipe","backend":"gl","device_type":"cpu","driver":"",
              "verified":false,"reason":"not WebGPU-compliant"}],
            "browsers":[{"name":"chromium","version":"156.0","webgpu_supported":true,"webnn_supported":false}],
            "browser.chromium":true,"declared":["fpga"],"fpga":true}"#;
        let fleet = ClusterCapabilities::from_rows([
            ("a", "healthy", probed),
            ("b", "healthy", r#"{"os":"linux","cpus":4,"probed":false}"#),
        ]);
        let text = render(&fleet, None, Output::Table).expect("renders");
        for needle in [
            "a (healthy): linux, 2 cpus, 23 GB",
            "webgpu: yes (best adapter: cpu, 128 MiB storage buffer)   webnn: no",
            "vulkan   cpu   llvmpipe  llvmpipe  yes",
            "max_storage_buffer_binding_size=134217728",
            "no: not WebGPU-compliant",
            "chromium  156.0    yes     no",
            "declared by hand (not checked): fpga",
            "b (healthy): linux, 4 cpus\n  not probed (--no-probe)",
            "  webgpu: a\n",
            "  browser.chromium: a\n",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        let one = render(&fleet, Some("b"), Output::Json).expect("renders");
        let json: serde_json::Value = serde_json::from_str(&one).expect("JSON");
        assert_eq!(json["worker"], "b");
        assert_eq!(json["probed"], false);
        let all: serde_json::Value =
            serde_json::from_str(&render(&fleet, None, Output::Json).expect("renders"))
                .expect("JSON");
        assert_eq!(all["workers"][0]["adapters"][0]["verified"], true);
        assert_eq!(all["workers"][0]["browsers"][0]["webgpu_supported"], true);
        assert_eq!(all["offered_by"]["webgpu"][0], "a");
        let err = render(&fleet, Some("zz"), Output::Table).expect_err("unknown");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("no worker named \"zz\" (workers: a, b)")
        );
    }
}
