use super::*;

/// An adapter as the probe would describe it; lavapipe-like limits.
pub(in crate::worker::probe) fn adapter(
    name: &str,
    backend: &str,
    device_type: DeviceType,
    webgpu_compliant: bool,
    verified: bool,
) -> AdapterReport {
    AdapterReport {
        name: name.to_string(),
        vendor_id: 0x10005,
        device_id: 0,
        backend: backend.to_string(),
        device_type,
        driver: "llvmpipe".to_string(),
        driver_info: "Mesa 22.3.6 (LLVM 15.0.6)".to_string(),
        webgpu_compliant,
        features: vec!["shader-f16".to_string()],
        limits: ComputeLimits {
            max_compute_workgroup_size_x: 256,
            max_compute_invocations_per_workgroup: 256,
            max_compute_workgroups_per_dimension: 65_535,
            max_storage_buffers_per_shader_stage: 8,
            max_storage_buffer_binding_size: 128 << 20,
            max_buffer_size: 256 << 20,
        },
        verified,
        elements_checked: if verified { ELEMENTS } else { 0 },
        reason: (!verified).then(|| "no device: out of memory".to_string()),
        took_ms: 40,
    }
}

#[test]
fn backend_lists_parse() {
    use wgpu::Backends as B;
    let cases = [
        ("all", B::all()),
        ("none", B::empty()),
        ("NONE", B::empty()),
        ("vulkan", B::VULKAN),
        ("vk, gl", B::VULKAN | B::GL),
        ("opengl", B::GL),
        ("gles,vulkan", B::VULKAN | B::GL),
        ("metal,dx12", B::METAL | B::DX12),
    ];
    for (text, want) in cases {
        assert_eq!(parse_backends(text), Ok(want), "{text:?}");
    }
    for bad in ["", "cuda", "all,vulkan", "none,gl", "vulkan,,gl", "webgpu"] {
        let err = parse_backends(bad).expect_err(bad);
        assert!(err.contains(BACKEND_NAMES), "{bad:?}: {err}");
    }
}

#[test]
fn backend_names_list_what_this_build_can_use() {
    assert_eq!(backend_names(wgpu::Backends::empty()), "(none enabled)");
    assert_eq!(backend_names(wgpu::Backends::VULKAN), "vulkan");
    // Metal and DX12 are not compiled on Linux.
    assert_eq!(backend_names(wgpu::Backends::all()), "vulkan, gl");
}

#[test]
fn adapters_sort_verified_then_compliant_then_device_type() {
    let mut adapters = vec![
        adapter("gl-discrete", "gl", DeviceType::Discrete, false, true),
        adapter("broken", "vulkan", DeviceType::Discrete, true, false),
        adapter("lavapipe", "vulkan", DeviceType::Cpu, true, true),
        adapter("integrated", "vulkan", DeviceType::Integrated, true, true),
        adapter("llvmpipe", "gl", DeviceType::Cpu, false, true),
    ];
    sort(&mut adapters);
    let order: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "integrated",
            "lavapipe",
            "gl-discrete",
            "llvmpipe",
            "broken"
        ]
    );
}

#[test]
fn the_check_compares_every_element() {
    let right: Vec<u8> = (0..ELEMENTS)
        .flat_map(|i| expected(i).to_le_bytes())
        .collect();
    assert_eq!(compare(&right).unwrap(), ELEMENTS);

    let mut wrong = right.clone();
    let last = (ELEMENTS - 1) as usize * 4;
    wrong[last] ^= 1;
    let failed = compare(&wrong).unwrap_err();
    assert_eq!(failed.checked, ELEMENTS - 1);
    assert!(
        failed.reason.starts_with("wrong result: element 65535 is"),
        "{}",
        failed.reason
    );

    let short = compare(&right[..right.len() - 4]).unwrap_err();
    assert_eq!(short.reason, "the result has 65535 elements, not 65536");
}

