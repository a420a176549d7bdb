//! Placement by capability: each requirement kind a plan can write, rare workers as the last
//! resort, parking with the exact unmet requirement, and a capability withdrawn and granted
//! again while the worker keeps its work.

use super::*;

/// The capabilities of a probing worker with a verified software adapter and Chromium,
/// flattened as the leader flattens them (`leadership::worker_profile`).
const GPU_BOX: &str = "os=linux, cpus=2, memory_gb=23, probed=true, webgpu=true, \
    gpu_type=cpu, gpu_buffer_mb=128, browser.chromium=true, browser_webgpu=true";
/// A probing worker without a GPU or a browser.
const PLAIN_BOX: &str = "os=linux, cpus=2, memory_gb=8, probed=true, \
    gpu_probe_error=no adapter found on backends vulkan, browser_probe_error=no browser found";

/// Every requirement kind of a plan (`requires = { webgpu = true, … }` becomes these
/// expressions) against a fleet of one GPU box, one plain box and a discrete-GPU box with
/// WebNN and a label: which workers are capable, and the reason when none is.
#[test]
fn each_requirement_kind_finds_its_workers_or_parks_with_the_unmet_one() {
    let fleet = [
        offers("gpu", 1, "", GPU_BOX),
        offers("plain", 1, "", PLAIN_BOX),
        offers(
            "big",
            1,
            "pool=ml",
            "memory_gb=64, webgpu=true, gpu_type=discrete, gpu_buffer_mb=2048, \
             browser.chrome=true, webnn=true",
        ),
    ];
    // (labels, capabilities, the worker that runs it, or the parking reason)
    let cases: [(&str, &str, Result<&str, &str>); 12] = [
        ("", "webgpu", Ok("gpu")),
        ("", "webnn", Ok("big")),
        ("", "gpu_type=discrete", Ok("big")),
        ("", "gpu_type=cpu", Ok("gpu")),
        ("", "browser.chromium", Ok("gpu")),
        ("", "browser.chrome", Ok("big")),
        ("", "memory_gb>=32", Ok("big")),
        ("", "gpu_buffer_mb>=1024", Ok("big")),
        ("pool=ml", "webgpu", Ok("big")),
        (
            "",
            "browser.firefox",
            Err("no live worker has capability browser.firefox"),
        ),
        (
            "",
            "gpu_type=integrated",
            Err("no live worker has capability gpu_type=integrated \
                 (live workers have gpu_type=cpu, discrete)"),
        ),
        (
            "",
            "gpu_buffer_mb>=4096",
            Err("no live worker has capability gpu_buffer_mb>=4096 \
                 (the most a live worker has is 2048, on big)"),
        ),
    ];
    for (labels, capabilities, want) in cases {
        let mut s = Scheduler::new();
        for w in &fleet {
            s.worker_up(w.clone());
        }
        s.enqueue(needs("t", 1, labels, capabilities));
        match want {
            Ok(worker) => {
                assert!(s.parked().is_empty(), "{capabilities}");
                assert_eq!(
                    show(&s.pick(5)),
                    [format!("t@{worker}#1")],
                    "{labels} {capabilities}"
                );
            }
            Err(reason) => {
                assert_eq!(s.waiting_reason("t").as_deref(), Some(reason));
                assert!(s.pick(5).is_empty(), "{capabilities}");
            }
        }
    }
}

#[test]
fn a_task_any_worker_can_run_leaves_the_only_gpu_worker_free() {
    let mut s = Scheduler::new();
    // The GPU worker has more free slots and sorts first by id: before rarity it was
    // served first.
    s.worker_up(offers("a-gpu", 2, "", GPU_BOX));
    s.worker_up(offers("b-plain", 1, "", PLAIN_BOX));
    s.enqueue(task("plain-1", "j", 1));
    assert_eq!(show(&s.pick(5)), ["plain-1@b-plain#1"]);
    assert!(s.committed("plain-1"));

    // The GPU test that comes next finds the GPU worker free.
    s.enqueue(needs("gpu-1", 2, "", "webgpu"));
    assert_eq!(show(&s.pick(5)), ["gpu-1@a-gpu#1"]);
    assert!(s.committed("gpu-1"));

    // With every plainer worker full, the GPU worker is the last resort for plain work:
    // nothing waits while a slot that can run it is free.
    s.enqueue(task("plain-2", "j", 3));
    assert_eq!(show(&s.pick(5)), ["plain-2@a-gpu#1"]);
}

