//! Parsers against literal `/proc` text, the per-interval arithmetic with logical time,
//! `statvfs` and a real sample of this test process, the error-rate counter, and a table of
//! assessments.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// A real `/proc/self/stat` line (from `cat`), with the name replaced by `name`.
fn stat_line(name: &[u8]) -> Vec<u8> {
    let mut line = b"7862 (".to_vec();
    line.extend_from_slice(name);
    line.extend_from_slice(
        b") R 7854 7854 6942 0 -1 4194304 103 0 0 0 250 36 0 0 20 0 7 0 307265 3133440 383 \
          18446744073709551615 94841943420928 94841943440809 140736031168336 0 0 0 0 0 0 0 0 0 \
          17 0 0 0 0 0 0 94841943456816 94841943458432 94842718056448 140736031173337 \
          140736031173357 140736031173357 140736031174635 0\n",
    );
    line
}

#[test]
fn stat_counts_fields_from_the_last_parenthesis() {
    for name in [
        &b"testfleet"[..],
        b"my (odd) name",
        b") R 1 2 3",
        b"tokio-rt-worker ((",
        b"\xff\xfe not utf-8 )",
    ] {
        let stat = parse_stat(&stat_line(name)).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                parent: 7854,
                cpu_ticks: 250 + 36,
                threads: 7
            },
            "name {:?}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn another_processs_usage_is_read_from_its_proc_files() {
    let me = process_usage(std::process::id()).unwrap();
    // SAFETY: getppid has no preconditions.
    assert_eq!(me.parent as i32, unsafe { libc::getppid() });
    assert!(me.rss_bytes > 1 << 20, "{me:?}");
    assert!(matches!(
        process_usage(u32::MAX),
        Err(SampleError::Read { .. })
    ));
}

#[test]
fn malformed_stat_is_an_error() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "no `)`"),
        (b"12 (name S 1 2", "no `)`"),
        (b"12 (name) S 1 2 3", "no field 14 (utime)"),
        (
            b"12 (n) S 1 1 1 0 -1 0 0 0 0 0 x 36 0 0 20 0 7",
            "field 14 (utime) \"x\"",
        ),
    ];
    for (text, expected) in cases {
        let error = parse_stat(text).unwrap_err();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

#[test]
fn statm_gives_resident_pages() {
    assert_eq!(parse_statm_resident("765 418 390 5 0 123 0\n"), Ok(418));
    assert!(
        parse_statm_resident("765")
            .unwrap_err()
            .contains("resident")
    );
    assert!(
        parse_statm_resident("765 -3 1")
            .unwrap_err()
            .contains("\"-3\"")
    );
}

#[test]
fn meminfo_gives_mem_total_in_bytes() {
    let text = "MemTotal:       16308508 kB\nMemFree:         1234567 kB\n";
    assert_eq!(parse_meminfo_total(text), Ok(16_308_508 * 1024));
    assert!(
        parse_meminfo_total("MemFree: 1 kB\n")
            .unwrap_err()
            .contains("no MemTotal")
    );
    assert!(
        parse_meminfo_total("MemTotal: 12 MB\n")
            .unwrap_err()
            .contains("unit")
    );
}

const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 2 64 143920 0
Icmp: InMsgs InErrors InCsumErrors
Icmp: 1 0 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets \
CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 2780 1713 1027 539 0 143842 142650 243 7 1551 2
Udp: InDatagrams NoPorts InErrors OutDatagrams
Udp: 77 0 5 78
";

#[test]
fn snmp_sums_retransmits_and_input_errors_only() {
    // RetransSegs 243 + InErrs 7; OutRsts, AttemptFails, InCsumErrors and UDP left out.
    assert_eq!(parse_snmp_tcp_errors(SNMP), Ok(250));
}

#[test]
fn malformed_snmp_is_an_error() {
    let no_tcp = "Ip: Forwarding\nIp: 2\n";
    let no_values = "Tcp: RetransSegs InErrs\n";
    let short = "Tcp: RetransSegs InErrs\nTcp: 5\n";
    let missing = "Tcp: RetransSegs OutRsts\nTcp: 5 6\n";
    let garbage = "Tcp: RetransSegs InErrs\nTcp: 5 lots\n";
    for (text, expected) in [
        (no_tcp, "no Tcp: lines"),
        (no_values, "no Tcp: value line"),
        (short, "2 names but 1 values"),
        (missing, "no Tcp: InErrs counter"),
        (garbage, "Tcp: InErrs \"lots\""),
    ] {
        let error = parse_snmp_tcp_errors(text).unwrap_err();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

#[test]
fn cpu_and_net_errors_are_per_interval() {
    let t0 = Instant::now();
    let first = Reading {
        at: t0,
        cpu_ticks: 1_000,
        net_errors: 40,
    };
    // 2 s later the process used 150 ticks (1.5 s at 100 Hz): three quarters of a core.
    let second = Reading {
        at: t0 + Duration::from_secs(2),
        cpu_ticks: 1_150,
        net_errors: 43,
    };
    assert_eq!(second.since(&first, 100), (0.75, 3));

    // Two busy threads for 1 s: 2.0 cores.
    let third = Reading {
        at: second.at + Duration::from_secs(1),
        cpu_ticks: 1_350,
        net_errors: 43,
    };
    assert_eq!(third.since(&second, 100), (2.0, 0));

    // No time passed, or a clock that went backwards: no division by zero.
    assert_eq!(second.since(&second, 100), (0.0, 0));
    assert_eq!(first.since(&second, 100), (0.0, 0));
}

#[test]
fn statvfs_on_a_temp_dir_reports_its_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_space(dir.path()).unwrap();
    assert!(disk.total_bytes > 0, "{disk:?}");
    assert!(disk.free_bytes <= disk.total_bytes, "{disk:?}");
}

#[test]
fn statvfs_errors_name_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let error = disk_space(&missing).unwrap_err();
    assert!(matches!(&error, SampleError::Statvfs { path, .. } if *path == missing));
    assert!(error.to_string().contains("no-such-dir"), "{error}");

    let error = disk_space(Path::new("bad\0path")).unwrap_err();
    assert!(error.to_string().contains("NUL"), "{error}");
}

#[test]
fn sampling_this_process_gives_sane_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(dir.path().to_path_buf()).unwrap();
    let t0 = Instant::now();
    let first = sampler.sample(t0).unwrap();
    assert_eq!(first.cpu, 0.0);
    assert_eq!(first.net_errors, 0);
    assert!(first.rss_bytes > 0);
    assert!(first.mem_total_bytes > first.rss_bytes);
    assert!(first.disk_total_bytes > 0);
    assert!(first.disk_free_bytes <= first.disk_total_bytes);
    assert!(first.threads >= 1);
    // At least stdin, stdout and stderr.
    assert!(first.open_fds >= 3, "{first:?}");
    assert!(first.open_fds < first.fd_limit, "{first:?}");

    // A logical 10 s later: whatever this process used meanwhile, it is a finite share of
    // the cores this machine has.
    let second = sampler.sample(t0 + Duration::from_secs(10)).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(
        second.cpu >= 0.0 && second.cpu <= cores,
        "cpu {} with {cores} cores",
        second.cpu
    );
    assert_eq!(second.mem_total_bytes, first.mem_total_bytes);
}