/// A driver that never returns costs the caller its budget, not its thread; once `MAX_STUCK`
/// threads are stuck the probe refuses to add more, and probes again when they return.
#[test]
fn stuck_drivers_are_bounded() {
    let probe = GpuProbe::new(GpuSettings {
        backends: wgpu::Backends::empty(),
        ..GpuSettings::default()
    });
    let (release, hung) = std::sync::mpsc::channel::<()>();
    let hung = Arc::new(Mutex::new(hung));
    for _ in 0..MAX_STUCK {
        let hung = hung.clone();
        let started = Instant::now();
        let result: Result<(), String> = probe.bounded(
            "hung-driver",
            Instant::now() + Duration::from_millis(20),
            move || {
                let _ = hung.lock().unwrap().recv();
            },
        );
        let err = result.unwrap_err();
        assert!(err.contains("did not answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(probe.stuck.load(Ordering::SeqCst), MAX_STUCK);
    let refused = probe.run();
    assert!(refused.adapters.is_empty());
    let error = refused.error.unwrap();
    assert!(error.contains("still stuck in a GPU driver"), "{error}");

    drop(release);
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.stuck.load(Ordering::SeqCst) > 0 {
        assert!(
            Instant::now() < deadline,
            "the released threads did not return"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let again = probe.run().error.unwrap();
    assert!(again.starts_with("no adapter found"), "{again}");
}

#[test]
fn a_panicking_driver_is_a_reason() {
    let probe = GpuProbe::new(GpuSettings::default());
    let result: Result<(), String> = probe.bounded(
        "panicking-driver",
        Instant::now() + Duration::from_secs(10),
        || panic!("driver bug"),
    );
    assert_eq!(result.unwrap_err(), "the driver panicked: driver bug");
}

#[test]
fn with_every_backend_disabled_no_adapter_is_found_quickly() {
    let started = Instant::now();
    let report = GpuProbe::new(GpuSettings {
        backends: parse_backends("none").unwrap(),
        ..GpuSettings::default()
    })
    .run();
    let took = started.elapsed();
    assert!(report.adapters.is_empty());
    assert_eq!(
        report.error.as_deref(),
        Some("no adapter found on backends (none enabled)")
    );
    assert!(!report.webgpu());
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

/// The real probe on this machine. Mesa's software adapters make it work without a GPU:
/// llvmpipe through GL (libegl1) and lavapipe through Vulkan (mesa-vulkan-drivers,
/// libvulkan1), the latter WebGPU-compliant.
#[test]
fn the_real_probe_verifies_an_adapter_on_this_machine() {
    let settings = GpuSettings::default();
    let started = Instant::now();
    let report = GpuProbe::new(settings.clone()).run();
    let took = started.elapsed();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(
        !report.adapters.is_empty(),
        "no GPU adapter on this machine ({:?}). Install Mesa's software drivers: apt-get \
         install mesa-vulkan-drivers libvulkan1 libegl1 (.ci/run does)",
        report.error
    );
    assert!(
        took < settings.deadline,
        "the probe took {took:?}, over its deadline"
    );
    let verified: Vec<&AdapterReport> = report.adapters.iter().filter(|a| a.verified).collect();
    assert!(
        !verified.is_empty(),
        "no adapter passed the shader check: {:?}",
        report.adapters
    );
    for a in &verified {
        assert_eq!(a.elements_checked, ELEMENTS, "{}", a.name);
        assert!(a.reason.is_none(), "{}", a.name);
    }
    // Best first: a verified adapter heads the list.
    assert_eq!(report.best(), Some(&report.adapters[0]));
    for a in report.adapters.iter().filter(|a| a.webgpu_compliant) {
        assert!(
            a.verified,
            "WebGPU-compliant {} failed: {:?}",
            a.name, a.reason
        );
    }
    if report.adapters.iter().any(|a| a.webgpu_compliant) {
        assert!(report.webgpu());
    }
}