#[test]
fn rarity_ignores_basics_and_probe_bookkeeping_and_counts_labels_and_declarations() {
    // Workers that differ only in basics and probe errors are equally plain: load spreads
    // by free slots as it always did.
    let mut s = Scheduler::new();
    s.worker_up(offers("a", 1, "", "os=linux, memory_gb=8, cpus=2"));
    s.worker_up(offers(
        "b",
        2,
        "",
        "os=linux, memory_gb=64, cpus=32, gpu_probe_error=none, probed=true",
    ));
    for i in 1..=3 {
        s.enqueue(task(&format!("t{i}"), "j", i));
    }
    assert_eq!(show(&s.pick(5)), ["t1@b#1", "t2@a#1", "t3@b#1"]);

    // A label only some workers carry, or a capability declared by hand, makes a worker
    // rarer.
    for rare in [
        offers("a", 1, "gpu=a100", ""),
        offers("a", 1, "", "fpga=true, declared=fpga"),
    ] {
        let mut s = Scheduler::new();
        s.worker_up(rare);
        s.worker_up(worker("b", 1));
        s.enqueue(task("t1", "j", 1));
        assert_eq!(show(&s.pick(5)), ["t1@b#1"]);
    }

    // Offered by every live worker, a capability tells no one apart.
    let mut s = Scheduler::new();
    s.worker_up(offers("a", 1, "", "webgpu=true"));
    s.worker_up(offers("b", 2, "", "webgpu=true"));
    s.enqueue(task("t1", "j", 1));
    assert_eq!(show(&s.pick(5)), ["t1@b#1"]);
    // When the plain worker leaves, the one left is nobody's last resort any more.
    let mut s = Scheduler::new();
    s.worker_up(offers("a", 2, "", "webgpu=true"));
    s.worker_up(worker("b", 1));
    s.worker_down("b");
    s.enqueue(task("t1", "j", 1));
    assert_eq!(show(&s.pick(5)), ["t1@a#1"]);
}

#[test]
fn a_withdrawn_capability_parks_its_tasks_and_the_worker_keeps_the_rest() {
    let mut s = Scheduler::new();
    s.worker_up(offers("gpu", 2, "", GPU_BOX));
    s.enqueue(needs("gpu-1", 1, "", "webgpu"));
    assert_eq!(show(&s.pick(5)), ["gpu-1@gpu#1"]);
    assert!(s.committed("gpu-1"));

    // The shader check fails on the next probe: the worker registers again without webgpu.
    let withdrawn = GPU_BOX.replace("webgpu=true", "webgpu=false");
    s.worker_up(offers("gpu", 2, "", &withdrawn));
    s.enqueue(needs("gpu-2", 2, "", "webgpu"));
    s.enqueue(task("plain", "j", 3));
    assert_eq!(
        s.waiting_reason("gpu-2").as_deref(),
        Some("no live worker has capability webgpu")
    );
    // Its running attempt still holds a slot; the free one takes plain work.
    assert_eq!(show(&s.pick(5)), ["plain@gpu#1"]);
    assert!(s.committed("plain"));
    assert_eq!(s.stats().free_slots, 0);
    s.attempt_ended("gpu");
    assert!(s.pick(5).is_empty(), "gpu-2 stays parked");
    assert_eq!(s.stats().parked, 1);

    // The adapter passes again: the capability is granted and the parked task runs.
    s.worker_up(offers("gpu", 2, "", GPU_BOX));
    assert!(s.parked().is_empty());
    assert_eq!(show(&s.pick(5)), ["gpu-2@gpu#1"]);
}

#[test]
fn a_parked_browser_task_runs_when_a_worker_with_that_browser_joins() {
    let mut s = Scheduler::new();
    s.worker_up(offers("plain", 1, "", PLAIN_BOX));
    s.enqueue(needs("ui", 1, "", "browser.chromium"));
    assert_eq!(
        s.parked(),
        [Parked {
            task: "ui".to_string(),
            reason: "no live worker has capability browser.chromium".to_string(),
        }]
    );
    s.worker_up(offers("gpu", 1, "", GPU_BOX));
    assert!(s.parked().is_empty());
    assert_eq!(show(&s.pick(5)), ["ui@gpu#1"]);
}

/// The log can apply a leader's assignment and then, before the proposal's reply reaches the
/// dispatcher, fail the worker and queue the task again. The leader commits its reservation
/// when the assignment's event arrives (`Leadership::apply_event`), so the events after it
/// find a committed attempt and the requeue is kept; the late reply then finds nothing to
/// commit. (Committing only on the reply refused the requeue as in flight and lost the task:
/// a comprehensive circuit-breaker benchmark run waited on it forever.)
#[test]
fn a_requeue_applied_before_the_assignments_reply_is_kept() {
    let mut s = Scheduler::new();
    s.worker_up(worker("sick", 1));
    s.worker_up(worker("healthy", 1));
    s.set_busy("healthy", 1);
    s.enqueue(task("t", "j", 1));
    assert_eq!(show(&s.pick(5)), ["t@sick#1"]);
    // While reserved, a requeue is refused: the assignment is in flight.
    assert!(!s.enqueue(QueuedTask {
        attempt: 1,
        requeued: true,
        ..task("t", "j", 1)
    }));
    // The events, in log order: assigned (committed here), released, queued again.
    assert!(s.committed("t"));
    s.worker_down("sick");
    s.attempt_ended("sick");
    assert!(s.enqueue(QueuedTask {
        attempt: 1,
        requeued: true,
        avoid_worker: Some("sick".into()),
        ..task("t", "j", 1)
    }));
    // The proposal's reply, late: nothing to commit any more.
    assert!(!s.committed("t"));
    s.attempt_ended("healthy");
    assert_eq!(show(&s.pick(5)), ["t@healthy#2"]);
}