#[test]
fn a_missing_data_dir_fails_the_sample_and_keeps_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut sampler = Sampler::new(data_dir.clone()).unwrap();
    let error = sampler.sample(Instant::now()).unwrap_err();
    assert!(matches!(error, SampleError::Statvfs { .. }), "{error}");
    assert_eq!(sampler.previous, None);

    std::fs::create_dir(&data_dir).unwrap();
    assert_eq!(sampler.sample(Instant::now()).unwrap().cpu, 0.0);
    assert!(sampler.previous.is_some());
}

#[test]
fn file_errors_name_the_file() {
    let error = parse_file("/proc/self/no-such-file", |_| Ok(())).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot read /proc/self/no-such-file: "),
        "{error}"
    );
    let error = parse_file::<()>(PROC_STATM, |_| Err("truncated".to_string())).unwrap_err();
    assert_eq!(error.to_string(), "malformed /proc/self/statm: truncated");
}

#[test]
fn error_rate_counts_per_window() {
    let rate = ErrorRate::new();
    assert_eq!(rate.take_rate(), 0.0);

    for ok in [true, false, true, true] {
        rate.record(ok);
    }
    assert_eq!(
        rate.take(),
        ErrorCounts {
            calls: 4,
            errors: 1
        }
    );
    assert_eq!(rate.take(), ErrorCounts::default());

    rate.record(false);
    rate.record(false);
    assert_eq!(rate.take_rate(), 1.0);
    assert_eq!(rate.take_rate(), 0.0);
}

