//! Queue order, requirements, slots, the overlay, avoidance, parking, rebuild from a real
//! [`Machine`], and a seeded random walk checking the invariants against a simple model.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::state::command::{Command, FaultCategory, TaskSpec, Timestamp, WorkerStatus};
use crate::state::machine::Reply;

mod placement;

fn task(id: &str, job: &str, seq: i64) -> QueuedTask {
    QueuedTask {
        id: id.to_string(),
        job: job.to_string(),
        priority: 0,
        requeued: false,
        seq,
        attempt: 0,
        labels: BTreeMap::new(),
        capabilities: Vec::new(),
        avoid_worker: None,
    }
}

/// A task of job `j` needing `labels` (`"os=linux, rack=r1"`) and `capabilities`
/// (`"webgpu, memory_gb>=8"`).
fn needs(id: &str, seq: i64, labels: &str, capabilities: &str) -> QueuedTask {
    QueuedTask {
        labels: pairs(labels),
        capabilities: list(capabilities),
        ..task(id, "j", seq)
    }
}

fn worker(id: &str, slots: u32) -> WorkerProfile {
    offers(id, slots, "", "")
}

/// A worker with `labels` and `capabilities`, both written `"k=v, k=v"`.
fn offers(id: &str, slots: u32, labels: &str, capabilities: &str) -> WorkerProfile {
    WorkerProfile {
        id: id.to_string(),
        labels: pairs(labels),
        capabilities: pairs(capabilities),
        slots,
    }
}

