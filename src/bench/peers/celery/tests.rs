use clap::Parser;

use super::*;
use crate::bench::peers::timeline::Sample;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: CeleryArgs,
}

fn parse(args: &[&str]) -> CeleryArgs {
    Cli::try_parse_from(std::iter::once("celery").chain(args.iter().copied()))
        .unwrap()
        .args
}

const REPORT: &str = r#"{"celery": "5.7.0", "redis_py": "8.2.0", "python": "3.11.7",
    "workers": 4, "concurrency": 4, "worker_pids": [10, 11],
    "batch": {"tasks": 3, "first_submit_us": 1000000, "last_submit_us": 1000400,
              "last_finish_us": 1003000,
              "dispatch_us": [900, 1100, 5000]},
    "half": {"rate": 500.0, "tasks": 2, "first_submit_us": 2000000,
             "last_finish_us": 2004000, "dispatch_us": [700, -3]}}"#;

#[test]
fn the_scripts_report_is_read_from_its_last_json_line() {
    let text = format!("a warning from a library\n{}\n", REPORT.replace('\n', " "));
    let report = parse_script_report(&text).unwrap();
    assert_eq!(report.versions.celery, "5.7.0");
    assert_eq!(report.worker_pids, vec![10, 11]);
    let batch = report.batch.window();
    assert_eq!(
        (batch.from_us, batch.to_us, batch.tasks),
        (1_000_000, 1_003_000, 3)
    );
    assert_eq!(batch.seconds(), 0.003);
    let dispatch = report.batch.dispatch();
    assert_eq!((dispatch.p50_ms, dispatch.max_ms), (1.1, 5.0));
    // A start stamped before its submission (two clocks' rounding) counts as 0, not negative.
    assert_eq!(report.half.dispatch().p50_ms, 0.0);
    assert_eq!(report.half.rate, Some(500.0));
    assert_eq!(report.batch.last_submit_us, Some(1_000_400));
    assert_eq!(report.half.last_submit_us, None);
}

#[test]
fn a_batch_run_with_its_workers_held_is_timed_from_their_release() {
    let held = REPORT.replace('\n', " ").replace(
        "\"last_submit_us\": 1000400,",
        "\"last_submit_us\": 1000400, \"released_us\": 1000500,",
    );
    let report = parse_script_report(&held).unwrap();
    let batch = report.batch.window();
    assert_eq!((batch.from_us, batch.to_us), (1_000_500, 1_003_000));
    // A release after the last task's end is a report that does not add up.
    let late = held.replace("\"released_us\": 1000500", "\"released_us\": 1003000");
    assert!(
        parse_script_report(&late)
            .unwrap_err()
            .contains("ends before it starts")
    );
}

#[test]
fn a_report_that_does_not_add_up_is_refused() {
    let one_line = REPORT.replace('\n', " ");
    assert!(
        parse_script_report("")
            .unwrap_err()
            .contains("no JSON report")
    );
    assert!(
        parse_script_report("{not json")
            .unwrap_err()
            .contains("report")
    );
    let short = one_line.replace("[900, 1100, 5000]", "[900]");
    assert!(
        parse_script_report(&short)
            .unwrap_err()
            .contains("1 dispatch times for 3")
    );
    let reversed = one_line.replace("\"last_finish_us\": 1003000", "\"last_finish_us\": 999");
    assert!(
        parse_script_report(&reversed)
            .unwrap_err()
            .contains("ends before")
    );
}

