use clap::Parser;
use serde_json::{Value, json};

use super::gpu::tests::adapter;
use super::gpu::{DeviceType, ELEMENTS, GpuReport, MAX_LISTED};
use super::*;

const BASE: &str = r#"{"os":"linux","arch":"x86_64","cpus":2,"memory_gb":23.4}"#;

fn report(adapters: Vec<gpu::AdapterReport>, error: Option<&str>) -> Reports {
    Reports {
        gpu: Some(GpuReport {
            adapters,
            error: error.map(str::to_string),
            probed_at_us: 1_800_000_000_000_000,
            took_ms: 120,
        }),
        browser: None,
    }
}

/// This machine's two software adapters, best first as the probe sorts them.
fn mesa() -> Vec<gpu::AdapterReport> {
    vec![
        adapter("lavapipe", "vulkan", DeviceType::Cpu, true, true),
        adapter("llvmpipe", "gl", DeviceType::Cpu, false, true),
    ]
}

fn caps(reports: Option<&Reports>, declared: &[&str]) -> serde_json::Map<String, Value> {
    let declared: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
    match serde_json::from_str(&offered(BASE, reports, &declared)).unwrap() {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn without_probing_only_the_basics_and_probed_false() {
    let caps = caps(None, &[]);
    let keys: Vec<&str> = caps.keys().map(String::as_str).collect();
    assert_eq!(keys, ["arch", "cpus", "memory_gb", "os", "probed"]);
    assert_eq!(caps["probed"], json!(false));
}

#[test]
fn a_verified_compliant_adapter_offers_webgpu() {
    let caps = caps(Some(&report(mesa(), None)), &[]);
    assert_eq!(caps["probed"], json!(true));
    assert_eq!(caps["webgpu"], json!(true));
    assert_eq!(caps["gpu_type"], json!("cpu"));
    assert_eq!(caps["gpu_buffer_mb"], json!(128));
    assert_eq!(caps["os"], json!("linux"));
    assert!(!caps.contains_key("gpu_probe_error"));
    assert!(!caps.contains_key("declared"));
    let adapters = caps["gpu_adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 2);
    assert_eq!(
        adapters[0],
        json!({
            "name": "lavapipe",
            "backend": "vulkan",
            "device_type": "cpu",
            "vendor_id": 0x10005,
            "device_id": 0,
            "driver": "llvmpipe",
            "driver_info": "Mesa 22.3.6 (LLVM 15.0.6)",
            "webgpu_compliant": true,
            "verified": true,
            "elements_checked": ELEMENTS,
            "features": ["shader-f16"],
            "limits": {
                "max_compute_workgroup_size_x": 256,
                "max_compute_invocations_per_workgroup": 256,
                "max_compute_workgroups_per_dimension": 65535,
                "max_storage_buffers_per_shader_stage": 8,
                "max_storage_buffer_binding_size": 128u64 << 20,
                "max_buffer_size": 256u64 << 20,
            },
        })
    );
    assert_eq!(adapters[1]["backend"], json!("gl"));
    assert_eq!(adapters[1]["webgpu_compliant"], json!(false));
}

/// `webgpu` needs both: an adapter that is WebGPU-compliant and one that passed the check
/// (the same one).
#[test]
fn webgpu_needs_a_compliant_adapter_that_passed() {
    let cases = [
        // (adapters, webgpu, gpu_type)
        (mesa(), true, Some("cpu")),
        (
            vec![adapter("llvmpipe", "gl", DeviceType::Cpu, false, true)],
            false,
            Some("cpu"),
        ),
        (
            vec![adapter("lavapipe", "vulkan", DeviceType::Cpu, true, false)],
            false,
            None,
        ),
        (
            vec![
                adapter("gl-discrete", "gl", DeviceType::Discrete, false, true),
                adapter("broken", "vulkan", DeviceType::Discrete, true, false),
            ],
            false,
            Some("discrete"),
        ),
        (Vec::new(), false, None),
    ];
    for (adapters, webgpu, gpu_type) in cases {
        let names: Vec<String> = adapters.iter().map(|a| a.name.clone()).collect();
        let caps = caps(Some(&report(adapters, None)), &[]);
        assert_eq!(caps["webgpu"], json!(webgpu), "{names:?}");
        assert_eq!(caps.get("gpu_type"), gpu_type.map(|t| json!(t)).as_ref());
        assert_eq!(caps.contains_key("gpu_buffer_mb"), gpu_type.is_some());
    }
}

#[test]
fn an_unverified_adapter_says_why() {
    let failed = adapter("lavapipe", "vulkan", DeviceType::Cpu, true, false);
    let caps = caps(Some(&report(vec![failed], None)), &[]);
    let listed = &caps["gpu_adapters"][0];
    assert_eq!(listed["verified"], json!(false));
    assert_eq!(listed["elements_checked"], json!(0));
    assert_eq!(listed["reason"], json!("no device: out of memory"));
}

#[test]
fn no_adapter_is_an_empty_list_and_the_reason() {
    let why = "no adapter found on backends vulkan, gl";
    let caps = caps(Some(&report(Vec::new(), Some(why))), &[]);
    assert_eq!(caps["probed"], json!(true));
    assert_eq!(caps["webgpu"], json!(false));
    assert_eq!(caps["gpu_adapters"], json!([]));
    assert_eq!(caps["gpu_probe_error"], json!(why));
}

#[test]
fn declared_capabilities_are_true_and_listed() {
    let caps = caps(None, &["webgpu", "webnn"]);
    assert_eq!(caps["webgpu"], json!(true));
    assert_eq!(caps["webnn"], json!(true));
    assert_eq!(caps["declared"], json!(["webgpu", "webnn"]));
    assert_eq!(caps["probed"], json!(false));
}

/// The operator's word wins over the probe, and stays visible as a declaration.
#[test]
fn a_declaration_wins_over_the_probe() {
    let gl_only = vec![adapter("llvmpipe", "gl", DeviceType::Cpu, false, true)];
    let caps = caps(Some(&report(gl_only, None)), &["webgpu"]);
    assert_eq!(caps["webgpu"], json!(true));
    assert_eq!(caps["declared"], json!(["webgpu"]));
    assert_eq!(caps["gpu_adapters"][0]["verified"], json!(true));
}

fn browsers() -> browser::BrowsersReport {
    browser::BrowsersReport {
        browsers: vec![browser::BrowserReport {
            kind: browser::Kind::Chromium,
            path: "/usr/bin/chromium".into(),
            version: Some("156.0.8078.129".into()),
            page: Some(browser::Page {
                user_agent: "HeadlessChrome/156.0.0.0".into(),
                gpu_api: true,
                adapter: Some(browser::Adapter::default()),
                ml_api: true,
                ml_error: Some("NotSupportedError: no WebNN here".into()),
                ..browser::Page::default()
            }),
            failure: None,
            took_ms: 900,
        }],
        error: None,
        took_ms: 900,
    }
}

/// The browser probe's keys sit beside the GPU probe's; `webnn`, which no browser here
/// supports, is offered when declared, and the declaration shows.
#[test]
fn browsers_sit_beside_the_adapters() {
    let mut reports = report(mesa(), None);
    reports.browser = Some(browsers());
    let caps = caps(Some(&reports), &[]);
    assert_eq!(caps["webgpu"], json!(true));
    assert_eq!(caps["browser.chromium"], json!(true));
    assert_eq!(caps["browser_webgpu"], json!(true));
    assert!(!caps.contains_key("webnn"));
    assert_eq!(caps["browsers"][0]["name"], json!("chromium"));
    assert_eq!(caps["browsers"][0]["webnn_supported"], json!(false));

    let declared = super::tests::caps(Some(&reports), &["webnn"]);
    assert_eq!(declared["webnn"], json!(true));
    assert_eq!(declared["declared"], json!(["webnn"]));

    // Times do not change the text.
    let mut later = reports.clone();
    let b = later.browser.as_mut().unwrap();
    b.took_ms = 20_000;
    b.browsers[0].took_ms = 19_000;
    assert_eq!(
        offered(BASE, Some(&reports), &[]),
        offered(BASE, Some(&later), &[])
    );
}

#[test]
fn a_bad_base_counts_as_empty() {
    for base in ["", "[1]", "not json"] {
        let json = offered(base, None, &[]);
        assert_eq!(json, r#"{"probed":false}"#, "{base:?}");
    }
}

/// Same machine, same text: a re-probe that finds the same adapters (in other times) changes
/// nothing, so the worker is not registered again.
#[test]
fn times_do_not_change_the_offer() {
    let first = report(mesa(), None);
    let mut second = first.clone();
    let gpu = second.gpu.as_mut().unwrap();
    gpu.probed_at_us += 600_000_000;
    gpu.took_ms = 999;
    gpu.adapters[0].took_ms = 500;
    assert_eq!(
        offered(BASE, Some(&first), &[]),
        offered(BASE, Some(&second), &[])
    );
}

#[test]
fn many_or_long_adapters_stay_within_the_limit() {
    let mut adapters = Vec::new();
    for i in 0..40 {
        let mut a = adapter(
            &format!("gpu{i}"),
            "vulkan",
            DeviceType::Discrete,
            true,
            true,
        );
        a.driver_info = "x".repeat(10_000);
        a.name = format!("{i}{}", "n".repeat(10_000));
        adapters.push(a);
    }
    let json = offered(BASE, Some(&report(adapters, None)), &[]);
    assert!(
        json.len() <= crate::state::limits::MAX_JSON_BYTES,
        "{}",
        json.len()
    );
    let caps: Value = serde_json::from_str(&json).unwrap();
    let listed = caps["gpu_adapters"].as_array().unwrap();
    assert_eq!(listed.len(), MAX_LISTED);
    assert_eq!(listed[0]["driver_info"].as_str().unwrap().len(), 256);
}

#[test]
fn capability_names() {
    for good in [
        "webgpu", "webnn", "gpu.a100", "cuda-12", "big_disk", " webgpu ",
    ] {
        assert_eq!(parse_capability_name(good), Ok(good.trim().to_string()));
    }
    let bad = [
        ("", "bad capability name"),
        ("WebGPU", "bad capability name"),
        ("web gpu", "bad capability name"),
        ("gpu=discrete", "bad capability name"),
        (&"x".repeat(65), "bad capability name"),
        ("os", "set by the worker itself"),
        ("gpu_type", "set by the worker itself"),
        ("declared", "set by the worker itself"),
    ];
    for (name, why) in bad {
        let err = parse_capability_name(name).unwrap_err();
        assert!(err.contains(why), "{name:?}: {err}");
    }
}

#[derive(Parser)]
struct Worker {
    #[command(flatten)]
    probe: ProbeArgs,
}

fn settings(args: &[&str]) -> Result<ProbeSettings, String> {
    let argv = std::iter::once("worker").chain(args.iter().copied());
    Worker::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .probe
        .settings()
}

#[test]
fn flags_default_to_probing_every_ten_minutes() {
    let s = settings(&[]).unwrap();
    assert!(s.enabled);
    assert_eq!(s.interval, Duration::from_secs(600));
    assert_eq!(s.gpu, GpuSettings::default());
    assert_eq!(s.browser, BrowserSettings::default());
    assert_eq!(s.browser.selection, browser::Selection::Auto);
    assert_eq!(s.browser.timeout, Duration::from_secs(20));
    assert!(s.declared.is_empty());
    // In-process workers probe nothing, browsers included.
    let off = ProbeSettings::off();
    assert!(!off.enabled);
    assert_eq!(off.browser.selection, browser::Selection::None);
}

#[test]
fn browser_flags() {
    let s = settings(&["--probe-browsers", "none", "--browser-timeout", "5s"]).unwrap();
    assert_eq!(s.browser.selection, browser::Selection::None);
    assert_eq!(s.browser.timeout, Duration::from_secs(5));
    let s = settings(&["--probe-browsers", "chromium,/opt/google/chrome/chrome"]).unwrap();
    assert_eq!(
        s.browser.selection,
        browser::Selection::Only(vec![
            browser::Wanted::Kind(browser::Kind::Chromium),
            browser::Wanted::Path(browser::Kind::Chrome, "/opt/google/chrome/chrome".into()),
        ])
    );
}

#[test]
fn flags_merge_declarations() {
    let s = settings(&[
        "--capability",
        "webnn",
        "--capability",
        "webgpu,webnn",
        "--no-probe",
        "--probe-interval",
        "1h30m",
        "--probe-backends",
        "vulkan",
    ])
    .unwrap();
    assert!(!s.enabled);
    assert_eq!(s.declared, ["webgpu", "webnn"]);
    assert_eq!(s.interval, Duration::from_secs(5400));
    assert_eq!(s.gpu.backends, wgpu::Backends::VULKAN);
}

#[test]
fn bad_flags_are_refused() {
    let cases: [(&[&str], &str); 9] = [
        (&["--capability", "os"], "set by the worker itself"),
        (&["--capability", "browsers"], "set by the worker itself"),
        (
            &["--capability", "browser_webgpu"],
            "set by the worker itself",
        ),
        (&["--probe-browsers", "netscape"], "bad browser list"),
        (
            &["--browser-timeout", "500ms"],
            "between a second and ten minutes",
        ),
        (
            &["--browser-timeout", "1h"],
            "between a second and ten minutes",
        ),
        (&["--probe-interval", "500ms"], "under a second"),
        (&["--probe-interval", "ten"], "bad duration"),
        (&["--probe-backends", "cuda"], "bad backend list"),
    ];
    for (args, why) in cases {
        let err = settings(args).unwrap_err();
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let many: Vec<String> = (0..=MAX_DECLARED).map(|i| format!("c{i}")).collect();
    let joined = many.join(",");
    let err = settings(&["--capability", &joined]).unwrap_err();
    assert!(err.contains("capabilities declared; at most 64"), "{err}");
}
