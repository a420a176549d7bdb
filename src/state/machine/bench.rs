//! The held-task index against the scan it replaced, for `testfleet bench tasks`.

use super::*;

/// For `bench tasks`: with `tasks` tasks in the state, all finished but 4 per worker on
/// 1,000 workers, the median time to list one worker's held tasks through the index, and
/// by the full scan it replaced (what a worker's hello, a failed worker and the leader's
/// in-flight scans used to cost).
pub fn bench_held_by(tasks: usize) -> (std::time::Duration, std::time::Duration) {
    const SAMPLES: usize = 101;
    let m = bench_state(tasks);
    let median = |f: &dyn Fn(&str) -> usize| {
        let mut times: Vec<std::time::Duration> = (0..SAMPLES)
            .map(|s| {
                let worker = format!("w{:04}", s * 7 % BENCH_WORKERS);
                let start = std::time::Instant::now();
                std::hint::black_box(f(&worker));
                start.elapsed()
            })
            .collect();
        times.sort();
        times[SAMPLES / 2]
    };
    let indexed = median(&|w| m.held_by(w).count());
    let scanned = median(&|w| {
        m.tasks()
            .values()
            .filter(|t| t.holder().map(String::as_str) == Some(w))
            .count()
    });
    (indexed, scanned)
}

const BENCH_WORKERS: usize = 1_000;

/// The state of [`bench_held_by`]: `tasks` tasks, 4 held by each of 1,000 workers, the rest
/// final.
pub(super) fn bench_state(tasks: usize) -> Machine {
    const WORKERS: usize = BENCH_WORKERS;
    let at = Timestamp(1);
    let mut m = Machine::new();
    for w in 0..WORKERS {
        m.apply(Command::RegisterWorker {
            worker: format!("w{w:04}"),
            host: "bench".into(),
            address: "127.0.0.1:1".into(),
            capabilities_json: "{}".into(),
            labels: BTreeMap::new(),
            at,
        });
    }
    let specs = (0..tasks)
        .map(|i| TaskSpec {
            timeout_ms: 60_000,
            max_retries: 0,
            timeout_retries: 0,
            ..TaskSpec::new(format!("t{i:07}"), String::new(), vec!["true".into()])
        })
        .collect();
    m.apply(Command::SubmitJob {
        job: "bench".into(),
        name: "bench".into(),
        tasks: specs,
        at,
    });
    let held = (WORKERS * 4).min(tasks);
    let assignments = (0..tasks)
        .map(|i| Assignment {
            task: format!("t{i:07}"),
            worker: format!("w{:04}", i % WORKERS),
            attempt: 1,
        })
        .collect();
    m.apply(Command::AssignTasks {
        term: 1,
        at,
        assignments,
    });
    for i in held..tasks {
        m.apply(Command::AbandonTask {
            task: format!("t{i:07}"),
            reason: "bench".into(),
            at,
        });
    }
    m.take_changes();
    m
}