fn list(text: &str) -> Vec<String> {
    (text.split(',').map(str::trim))
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn pairs(text: &str) -> BTreeMap<String, String> {
    (list(text).iter())
        .map(|p| p.split_once('=').expect("k=v"))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Assignments as `task@worker#attempt`, for compact assertions.
fn show(assignments: &[Assignment]) -> Vec<String> {
    (assignments.iter())
        .map(|a| format!("{}@{}#{}", a.task, a.worker, a.attempt))
        .collect()
}

/// The order in which one single-slot worker runs everything queued.
fn run_order(mut scheduler: Scheduler) -> Vec<String> {
    scheduler.worker_up(worker("w", 1));
    let mut order = Vec::new();
    while let [a] = scheduler.pick(1).as_slice() {
        order.push(a.task.clone());
        assert!(scheduler.committed(&a.task));
        scheduler.attempt_ended(&a.worker);
    }
    order
}

#[test]
fn queue_order_rules() {
    // (rule, tasks in enqueue order as `id job priority seq [requeued]`, run order)
    let cases = [
        (
            "higher priority first",
            "a j 0 1, b j 5 2, c j 1 3",
            "b c a",
        ),
        (
            "requeued before never-run",
            "a j 0 1, b j 0 2 requeued",
            "b a",
        ),
        (
            "priority beats requeued",
            "a j 1 1, b j 0 2 requeued",
            "a b",
        ),
        (
            "round-robin across two jobs",
            "a1 A 0 1, a2 A 0 2, a3 A 0 3, b1 B 0 4, b2 B 0 5",
            "a1 b1 a2 b2 a3",
        ),
        (
            "submission order breaks ties",
            "late A 0 9, early B 0 3",
            "early late",
        ),
        (
            "extreme priorities",
            "lo j -2147483648 1, hi j 2147483647 2",
            "hi lo",
        ),
    ];
    for (rule, tasks, expected) in cases {
        let mut scheduler = Scheduler::new();
        for t in list(tasks) {
            let f: Vec<&str> = t.split(' ').collect();
            scheduler.enqueue(QueuedTask {
                priority: f[2].parse().unwrap(),
                requeued: f.get(4) == Some(&"requeued"),
                ..task(f[0], f[1], f[3].parse().unwrap())
            });
        }
        let expected: Vec<&str> = expected.split(' ').collect();
        assert_eq!(run_order(scheduler), expected, "{rule}");
    }
}

#[test]
fn a_late_job_joins_the_rotation_instead_of_jumping_ahead() {
    let mut s = Scheduler::new();
    for i in 1..=6 {
        s.enqueue(task(&format!("a{i}"), "A", i));
    }
    s.worker_up(worker("w", 3));
    assert_eq!(show(&s.pick(10)), ["a1@w#1", "a2@w#1", "a3@w#1"]);
    for t in ["a1", "a2", "a3"] {
        s.remove(t);
    }
    s.worker_down("w");
    s.enqueue(task("b1", "B", 7));
    s.enqueue(task("b2", "B", 8));
    assert_eq!(run_order(s), ["b1", "a4", "b2", "a5", "a6"]);
}

#[test]
fn labels_and_capability_expressions() {
    // (task labels, task capabilities, worker labels, worker capabilities, runs there)
    let cases = [
        ("", "", "", "", true),
        ("os=linux", "", "os=linux", "", true),
        ("os=linux", "", "os=mac", "", false),
        ("os=linux", "", "", "", false),
        ("", "webgpu", "", "webgpu=true", true),
        ("", "webgpu", "", "webgpu=yes", true),
        ("", "webgpu", "", "webgpu=false", false),
        ("", "webgpu", "", "", false),
        ("", "gpu=discrete", "", "gpu=discrete", true),
        ("", "gpu=discrete", "", "gpu=integrated", false),
        ("", "browser = chromium", "", "browser=chromium", true),
        ("", "memory_gb>=8", "", "memory_gb=16", true),
        ("", "memory_gb>=8", "", "memory_gb=8", true),
        ("", "memory_gb>=8", "", "memory_gb=4", false),
        ("", "memory_gb>=8", "", "memory_gb=lots", false),
        ("", "memory_gb>=8", "", "", false),
        ("", "memory_gb>=much", "", "memory_gb=64", false),
        ("", "memory_gb<=8", "", "memory_gb=4", false),
        (
            "os=linux",
            "webgpu, gpu=discrete, memory_gb>=16",
            "os=linux, rack=r1",
            "webgpu=true, gpu=discrete, memory_gb=32",
            true,
        ),
        (
            "os=linux",
            "webgpu, gpu=discrete, memory_gb>=16",
            "os=linux",
            "webgpu=true, gpu=discrete, memory_gb=8",
            false,
        ),
    ];
    for (labels, capabilities, worker_labels, worker_capabilities, runs) in cases {
        let mut s = Scheduler::new();
        s.enqueue(needs("t", 1, labels, capabilities));
        s.worker_up(offers("w", 1, worker_labels, worker_capabilities));
        let case =
            format!("[{labels}] [{capabilities}] on [{worker_labels}] [{worker_capabilities}]");
        assert_eq!(s.pick(1).len() == 1, runs, "{case}");
        assert_eq!(s.parked().is_empty(), runs, "{case}");
    }
}

#[test]
fn slots_are_respected_and_load_spreads() {
    let mut s = Scheduler::new();
    for i in 1..=10 {
        s.enqueue(task(&format!("t{i:02}"), "j", i));
    }
    s.worker_up(worker("a", 2));
    s.worker_up(worker("b", 2));
    s.worker_up(worker("c", 1));
    assert_eq!(
        show(&s.pick(100)),
        ["t01@a#1", "t02@b#1", "t03@a#1", "t04@b#1", "t05@c#1"]
    );
    assert!(s.pick(100).is_empty(), "every slot is taken");
    assert_eq!(s.stats().free_slots, 0);
    for t in ["t01", "t02", "t03", "t04", "t05"] {
        s.committed(t);
    }
    // Committed attempts keep their slots.
    assert!(s.pick(100).is_empty());
    s.attempt_ended("b");
    assert_eq!(show(&s.pick(100)), ["t06@b#1"]);
    s.set_busy("a", 0);
    assert_eq!(show(&s.pick(1)), ["t07@a#1"], "max bounds one call");
    assert_eq!(show(&s.pick(100)), ["t08@a#1"]);
}

#[test]
fn the_overlay_keeps_picked_tasks_until_committed_or_rejected() {
    let mut s = Scheduler::new();
    s.enqueue(QueuedTask {
        attempt: 2,
        ..task("t1", "j", 1)
    });
    s.enqueue(task("t2", "j", 2));
    s.enqueue(task("t3", "j", 3));
    s.worker_up(worker("w", 1));
    // The assignment is for the next attempt.
    assert_eq!(show(&s.pick(5)), ["t1@w#3"]);
    assert_eq!(s.reservation("t1"), Some(&"w".to_string()));
    let stats = s.stats();
    assert_eq!((stats.queued, stats.reserved, stats.free_slots), (2, 1, 0));

    // More slots appear: the reserved task is not offered again.
    s.worker_up(worker("w", 2));
    assert_eq!(show(&s.pick(5)), ["t2@w#1"]);
    // A reserved task cannot be queued again.
    assert!(!s.enqueue(task("t2", "j", 2)));

    // Rejected: back in the queue, at its old place, and the slot is free.
    assert!(s.rejected("t1"));
    assert!(!s.rejected("t1"), "only once");
    assert_eq!(s.stats().free_slots, 1);
    assert_eq!(show(&s.pick(5)), ["t1@w#3"]);

    // Committed: out of the overlay, the slot stays used.
    assert!(s.committed("t1"));
    assert!(!s.committed("t1"));
    assert!(!s.committed("t3"), "a queued task was never reserved");
    let stats = s.stats();
    assert_eq!((stats.queued, stats.reserved, stats.free_slots), (1, 1, 0));

    // Removing a reserved task (cancelled meanwhile) frees its slot.
    assert!(s.remove("t2"));
    assert!(!s.remove("t2"));
    assert_eq!(show(&s.pick(5)), ["t3@w#1"]);
}

#[test]
fn a_down_worker_gets_nothing_and_up_again_resumes() {
    let mut s = Scheduler::new();
    for i in 1..=4 {
        s.enqueue(task(&format!("t{i}"), "j", i));
    }
    s.worker_up(worker("a", 2));
    s.worker_up(worker("b", 2));
    s.worker_down("a");
    assert_eq!(show(&s.pick(10)), ["t1@b#1", "t2@b#1"]);
    s.worker_down("b");
    assert!(s.pick(10).is_empty());
    assert_eq!(s.stats().live_workers, 0);
    // Reservations outlive the worker's session.
    assert_eq!(s.stats().reserved, 2);
    s.worker_up(worker("a", 1));
    assert_eq!(show(&s.pick(10)), ["t3@a#1"]);
}

#[test]
fn avoid_worker_is_a_preference_with_a_fallback() {
    let avoiding = |id: &str, seq| QueuedTask {
        avoid_worker: Some("a".to_string()),
        requeued: true,
        ..task(id, "j", seq)
    };
    // Another worker is free: it takes the task although `a` comes first.
    let mut s = Scheduler::new();
    s.enqueue(avoiding("r", 1));
    s.worker_up(worker("a", 3));
    s.worker_up(worker("b", 1));
    assert_eq!(show(&s.pick(1)), ["r@b#1"]);

    // The other capable worker is busy: `a` takes the next task, `r` waits for `b`.
    let mut s = Scheduler::new();
    s.enqueue(avoiding("r", 1));
    s.enqueue(task("n", "j", 2));
    s.worker_up(worker("a", 2));
    s.worker_up(worker("b", 0));
    assert_eq!(show(&s.pick(5)), ["n@a#1"]);
    assert_eq!(
        s.waiting_reason("r").as_deref(),
        Some("waiting for a free slot on 2 capable live workers")
    );
    s.worker_up(worker("b", 1));
    assert_eq!(show(&s.pick(5)), ["r@b#1"]);

    // No other worker can run it: `a` falls back to it.
    let mut s = Scheduler::new();
    s.enqueue(QueuedTask {
        labels: pairs("os=linux"),
        ..avoiding("r", 1)
    });
    s.worker_up(offers("a", 1, "os=linux", ""));
    s.worker_up(worker("b", 1));
    assert_eq!(show(&s.pick(5)), ["r@a#1"]);
}

#[test]
fn scarce_capabilities_go_to_the_workers_that_have_them() {
    let mut s = Scheduler::new();
    s.enqueue(task("plain", "j", 1));
    s.enqueue(needs("gpu", 2, "", "webgpu"));
    // `a` could run both; with `b` full it is served alone and takes the one only it can
    // run, though `plain` is older.
    s.worker_up(offers("a", 1, "", "webgpu=true"));
    s.worker_up(worker("b", 1));
    s.set_busy("b", 1);
    assert_eq!(show(&s.pick(5)), ["gpu@a#1"]);
    s.attempt_ended("b");
    assert_eq!(show(&s.pick(5)), ["plain@b#1"]);

    // Priority still comes first.
    let mut s = Scheduler::new();
    s.enqueue(QueuedTask {
        priority: 1,
        ..task("plain", "j", 1)
    });
    s.enqueue(needs("gpu", 2, "", "webgpu"));
    s.worker_up(offers("a", 1, "", "webgpu=true"));
    assert_eq!(show(&s.pick(5)), ["plain@a#1"]);
}

#[test]
fn parked_tasks_say_why_and_run_when_a_worker_appears() {
    let linux = offers("linux", 1, "os=linux", "memory_gb=16, gpu=integrated");
    let gpu = offers("gpu", 1, "os=mac", "webgpu=true");
    // (live workers, task labels, task capabilities, reason)
    let cases = [
        (
            vec![linux.clone()],
            "gpu=a100",
            "",
            "no live worker has label gpu=a100",
        ),
        (
            vec![linux.clone()],
            "os=linux",
            "webgpu",
            "no live worker has capability webgpu",
        ),
        (
            vec![linux.clone()],
            "",
            "gpu=discrete",
            "no live worker has capability gpu=discrete (live workers have gpu=integrated)",
        ),
        (
            vec![linux.clone()],
            "",
            "memory_gb>=64",
            "no live worker has capability memory_gb>=64 (the most a live worker has is 16, on linux)",
        ),
        (
            vec![linux.clone(), gpu.clone()],
            "os=linux",
            "webgpu",
            "no single live worker has all of: label os=linux, capability webgpu",
        ),
        (
            vec![linux.clone()],
            "",
            "memory_gb=>8",
            "capability requirement `memory_gb=>8` is not valid \
             (expected name, name=value or name>=number)",
        ),
    ];
    for (workers, labels, capabilities, reason) in cases {
        let mut s = Scheduler::new();
        for w in workers {
            s.worker_up(w);
        }
        s.enqueue(task("runnable", "j", 1));
        s.enqueue(needs("t", 2, labels, capabilities));
        let expected = vec![Parked {
            task: "t".to_string(),
            reason: reason.to_string(),
        }];
        assert_eq!(s.parked(), expected, "{reason}");
        assert_eq!(s.waiting_reason("t").as_deref(), Some(reason));
        assert_eq!(s.stats().parked, 1);
        assert!(s.pick(5).iter().all(|a| a.task != "t"), "{reason}");
    }

    // Without any live worker everything is parked.
    let mut s = Scheduler::new();
    s.enqueue(task("t", "j", 1));
    assert_eq!(s.waiting_reason("t").as_deref(), Some("no live workers"));

    // A suitable worker appears: the task is no longer parked and runs.
    let mut s = Scheduler::new();
    s.worker_up(linux);
    s.enqueue(needs("t", 1, "", "webgpu"));
    assert_eq!(s.parked().len(), 1);
    s.worker_up(gpu);
    assert!(s.parked().is_empty());
    assert_eq!(show(&s.pick(5)), ["t@gpu#1"]);
    assert_eq!(
        s.waiting_reason("t").as_deref(),
        Some("assignment to worker gpu awaiting commit")
    );
    assert_eq!(s.waiting_reason("unknown"), None);
}

#[test]
fn state_is_released_when_tasks_and_workers_go() {
    let mut s = Scheduler::new();
    s.worker_up(worker("w", 2));
    s.enqueue(needs("p", 1, "", "x"));
    s.enqueue(task("t1", "j", 2));
    s.enqueue(task("t2", "k", 3));
    let picked = s.pick(5);
    assert_eq!(picked.len(), 2);
    s.committed("t1");
    s.rejected("t2");
    s.remove("t2");
    s.remove("p");
    s.worker_down("w");
    assert!(s.classes.is_empty() && s.class_ids.is_empty() && s.jobs.is_empty());
    assert_eq!(s.workers.len(), 1, "w still runs t1");
    s.attempt_ended("w");
    assert!(s.workers.is_empty() && s.by_free.is_empty() && s.tasks.is_empty());
    assert!(s.reservations.is_empty());
}

fn spec(id: &str, labels: &str) -> TaskSpec {
    TaskSpec {
        timeout_ms: 1_000,
        labels: pairs(labels),
        ..TaskSpec::new(id.to_string(), id.to_string(), list("true"))
    }
}

fn register(worker: &str) -> Command {
    Command::RegisterWorker {
        worker: worker.to_string(),
        host: worker.to_string(),
        address: "127.0.0.1:1".to_string(),
        capabilities_json: "{}".to_string(),
        labels: BTreeMap::new(),
        at: Timestamp(1),
    }
}

fn assign(assignments: &[(&str, &str, u32)]) -> Command {
    Command::AssignTasks {
        term: 2,
        at: Timestamp(10),
        assignments: (assignments.iter())
            .map(|(task, worker, attempt)| Assignment {
                task: task.to_string(),
                worker: worker.to_string(),
                attempt: *attempt,
            })
            .collect(),
    }
}

#[test]
fn rebuild_from_the_applied_state() {
    let mut m = Machine::new();
    let history = [
        register("w1"),
        register("w2"),
        register("w3"),
        Command::SetWorkerStatus {
            worker: "w3".to_string(),
            from: WorkerStatus::Healthy,
            to: WorkerStatus::Failed,
            reason: "lost".to_string(),
            at: Timestamp(2),
        },
        Command::SubmitJob {
            job: "j".to_string(),
            name: "suite".to_string(),
            tasks: ["t1", "t2", "t3", "t4", "t5"]
                .map(|t| spec(t, if t == "t4" { "gpu=a100" } else { "" }))
                .to_vec(),
            at: Timestamp(3),
        },
        assign(&[("t1", "w1", 1), ("t2", "w2", 1)]),
        // t2's attempt on w2 is lost: queued again, requeued, avoiding w2.
        Command::RequeueTask {
            task: "t2".to_string(),
            attempt: 1,
            reason: "worker lost".to_string(),
            category: FaultCategory::Connection,
            at: Timestamp(4),
        },
    ];
    for command in history {
        let reply = m.apply(command);
        assert!(!reply.is_rejected(), "{reply:?}");
    }

    let profiles = [worker("w1", 2), worker("w2", 2), worker("w3", 2)];
    let mut s = Scheduler::rebuild(&m, &profiles);
    let stats = s.stats();
    assert_eq!(stats.queued, 4, "t2, t3, t4, t5");
    assert_eq!(stats.live_workers, 2, "w3 failed");
    assert_eq!(stats.free_slots, 3, "t1 holds one slot of w1");
    assert_eq!(stats.parked, 1);
    assert_eq!(s.parked()[0].reason, "no live worker has label gpu=a100");

    // t2 is requeued, so it goes first, but not to w2.
    let picked = s.pick(10);
    assert_eq!(show(&picked), ["t3@w2#1", "t2@w1#2", "t5@w2#1"]);
    let items: Vec<_> = picked
        .iter()
        .map(|a| (&*a.task, &*a.worker, a.attempt))
        .collect();
    let assigned = Reply::Task {
        status: TaskStatus::Assigned,
    };
    assert_eq!(m.apply(assign(&items)), Reply::Many(vec![assigned; 3]));
    for a in &picked {
        assert!(s.committed(&a.task));
    }
    // A new leader rebuilding now sees the same picture as the one that carried on.
    assert_eq!(Scheduler::rebuild(&m, &profiles).stats(), s.stats());
}

/// xorshift64: a tiny seeded generator, so each failing case reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Requirement sets for the random walk, as (labels, capabilities).
const REQUIREMENTS: [(&str, &str); 5] = [
    ("", ""),
    ("os=linux", ""),
    ("", "webgpu"),
    ("", "gpu=discrete, memory_gb>=16"),
    ("gpu=a100", ""),
];

/// Worker profiles for the random walk, as (labels, capabilities).
const PROFILES: [(&str, &str); 4] = [
    ("os=linux", ""),
    ("os=mac", "webgpu=true, gpu=integrated, memory_gb=8"),
    ("os=linux", "webgpu=true, gpu=discrete, memory_gb=32"),
    ("", "webgpu=false, gpu=discrete, memory_gb=16"),
];

/// `RUNS[r][p]`: tasks of requirement set `r` run on profile `p` (worked out by hand).
const RUNS: [[bool; 4]; 5] = [
    [true, true, true, true],
    [true, false, true, false],
    [false, true, true, false],
    [false, false, true, true],
    [false, false, false, false],
];

/// A task in the model: (requirement set, priority, avoided worker, current attempt).
type Item = (usize, i32, Option<String>, u32);

/// What the scheduler should know, kept the simple way.
#[derive(Default)]
struct Model {
    queued: BTreeMap<String, Item>,
    /// Reserved tasks and the worker each is reserved on.
    reserved: BTreeMap<String, (String, Item)>,
    /// Committed attempts not ended: (task, worker, item).
    running: Vec<(String, String, Item)>,
    /// Live workers: (profile index, slots).
    live: BTreeMap<String, (usize, u32)>,
}

impl Model {
    fn free(&self, worker: &str) -> u32 {
        let running = self.running.iter().filter(|r| r.1 == worker).count();
        let reserved = self.reserved.values().filter(|r| r.0 == worker).count();
        let used = (running + reserved) as u32;
        self.live
            .get(worker)
            .map_or(0, |l| l.1.saturating_sub(used))
    }

    /// May `worker` take a task of requirement set `req` avoiding `avoid`?
    fn may_take(&self, worker: &str, (req, _, avoid, _): &Item) -> bool {
        let capable = |w: &str| self.live.get(w).is_some_and(|(p, _)| RUNS[*req][*p]);
        capable(worker)
            && (avoid.as_deref() != Some(worker)
                || !self.live.keys().any(|w| w != worker && capable(w)))
    }

    /// Checks one `pick(max)` against the rules, then records its reservations.
    fn check_pick(&mut self, max: usize, picked: &[Assignment], stats: Stats) {
        assert!(picked.len() <= max);
        for a in picked {
            // Only a queued task is assigned: never one reserved or running (so never twice).
            let item = self
                .queued
                .remove(&a.task)
                .expect("assigned task is queued");
            assert!(self.may_take(&a.worker, &item), "{a:?} may not run there");
            assert!(self.free(&a.worker) > 0, "{a:?}: no free slot");
            assert_eq!(a.attempt, item.3 + 1, "{a:?}");
            self.reserved
                .insert(a.task.clone(), (a.worker.clone(), item));
        }
        for a in picked {
            let chosen = self.reserved[&a.task].1.1;
            for (task, item) in &self.queued {
                let outranks = item.1 > chosen && self.may_take(&a.worker, item);
                assert!(!outranks, "{task} outranks {a:?}");
            }
        }
        if picked.len() < max {
            for worker in self.live.keys().filter(|w| self.free(w) > 0) {
                for (task, item) in &self.queued {
                    assert!(!self.may_take(worker, item), "{worker} is free for {task}");
                }
            }
        }
        self.check_stats(stats);
    }

    fn check_stats(&self, stats: Stats) {
        let free: u32 = self.live.keys().map(|w| self.free(w)).sum();
        assert_eq!(stats.queued, self.queued.len());
        assert_eq!(stats.reserved, self.reserved.len());
        assert_eq!(stats.free_slots, u64::from(free));
        assert_eq!(stats.live_workers, self.live.len());
    }
}

fn pick_from<K: Clone, V>(rng: &mut Rng, map: &BTreeMap<K, V>) -> Option<K> {
    map.keys().nth(rng.below(map.len())).cloned()
}

fn queued_task(id: &str, job: usize, seq: i64, requeued: bool, item: &Item) -> QueuedTask {
    let (labels, capabilities) = REQUIREMENTS[item.0];
    QueuedTask {
        priority: item.1,
        requeued,
        labels: pairs(labels),
        capabilities: list(capabilities),
        avoid_worker: item.2.clone(),
        attempt: item.3,
        ..task(id, &format!("j{job}"), seq)
    }
}

/// Runs `steps` random operations against a scheduler and the model, checking the rules
/// after each; returns the transcript of assignments.
fn random_walk(seed: u64, steps: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut s = Scheduler::new();
    let mut m = Model::default();
    let mut transcript = Vec::new();
    let workers = ["w0", "w1", "w2", "w3", "w4"];
    let mut seq = 0;
    for _ in 0..steps {
        match rng.below(10) {
            0..=2 => {
                seq += 1;
                let avoid = (rng.below(5) == 0).then(|| workers[rng.below(5)].to_string());
                let item = (rng.below(REQUIREMENTS.len()), rng.below(3) as i32, avoid, 0);
                let requeued = rng.below(4) == 0;
                let id = format!("t{seq}");
                assert!(s.enqueue(queued_task(&id, rng.below(4), seq, requeued, &item)));
                m.queued.insert(id, item);
            }
            3 => {
                let queued = pick_from(&mut rng, &m.queued);
                if let Some(t) = queued.or_else(|| pick_from(&mut rng, &m.reserved)) {
                    assert!(s.remove(&t));
                    m.queued.remove(&t);
                    m.reserved.remove(&t);
                }
            }
            4 => {
                let id = workers[rng.below(workers.len())];
                let (profile, slots) = (rng.below(PROFILES.len()), rng.below(4) as u32);
                let (labels, capabilities) = PROFILES[profile];
                s.worker_up(offers(id, slots, labels, capabilities));
                m.live.insert(id.to_string(), (profile, slots));
            }
            5 => {
                let id = workers[rng.below(workers.len())];
                s.worker_down(id);
                m.live.remove(id);
            }
            6 | 7 => {
                let max = rng.below(6);
                let picked = s.pick(max);
                transcript.extend(show(&picked));
                m.check_pick(max, &picked, s.stats());
            }
            8 => {
                if let Some(t) = pick_from(&mut rng, &m.reserved) {
                    let (w, item) = m.reserved.remove(&t).expect("picked");
                    if rng.below(3) == 0 {
                        assert!(s.rejected(&t));
                        m.queued.insert(t, item);
                    } else {
                        assert!(s.committed(&t));
                        m.running.push((t, w, item));
                    }
                }
            }
            _ => {
                if !m.running.is_empty() {
                    let (t, w, (req, priority, _, attempt)) =
                        m.running.remove(rng.below(m.running.len()));
                    s.attempt_ended(&w);
                    if rng.below(2) == 0 {
                        // The attempt was lost: the task is queued again, avoiding `w`.
                        let item = (req, priority, Some(w), attempt + 1);
                        assert!(s.enqueue(queued_task(&t, 0, seq, true, &item)));
                        m.queued.insert(t, item);
                    }
                }
            }
        }
        m.check_stats(s.stats());
    }

    // Everything ends and every live worker has a slot: each task some live worker can run
    // gets picked, and what remains is exactly the parked set.
    for (_, w, _) in std::mem::take(&mut m.running) {
        s.attempt_ended(&w);
    }
    for (t, (w, _)) in std::mem::take(&mut m.reserved) {
        assert!(s.committed(&t));
        s.attempt_ended(&w);
    }
    for (id, (profile, slots)) in m.live.iter_mut().filter(|l| l.1.1 == 0) {
        *slots = 1;
        let (labels, capabilities) = PROFILES[*profile];
        s.worker_up(offers(id, 1, labels, capabilities));
    }
    loop {
        let picked = s.pick(usize::MAX);
        if picked.is_empty() {
            break;
        }
        m.check_pick(usize::MAX, &picked, s.stats());
        for a in &picked {
            assert!(s.committed(&a.task));
            s.attempt_ended(&a.worker);
            m.reserved.remove(&a.task);
        }
    }
    let remaining: BTreeSet<String> = m.queued.keys().cloned().collect();
    let parked: BTreeSet<String> = s.parked().into_iter().map(|p| p.task).collect();
    assert_eq!(parked, remaining, "seed {seed}");
    for (task, item) in &m.queued {
        let runnable = m.live.values().any(|(p, _)| RUNS[item.0][*p]);
        assert!(!runnable, "seed {seed}: {task} was runnable");
    }
    transcript
}

#[test]
fn random_operations_keep_the_invariants() {
    for seed in 1..=40u64 {
        let transcript = random_walk(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1_500);
        assert!(!transcript.is_empty(), "seed {seed} assigned nothing");
    }
}

#[test]
fn the_same_events_give_the_same_assignments() {
    assert_eq!(random_walk(7, 2_000), random_walk(7, 2_000));
}

#[test]
fn bench_pick_runs() {
    let _ = bench_pick(500);
    let _ = bench_pick(0);
}

/// `cargo test --release --lib scheduler::tests::pick_time_by_queue_length -- --ignored
/// --nocapture` prints the numbers `testfleet bench scheduler` shows.
#[test]
#[ignore = "prints timings"]
fn pick_time_by_queue_length() {
    for queued in [1_000, 10_000, 100_000] {
        eprintln!("{queued:>7} queued: {:?} per pick", bench_pick(queued));
    }
}