#[test]
fn error_rate_is_exact_across_threads() {
    let rate = Arc::new(ErrorRate::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rate = Arc::clone(&rate);
            std::thread::spawn(move || {
                for i in 0..1_000 {
                    rate.record(i % 4 != 0);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        rate.take(),
        ErrorCounts {
            calls: 4_000,
            errors: 1_000
        }
    );
}

#[test]
fn error_counts_saturate_instead_of_overflowing() {
    let full_calls = CALLS_MASK;
    assert_eq!(add_call(full_calls, false), full_calls);
    let full_errors = CALLS_MASK << 32 | 7;
    assert_eq!(add_call(full_errors, true), full_errors);
    assert_eq!(add_call(3 << 32 | 5, false), 4 << 32 | 6);
    assert_eq!(add_call(3 << 32 | 5, true), 3 << 32 | 6);
}

/// A healthy sample: a quarter core, 1 of 16 GiB, half of a 100 GiB disk free, 100 of 1024 fds.
fn healthy() -> Sample {
    Sample {
        cpu: 0.25,
        rss_bytes: GIB,
        mem_total_bytes: 16 * GIB,
        disk_free_bytes: 50 * GIB,
        disk_total_bytes: 100 * GIB,
        net_errors: 12,
        threads: 20,
        open_fds: 100,
        fd_limit: 1024,
    }
}

#[test]
fn assess_levels() {
    use HealthLevel::{Critical, Degraded, Ok};
    struct Case {
        name: &'static str,
        sample: Sample,
        error_rate: f64,
        level: HealthLevel,
        /// A fragment of each expected reason, in order.
        reasons: &'static [&'static str],
    }
    let case = |name, sample, error_rate, level, reasons| Case {
        name,
        sample,
        error_rate,
        level,
        reasons,
    };
    let cases = [
        case("healthy", healthy(), 0.0, Ok, &[]),
        case(
            "many net errors alone are not assessed",
            Sample {
                net_errors: 1_000_000,
                ..healthy()
            },
            0.0,
            Ok,
            &[],
        ),
        case(
            "busy cpu",
            Sample {
                cpu: 0.9,
                ..healthy()
            },
            0.0,
            Degraded,
            &["cpu 0.90 of a core >= 0.90"],
        ),
        case(
            "cpu is never critical",
            Sample {
                cpu: 7.5,
                ..healthy()
            },
            0.0,
            Degraded,
            &["cpu 7.50"],
        ),
        case(
            "rss 60 %",
            Sample {
                rss_bytes: 10 * GIB,
                ..healthy()
            },
            0.0,
            Degraded,
            &["rss 10.00 GiB is 62.5% of memory 16.00 GiB >= 60.0%"],
        ),
        case(
            "rss 80 %",
            Sample {
                rss_bytes: 27 * GIB / 2,
                ..healthy()
            },
            0.0,
            Critical,
            &["rss 13.50 GiB is 84.4% of memory 16.00 GiB >= 80.0%"],
        ),
        case(
            "disk 9 % free",
            Sample {
                disk_free_bytes: 9 * GIB,
                ..healthy()
            },
            0.0,
            Degraded,
            &["data disk free 9.00 GiB (9.0% of 100.00 GiB) < 10.0%"],
        ),
        case(
            "disk 4 % free",
            Sample {
                disk_free_bytes: 4 * GIB,
                ..healthy()
            },
            0.0,
            Critical,
            &["(4.0% of 100.00 GiB) < 5.0%"],
        ),
        case(
            "small disk under 1 GiB free",
            Sample {
                disk_free_bytes: GIB / 2,
                disk_total_bytes: 2 * GIB,
                ..healthy()
            },
            0.0,
            Critical,
            &["(25.0% of 2.00 GiB) < 1.00 GiB"],
        ),
        case(
            "file system without a size",
            Sample {
                disk_free_bytes: 0,
                disk_total_bytes: 0,
                ..healthy()
            },
            0.0,
            Ok,
            &[],
        ),
        case(
            "fds at 80 %",
            Sample {
                open_fds: 820,
                ..healthy()
            },
            0.0,
            Degraded,
            &["820 open fds of limit 1024 >= 80.0%"],
        ),
        case(
            "fds at 95 %",
            Sample {
                open_fds: 1000,
                ..healthy()
            },
            0.0,
            Critical,
            &["1000 open fds of limit 1024 >= 95.0%"],
        ),
        case(
            "no fd limit",
            Sample {
                open_fds: 1_000_000,
                fd_limit: u64::MAX,
                ..healthy()
            },
            0.0,
            Ok,
            &[],
        ),
        case("error rate just under degraded", healthy(), 0.09, Ok, &[]),
        case(
            "error rate 10 %",
            healthy(),
            0.1,
            Degraded,
            &["error rate 10.0% >= 10.0%"],
        ),
        case(
            "error rate 50 %",
            healthy(),
            0.5,
            Critical,
            &["error rate 50.0% >= 50.0%"],
        ),
        case(
            "worst level wins and every reason is listed",
            Sample {
                cpu: 0.95,
                disk_free_bytes: 3 * GIB,
                ..healthy()
            },
            0.2,
            Critical,
            &["cpu 0.95", "< 5.0%", "error rate 20.0%"],
        ),
    ];

    let limits = HealthLimits::default();
    for case in cases {
        let assessment = assess(&case.sample, case.error_rate, &limits);
        assert_eq!(
            assessment.level, case.level,
            "{}: {assessment:?}",
            case.name
        );
        assert_eq!(
            assessment.reasons.len(),
            case.reasons.len(),
            "{}: {assessment:?}",
            case.name
        );
        for (reason, fragment) in assessment.reasons.iter().zip(case.reasons) {
            assert!(
                reason.contains(fragment),
                "{}: {reason:?} lacks {fragment:?}",
                case.name
            );
        }
    }
}

#[test]
fn to_command_carries_rss_as_memory() {
    let command = healthy().to_command(3, 0.25, Timestamp(42));
    assert!(matches!(
        command,
        Command::HealthSample {
            node: 3,
            mem_bytes,
            disk_free_bytes,
            net_errors: 12,
            at: Timestamp(42),
            ..
        } if mem_bytes == GIB && disk_free_bytes == 50 * GIB
    ));
}