#[test]
fn cpu_per_task_is_each_groups_cpu_over_the_window_divided_by_its_tasks() {
    let timeline = Timeline {
        samples: vec![
            Sample {
                at_us: 0,
                ticks: vec![0, 0],
            },
            Sample {
                at_us: 2_000_000,
                ticks: vec![100, 300],
            },
        ],
        hz: 100,
    };
    // 0.5 → 1.5 s: 50 ticks (0.5 s) of control plane, 150 ticks (1.5 s) of workers.
    let window = Window {
        from_us: 500_000,
        to_us: 1_500_000,
        tasks: 1_000,
    };
    let cpu = TaskCpu::of(&timeline, &window);
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-6;
    assert!(close(cpu.control_us_per_task, 500.0), "{cpu:?}");
    assert!(close(cpu.workers_us_per_task, 1_500.0), "{cpu:?}");
    assert!(close(cpu.us_per_task, 2_000.0), "{cpu:?}");
    assert_eq!(cpu.client_us_per_task, None, "two groups: no client");
    // A third group, the client, is reported apart and not in the servers' total.
    let with_client = Timeline {
        samples: (timeline.samples.iter())
            .map(|s| Sample {
                at_us: s.at_us,
                ticks: [s.ticks.clone(), vec![s.ticks[0] * 2]].concat(),
            })
            .collect(),
        hz: 100,
    };
    let cpu = TaskCpu::of(&with_client, &window);
    assert!(close(cpu.client_us_per_task, 1_000.0), "{cpu:?}");
    assert!(close(cpu.us_per_task, 2_000.0), "{cpu:?}");
    let outside = Window {
        to_us: 3_000_000,
        ..window
    };
    assert!(TaskCpu::of(&timeline, &outside).us_per_task.is_none());
    let none = Window { tasks: 0, ..window };
    assert!(TaskCpu::of(&timeline, &none).us_per_task.is_none());
}

#[test]
fn bad_arguments_are_usage_errors() {
    assert!(parse(&[]).check().is_ok());
    for bad in [
        &["--workers", "0"][..],
        &["--slots", "0"],
        &["--slots", "65"],
        &["--tasks", "0"],
        &["--rounds", "0"],
        &["--half-load-seconds", "0"],
    ] {
        let e = parse(bad).check().unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{bad:?}: {e}");
    }
}

#[tokio::test]
async fn a_missing_redis_or_celery_is_a_clear_error_with_the_install_command() {
    let e = run(&parse(&["--redis-server", "/nonexistent/redis-server"]))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("apt-get install redis-server"),
        "{e}"
    );

    // A Python without Celery: the script's import fails, as it would.
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python");
    std::fs::write(
        &python,
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'celery'\" >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let args = parse(&[
        "--redis-server",
        "/bin/true",
        "--python",
        python.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let e = run(&args).await.unwrap_err();
    assert!(matches!(e, CliError::Usage(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("No module named 'celery'"), "{text}");
    assert!(text.contains("pip install 'celery[redis]"), "{text}");
}

#[test]
fn the_summary_compares_the_rounds_pairwise() {
    let side = |per_sec: f64, p99: f64, cpu: f64| TaskSide {
        tasks: 2000,
        tasks_per_sec: per_sec,
        batch: Window {
            from_us: 0,
            to_us: 1,
            tasks: 2000,
        },
        batch_submit_seconds: None,
        batch_dispatch: Latency::of(vec![]),
        half_load_rate: per_sec / 2.0,
        half: Window {
            from_us: 0,
            to_us: 1,
            tasks: 10,
        },
        half_load_dispatch: Latency::of(vec![Duration::from_secs_f64(p99 / 1000.0)]),
        cpu: TaskCpu {
            us_per_task: Some(cpu),
            control_us_per_task: Some(cpu / 2.0),
            workers_us_per_task: Some(cpu / 2.0),
            client_us_per_task: None,
        },
        half_cpu: TaskCpu::default(),
    };
    let rounds = vec![
        Round {
            round: 0,
            celery_first: true,
            celery: side(500.0, 4.0, 1000.0),
            testfleet: side(900.0, 20.0, 1500.0),
        },
        Round {
            round: 1,
            celery_first: false,
            celery: side(400.0, 5.0, 1000.0),
            testfleet: side(800.0, 25.0, 2500.0),
        },
    ];
    let s = summarise(&rounds);
    assert_eq!(s.tasks_per_sec.testfleet, Some(850.0));
    assert_eq!(s.tasks_per_sec.ratio, Some((1.8 + 2.0) / 2.0));
    assert_eq!(s.half_load_p99_ms.ratio, Some(5.0));
    assert_eq!(s.cpu_us_per_task.ratio, Some(2.0));
    assert_eq!(s.half_load_cpu_us_per_task.ratio, None);
    let report = CeleryReport {
        versions: Versions::default(),
        testfleet_security: Security::Open,
        workers: 4,
        slots: 4,
        tasks: 2000,
        half_load_seconds: 5.0,
        summary: s,
        rounds,
    };
    let table = render(&report, Output::Table);
    assert!(table.contains("dispatch p99 ms at half load"), "{table}");
    assert!(table.contains("5.00x"), "{table}");
}
