//! Reading capabilities: a probing worker's object, a bare one, junk, and a fleet's view.

use super::*;

/// What a probing worker with lavapipe and Chromium sends (trimmed to the keys read here).
const PROBED: &str = r#"{
  "os": "linux", "arch": "x86_64", "cpus": 2, "memory_gb": 23, "probed": true,
  "webgpu": true, "gpu_type": "cpu", "gpu_buffer_mb": 128,
  "gpu_adapters": [
    {"name": "llvmpipe (LLVM 15.0.6, 256 bits)", "backend": "vulkan", "device_type": "cpu",
     "driver": "llvmpipe", "driver_info": "Mesa 22.3.6", "webgpu_compliant": true,
     "verified": true, "elements_checked": 65536, "features": ["shader-f16"],
     "limits": {"max_storage_buffer_binding_size": 134217728, "max_buffer_size": 268435456}},
    {"name": "llvmpipe", "backend": "gl", "device_type": "cpu", "driver": "", "driver_info": "",
     "webgpu_compliant": false, "verified": false, "reason": "no device: not compliant",
     "features": [], "limits": {}}
  ],
  "browsers": [
    {"name": "chromium", "version": "156.0.8078.129", "path": "/usr/bin/chromium",
     "webgpu_supported": true, "webnn_supported": false, "reason": "navigator.ml is missing"}
  ],
  "browser.chromium": true, "browser_webgpu": true,
  "declared": ["fpga"], "fpga": true
}"#;

#[test]
fn a_probing_workers_object_reads_into_adapters_browsers_and_keys() {
    let w = WorkerCapabilities::parse("w1", "healthy", PROBED);
    assert_eq!(
        (w.os.as_deref(), w.cpus, w.memory_gb),
        (Some("linux"), Some(2), Some(23.0))
    );
    assert!(w.probed && w.webgpu && !w.webnn);
    assert_eq!(
        (w.gpu_type.as_deref(), w.gpu_buffer_mb),
        (Some("cpu"), Some(128))
    );
    assert_eq!(w.adapters.len(), 2);
    let lavapipe = &w.adapters[0];
    assert_eq!(
        (
            lavapipe.backend.as_str(),
            lavapipe.device_type.as_str(),
            lavapipe.verified
        ),
        ("vulkan", "cpu", true)
    );
    assert_eq!(
        lavapipe.limits["max_storage_buffer_binding_size"],
        134_217_728
    );
    assert_eq!(lavapipe.features, ["shader-f16"]);
    assert_eq!(
        w.adapters[1].reason.as_deref(),
        Some("no device: not compliant")
    );
    assert_eq!(
        w.browsers,
        [Browser {
            name: "chromium".into(),
            version: "156.0.8078.129".into(),
            webgpu_supported: true,
            webnn_supported: false,
            reason: Some("navigator.ml is missing".into()),
        }]
    );
    assert_eq!(w.declared, ["fpga"]);
    // The flat keys hold what the scheduler matches, not the nested lists.
    assert_eq!(w.keys["browser.chromium"], "true");
    assert!(!w.keys.contains_key("gpu_adapters"));
    for (expression, meets) in [
        ("webgpu", true),
        ("gpu_type=cpu", true),
        ("gpu_type=discrete", false),
        ("gpu_buffer_mb>=128", true),
        ("gpu_buffer_mb>=129", false),
        ("browser.chromium", true),
        ("webnn", false),
        ("memory_gb>=16", true),
    ] {
        assert_eq!(w.meets(expression), meets, "{expression}");
    }
    assert_eq!(
        w.summary(),
        "webgpu(cpu, 128 MiB) chromium fpga(declared) 2 cpus 23 GB"
    );
}

#[test]
fn a_bare_or_broken_object_reads_as_offering_nothing() {
    let bare =
        WorkerCapabilities::parse("w2", "healthy", r#"{"os":"linux","cpus":4,"probed":false}"#);
    assert!(!bare.webgpu && bare.adapters.is_empty() && bare.browsers.is_empty());
    assert_eq!(bare.summary(), "4 cpus not probed");
    for junk in [
        "",
        "[]",
        "not json",
        r#"{"gpu_adapters": "nope", "browsers": [1, 2]}"#,
    ] {
        let w = WorkerCapabilities::parse("w", "healthy", junk);
        assert!(w.adapters.is_empty() && w.browsers.is_empty(), "{junk}");
    }
    assert!(flatten("[1]").is_empty());
    assert_eq!(flatten(r#"{"a":"x","b":2,"c":true}"#)["b"], "2");
}

#[test]
fn the_fleet_says_which_healthy_workers_offer_what() {
    let fleet = ClusterCapabilities::from_rows([
        ("gpu", "healthy", PROBED),
        ("plain", "healthy", r#"{"os":"linux","probed":true}"#),
        ("sick", "failed", PROBED),
        ("gone", "left", PROBED),
    ]);
    let names: Vec<&str> = fleet.workers.iter().map(|w| w.worker.as_str()).collect();
    assert_eq!(names, ["gpu", "plain", "sick"]);
    let offered: Vec<(&str, Vec<String>)> = (fleet.offered_by.iter())
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let gpu = vec!["gpu".to_string()];
    assert_eq!(
        offered,
        [
            ("browser.chromium", gpu.clone()),
            ("browser_webgpu", gpu.clone()),
            ("fpga", gpu.clone()),
            ("gpu_type=cpu", gpu.clone()),
            ("webgpu", gpu),
        ]
    );
    assert_eq!(fleet.meeting("webgpu"), ["gpu", "sick"]);
    assert_eq!(fleet.meeting("os=linux"), ["gpu", "plain", "sick"]);
}
