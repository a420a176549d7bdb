//! Which ready task goes to which worker: the leader's dispatch decisions
//! (ARCHITECTURE.md § Dispatch).
//!
//! # Soft state
//!
//! [`Scheduler`] is not replicated. The leader builds one when it is elected
//! ([`Scheduler::rebuild`] from the applied [`Machine`] and the workers it has sessions with)
//! and then keeps it current from events: tasks queued or gone ([`Scheduler::enqueue`],
//! [`Scheduler::remove`]), workers up or down ([`Scheduler::worker_up`],
//! [`Scheduler::worker_down`]), attempts ending ([`Scheduler::attempt_ended`],
//! [`Scheduler::set_busy`]). It does no I/O, reads no clock and draws no random numbers;
//! every output is ordered by `BTreeMap`/`BTreeSet` keys, so the same events always give the
//! same assignments. A decision only becomes real when the `AssignTasks` command carrying it
//! is committed; losing this state loses nothing but a rebuild.
//!
//! # The overlay
//!
//! [`Scheduler::pick`] moves each task it assigns out of the queue into an *overlay* of
//! reservations, and counts a reserved slot on the chosen worker. A reserved task cannot be
//! picked again. When the leader learns the fate of its `AssignTasks` proposal it calls
//! [`Scheduler::committed`] (the reservation becomes a busy slot) or
//! [`Scheduler::rejected`] (the task goes back to the queue and the slot is free). So between
//! proposing and committing — while the applied state still says `queued` — nothing is ever
//! assigned twice, and a worker's slots count both its running and its in-flight attempts:
//! `free = slots − busy − reserved`.
//!
//! # Queue order
//!
//! ARCHITECTURE.md § Dispatch: priority (higher first), then requeued before never-run, then
//! round-robin across jobs, then submission order. Each queued task carries an `OrderKey`
//! `(−priority, !requeued, rank, seq, task)`. The *rank* interleaves jobs: the k-th task queued
//! for a job gets rank k, so ranks 0 of every job come before ranks 1, and so on. A job that
//! arrives late does not start at rank 0 (it would run all its tasks before older jobs got
//! another turn): its ranks start at the class's *floor*, the highest rank already picked from
//! that class, so it joins the rotation where it stands.
//!
//! # Requirement classes
//!
//! Tasks with the same requirements — labels, capability expressions and the worker to
//! avoid — form a `Class`, with its own ordered queue (a `BTreeSet<OrderKey>`). Whether a
//! worker satisfies a class is decided once, when either appears, and cached both ways
//! (`Worker::classes`, `Class::capable`). To fill a slot on worker `w`, the scheduler looks only
//! at the head of each class `w` satisfies and takes the best. Between heads of equal priority
//! it prefers the class that the fewest live workers can run (scarce capabilities first),
//! so a GPU worker runs GPU tests while plain workers take the plain ones; only then the rest
//! of the queue order. A class no live worker satisfies is *parked*: its tasks stay queued
//! and [`Scheduler::parked`] says why, naming the first requirement no live worker meets.
//!
//! # Rare workers last
//!
//! Scarcity decides which task a worker takes; *rarity* decides which worker is served
//! first. A worker's rarity is the number of its offers — labels `k=v`, capabilities
//! (`webgpu`, `gpu_type=discrete`, `browser.chromium`, a declared name…) — that not every live
//! worker has; the basics every worker reports (`os`, `arch`, `cpus`, `memory_gb`) and the
//! probes' bookkeeping (`gpu_adapters`, `browsers`, errors) do not count. Workers with a free
//! slot are served plainest first, then most free slots, ties by id. So a task any worker can
//! run goes to a plain worker while one is free, and the only GPU worker is kept for the GPU
//! tasks that may come: it takes plain work only as the last resort, when every plainer
//! worker is full (nothing is ever preempted). Among equally rare workers load still spreads
//! by free slots. Rarities are recomputed when the live set or a profile changes
//! ([`Scheduler::worker_up`], [`Scheduler::worker_down`]).
//!
//! A task that should avoid a worker (the worker of its timed-out attempt, say) sits in a
//! class whose key includes that worker; the avoided worker skips that class while any other
//! live worker could run it, and takes it only when it is the sole capable one.
//!
//! # Complexity
//!
//! With `n` queued tasks, `c` classes and `w` live workers: [`Scheduler::enqueue`],
//! [`Scheduler::remove`], [`Scheduler::committed`] and [`Scheduler::rejected`] are
//! `O(log n + log c + log w)` (plus `O(w)` when a new class appears); a worker going up or
//! down is `O(c + w·(k + log w))` with `k` offers per worker (the rarities are recomputed).
//! Filling one slot is `O(log w + c·log n)`: the next worker to serve is the first of a
//! `BTreeSet<(rarity, Reverse(free), id)>`, and each of its classes' heads is a `BTreeSet::first`. A
//! worker that finds nothing is set aside for the rest of the call, so one `pick` call costs
//! at most `w` such misses in addition. None of it grows with the length of the queue;
//! [`bench_pick`] measures it.
//!
//! # Memory
//!
//! A leader holds every queued task here, so a held task is small: one record found by a
//! `u32` handle, its id in one allocation, its queue key four words naming it by handle, and
//! its job a handle too (`held`). The worker of a reservation is kept apart, for the few tasks
//! in the overlay (`bench tasks --queued` measures a coordinator's memory per queued task).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::state::command::{Assignment, JobId, TaskId, TaskStatus, WorkerId};
use crate::state::machine::{Machine, Task};

mod capability;
mod held;

pub use capability::meets;
use capability::{Expr, offers};
use held::{Handle, Held, HeldId, HeldTasks, Jobs};

/// A queued task as the scheduler needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedTask {
    pub id: TaskId,
    pub job: JobId,
    /// Higher runs first.
    pub priority: i32,
    /// Queued again after an attempt ended without a final result: runs before never-run
    /// tasks of its priority.
    pub requeued: bool,
    /// Global submission order (the replicated task counter).
    pub seq: i64,
    /// The task's current attempt number (0 before its first run); an assignment is for
    /// `attempt + 1`, as `AssignTasks` requires.
    pub attempt: u32,
    /// Labels a worker must carry with exactly these values.
    pub labels: BTreeMap<String, String>,
    /// Capability expressions: `name`, `name=value`, `name>=N`.
    pub capabilities: Vec<String>,
    /// A worker to avoid when another can run the task (its timed-out attempt's, say).
    pub avoid_worker: Option<WorkerId>,
}

impl QueuedTask {
    /// The scheduler's view of a queued task of the replicated state. A requeued task avoids
    /// the worker of its last attempt, so a retry runs elsewhere when it can.
    pub fn from_task(task: &Task) -> QueuedTask {
        QueuedTask {
            id: task.id().to_string(),
            job: task.job.to_string(),
            priority: task.spec.priority,
            requeued: task.requeued,
            seq: task.seq,
            attempt: task.attempt,
            labels: (task.spec.labels().into_iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capabilities: (task.spec.capabilities().into_iter())
                .map(str::to_string)
                .collect(),
            avoid_worker: task
                .current
                .as_ref()
                .filter(|_| task.requeued)
                .map(|a| a.worker.clone()),
        }
    }
}

/// What a live worker offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerProfile {
    pub id: WorkerId,
    pub labels: BTreeMap<String, String>,
    /// Probed capabilities as text: `webgpu = "true"`, `gpu = "discrete"`, `memory_gb = "32"`.
    pub capabilities: BTreeMap<String, String>,
    /// How many attempts it runs at once.
    pub slots: u32,
}

/// A queued task that no live worker could run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub task: TaskId,
    /// The first requirement no live worker meets, e.g. `no live worker has label gpu=a100`.
    pub reason: String,
}

/// Counters for the leader's status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks waiting in the queue (parked ones included).
    pub queued: usize,
    /// Tasks in the overlay: picked, their assignment not yet committed or rejected.
    pub reserved: usize,
    /// Queued tasks no live worker can run.
    pub parked: usize,
    pub live_workers: usize,
    /// Free slots over all live workers.
    pub free_slots: u64,
}

/// Position of a task in its class's queue; smaller runs first. Ties of everything else
/// (only tasks of one job placed before it is proposed share a `seq`) go by handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OrderKey {
    /// Higher priority first.
    priority: Reverse<i32>,
    /// `false` for a requeued task, so it sorts first.
    fresh: bool,
    /// Position within its job: the round-robin across jobs. It grows by one per task a job
    /// queues in a class; it saturates rather than wraps at `u32::MAX` (four billion tasks
    /// queued in one class in one term).
    rank: u32,
    seq: i64,
    /// The task, in `Scheduler::tasks`.
    task: Handle,
}

/// What identifies a requirement class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    labels: BTreeMap<String, String>,
    /// Sorted, without duplicates.
    capabilities: Vec<String>,
    avoid: Option<WorkerId>,
}

/// Names a class while it exists; reused only after four billion classes, and never while
/// the class it named is still there (`Scheduler::intern`).
type ClassId = u32;

/// The order in which workers with free slots are served: `(rarity, Reverse(free), id)`.
type ServeKey = (u32, Reverse<u32>, WorkerId);

/// Tasks with the same requirements, in queue order.
#[derive(Debug)]
struct Class {
    key: ClassKey,
    /// The parsed form of `key.capabilities`, in the same order.
    exprs: Vec<Expr>,
    queue: BTreeSet<OrderKey>,
    /// Live workers meeting the requirements (the avoided worker included).
    capable: BTreeSet<WorkerId>,
    /// Queued plus reserved tasks of this class; the class goes away at zero.
    members: usize,
    /// The highest rank picked from this class: where a late job's ranks start.
    floor: u32,
}

impl Class {
    fn admits(&self, worker: &WorkerProfile) -> bool {
        self.key
            .labels
            .iter()
            .all(|(k, v)| worker.labels.get(k) == Some(v))
            && self.exprs.iter().all(|e| e.holds(&worker.capabilities))
    }

    /// May `worker` (which satisfies the class) take its tasks now? Not if it is the worker
    /// to avoid and another live worker could run them.
    fn open_to(&self, worker: &str) -> bool {
        self.key.avoid.as_deref() != Some(worker) || self.capable.len() <= 1
    }

    /// Why no live worker can run this class; `None` when one can.
    fn park_reason<'a>(
        &self,
        live: impl Iterator<Item = &'a WorkerProfile> + Clone,
    ) -> Option<String> {
        if !self.capable.is_empty() {
            return None;
        }
        if live.clone().next().is_none() {
            return Some("no live workers".to_string());
        }
        for (k, v) in &self.key.labels {
            if !live.clone().any(|w| w.labels.get(k) == Some(v)) {
                return Some(format!("no live worker has label {k}={v}"));
            }
        }
        for (text, expr) in self.key.capabilities.iter().zip(&self.exprs) {
            if *expr == Expr::Invalid {
                return Some(format!(
                    "capability requirement `{text}` is not valid (expected name, name=value or name>=number)"
                ));
            }
            if !live.clone().any(|w| expr.holds(&w.capabilities)) {
                let closest = expr.closest(live.clone());
                return Some(format!(
                    "no live worker has capability {}{closest}",
                    text.trim()
                ));
            }
        }
        let labels = self
            .key
            .labels
            .iter()
            .map(|(k, v)| format!("label {k}={v}"));
        let capabilities =
            (self.key.capabilities.iter()).map(|c| format!("capability {}", c.trim()));
        let all: Vec<String> = labels.chain(capabilities).collect();
        Some(format!(
            "no single live worker has all of: {}",
            all.join(", ")
        ))
    }
}

/// A worker the scheduler counts slots for: live ones, and down ones still holding attempts.
#[derive(Debug, Default)]
struct Worker {
    /// `Some` while the worker is live (may receive tasks).
    profile: Option<WorkerProfile>,
    /// Attempts committed to it and not ended.
    busy: u32,
    /// Tasks in the overlay reserved on it.
    reserved: u32,
    /// The key under which it is in `Scheduler::by_free`, if it is.
    listed: Option<ServeKey>,
    /// How many of its offers not every live worker has (see § Rare workers last).
    rarity: u32,
    /// Classes it satisfies (while live).
    classes: BTreeSet<ClassId>,
}

impl Worker {
    fn free(&self) -> u32 {
        self.profile.as_ref().map_or(0, |p| {
            p.slots
                .saturating_sub(self.busy.saturating_add(self.reserved))
        })
    }
}

/// The leader's dispatch state. See the module documentation.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Every task held, by handle and by id.
    tasks: HeldTasks,
    /// The held tasks in the overlay, and the worker each is reserved on.
    reservations: HashMap<Handle, WorkerId>,
    classes: BTreeMap<ClassId, Class>,
    class_ids: BTreeMap<ClassKey, ClassId>,
    next_class: ClassId,
    workers: BTreeMap<WorkerId, Worker>,
    /// Live workers with a free slot, in the order they are served: plainest first, then
    /// most free, ties by id.
    by_free: BTreeSet<ServeKey>,
    /// Jobs with tasks held: their round-robin ranks.
    jobs: Jobs,
    reserved: usize,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    /// The scheduler of a newly elected leader: every `queued` task of `machine`, and the
    /// `assigned`/`running` ones counted as busy slots of their workers. Of `live_workers`,
    /// only those the machine knows as healthy and not drained are used (`AssignTasks` rejects the others).
    pub fn rebuild(machine: &Machine, live_workers: &[WorkerProfile]) -> Scheduler {
        let mut scheduler = Scheduler::new();
        for profile in live_workers {
            let schedulable = machine
                .worker(&profile.id)
                .is_some_and(|w| w.accepts_work());
            if schedulable {
                scheduler.worker_up(profile.clone());
            }
        }
        let mut open: Vec<&Task> = (machine.tasks().values())
            .filter(|t| !t.status.is_final())
            .collect();
        open.sort_by(|a, b| (a.seq, a.id()).cmp(&(b.seq, b.id())));
        let mut busy: BTreeMap<&WorkerId, u32> = BTreeMap::new();
        for task in open {
            if task.status == TaskStatus::Queued {
                scheduler.enqueue(QueuedTask::from_task(task));
            } else if let Some(worker) = task.holder() {
                *busy.entry(worker).or_default() += 1;
            }
        }
        for (worker, running) in busy {
            scheduler.set_busy(worker, running);
        }
        scheduler
    }

    /// Queues `task` (or re-queues it with new values if it is already queued). Returns
    /// false, changing nothing, when the task is reserved: its assignment is in flight.
    pub fn enqueue(&mut self, task: QueuedTask) -> bool {
        if let Some(handle) = self.tasks.find(&task.id) {
            if self.reservations.contains_key(&handle) {
                return false;
            }
            self.remove(&task.id);
        }
        let class_id = self.intern(&task);
        let job = self.jobs.join(&task.job);
        let class = self.classes.get_mut(&class_id).expect("interned class");
        let ranks = self.jobs.get_mut(job).expect("joined job");
        let rank = ranks.next.max(class.floor);
        ranks.next = rank.saturating_add(1);
        ranks.members += 1;
        let held = Held {
            id: HeldId::from(task.id),
            class: class_id,
            seq: task.seq,
            job,
            attempt: task.attempt,
            rank,
            priority: task.priority,
            fresh: !task.requeued,
        };
        let handle = self.tasks.insert(held);
        let key = self.tasks.get(handle).expect("just held").key(handle);
        class.queue.insert(key);
        class.members += 1;
        true
    }

    /// Forgets a task (finished, cancelled, assigned by a command this scheduler did not
    /// reserve…). A reserved task's slot is freed. Returns whether the task was held.
    pub fn remove(&mut self, task: &str) -> bool {
        let Some(handle) = self.tasks.find(task) else {
            return false;
        };
        let held = self.tasks.remove(handle).expect("found task is held");
        match self.reservations.remove(&handle) {
            Some(worker) => self.release(&worker),
            None => {
                if let Some(class) = self.classes.get_mut(&held.class) {
                    class.queue.remove(&held.key(handle));
                }
            }
        }
        self.drop_member(&held);
        true
    }

    /// The assignment of a reserved task was applied: the task leaves the overlay and its
    /// slot stays used, now as a busy one. Returns false (nothing changed) if it was not
    /// reserved.
    pub fn committed(&mut self, task: &str) -> bool {
        let Some(handle) = self.tasks.find(task) else {
            return false;
        };
        let Some(worker) = self.reservations.remove(&handle) else {
            return false;
        };
        let held = self.tasks.remove(handle).expect("reserved task is held");
        if let Some(w) = self.workers.get_mut(&worker) {
            w.busy += 1;
        }
        self.release(&worker);
        self.drop_member(&held);
        true
    }

    /// The assignment of a reserved task was not applied (the proposal failed or the item
    /// was rejected): the task is queued again where it was and the slot is free. Returns
    /// false (nothing changed) if it was not reserved.
    pub fn rejected(&mut self, task: &str) -> bool {
        let Some(handle) = self.tasks.find(task) else {
            return false;
        };
        let Some(worker) = self.reservations.remove(&handle) else {
            return false;
        };
        let held = self.tasks.get(handle).expect("reserved task is held");
        if let Some(class) = self.classes.get_mut(&held.class) {
            class.queue.insert(held.key(handle));
        }
        self.release(&worker);
        true
    }

    /// The worker a task is reserved on, while its assignment is in flight.
    pub fn reservation(&self, task: &str) -> Option<&WorkerId> {
        self.reservations.get(&self.tasks.find(task)?)
    }

    /// A worker may receive tasks (again), with these labels, capabilities and slots. Its
    /// busy count and reservations carry over.
    pub fn worker_up(&mut self, profile: WorkerProfile) {
        let id = profile.id.clone();
        self.take_profile(&id);
        let mut classes = BTreeSet::new();
        for (class_id, class) in &mut self.classes {
            if class.admits(&profile) {
                class.capable.insert(id.clone());
                classes.insert(*class_id);
            }
        }
        let worker = self.workers.entry(id.clone()).or_default();
        worker.profile = Some(profile);
        worker.classes = classes;
        self.rerank();
    }

    /// A worker may not receive new tasks (failed, draining, quarantined, gone). Attempts
    /// it holds stay counted until they end.
    pub fn worker_down(&mut self, worker: &str) {
        if self.take_profile(worker) {
            self.rerank();
        }
    }

    /// Takes `worker` out of the live set and its classes; whether it was known.
    fn take_profile(&mut self, worker: &str) -> bool {
        let Some(w) = self.workers.get_mut(worker) else {
            return false;
        };
        w.profile = None;
        for class_id in std::mem::take(&mut w.classes) {
            if let Some(class) = self.classes.get_mut(&class_id) {
                class.capable.remove(worker);
            }
        }
        self.relist(worker);
        self.forget_if_idle(worker);
        true
    }

    /// Sets how many attempts a worker is running (heartbeat reconciliation, rebuild).
    /// Reservations are counted apart and unaffected.
    pub fn set_busy(&mut self, worker: &str, running: u32) {
        self.workers.entry(worker.to_string()).or_default().busy = running;
        self.relist(worker);
        self.forget_if_idle(worker);
    }

    /// An attempt this scheduler did not reserve now holds a slot of `worker` (e.g. an
    /// assignment proposed by the previous leader, applied after the rebuild).
    pub fn attempt_started(&mut self, worker: &str) {
        self.workers.entry(worker.to_string()).or_default().busy += 1;
        self.relist(worker);
    }

    /// An attempt on `worker` ended (any outcome, or requeued): its slot is free.
    pub fn attempt_ended(&mut self, worker: &str) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.busy = w.busy.saturating_sub(1);
        }
        self.relist(worker);
        self.forget_if_idle(worker);
    }

    /// Fills up to `max` free slots of live workers with the best tasks they can run, and
    /// reserves those tasks. Workers are served plainest first, then most free slots (ties
    /// by id), one slot at a time, so load spreads across the fleet and rare workers are
    /// the last resort for tasks others can run (§ Rare workers last).
    pub fn pick(&mut self, max: usize) -> Vec<Assignment> {
        let mut out = Vec::new();
        let mut idle = Vec::new();
        while out.len() < max {
            let Some((_, _, worker)) = self.by_free.first().cloned() else {
                break;
            };
            match self.best_for(&worker) {
                Some((class_id, key)) => out.push(self.reserve(class_id, key, worker)),
                None => {
                    self.delist(&worker);
                    idle.push(worker);
                }
            }
        }
        for worker in idle {
            self.relist(&worker);
        }
        out
    }

    /// Queued tasks no live worker could run, in submission order, with the reason.
    pub fn parked(&self) -> Vec<Parked> {
        let mut parked = Vec::new();
        for class in self.classes.values() {
            if let Some(reason) = class.park_reason(self.live()) {
                parked.extend(class.queue.iter().map(|k| {
                    let parked = Parked {
                        task: self
                            .tasks
                            .get(k.task)
                            .map_or(String::new(), |t| t.id.to_string()),
                        reason: reason.clone(),
                    };
                    (k.seq, parked)
                }));
            }
        }
        parked.sort_by(|a, b| (a.0, &a.1.task).cmp(&(b.0, &b.1.task)));
        parked.into_iter().map(|(_, p)| p).collect()
    }

    /// Why a held task is not running yet; `None` if the scheduler does not hold it.
    pub fn waiting_reason(&self, task: &str) -> Option<String> {
        let handle = self.tasks.find(task)?;
        if let Some(worker) = self.reservations.get(&handle) {
            return Some(format!("assignment to worker {worker} awaiting commit"));
        }
        let class = &self.classes[&self.tasks.get(handle)?.class];
        Some(match class.park_reason(self.live()) {
            Some(reason) => reason,
            None => format!(
                "waiting for a free slot on {} capable live worker{}",
                class.capable.len(),
                if class.capable.len() == 1 { "" } else { "s" }
            ),
        })
    }

    pub fn stats(&self) -> Stats {
        let parked = (self.classes.values())
            .filter(|c| c.capable.is_empty())
            .map(|c| c.queue.len())
            .sum();
        Stats {
            queued: self.tasks.len() - self.reserved,
            reserved: self.reserved,
            parked,
            live_workers: self.live().count(),
            free_slots: self.workers.values().map(|w| u64::from(w.free())).sum(),
        }
    }

    fn live(&self) -> impl Iterator<Item = &WorkerProfile> + Clone {
        self.workers.values().filter_map(|w| w.profile.as_ref())
    }

    /// The best queued task `worker` may take: the smallest of its classes' heads by
    /// (priority, scarcity, the rest of the queue order).
    fn best_for(&self, worker: &str) -> Option<(ClassId, OrderKey)> {
        let mut best: Option<(ClassId, &OrderKey, usize)> = None;
        for class_id in &self.workers.get(worker)?.classes {
            let class = &self.classes[class_id];
            let Some(head) = class.queue.first() else {
                continue;
            };
            if !class.open_to(worker) {
                continue;
            }
            let scarcity = class.capable.len();
            let better =
                best.is_none_or(|(_, b, s)| (head.priority, scarcity, head) < (b.priority, s, b));
            if better {
                best = Some((*class_id, head, scarcity));
            }
        }
        best.map(|(class_id, key, _)| (class_id, *key))
    }

    fn reserve(&mut self, class_id: ClassId, key: OrderKey, worker: WorkerId) -> Assignment {
        let class = self.classes.get_mut(&class_id).expect("worker's class");
        class.queue.remove(&key);
        class.floor = class.floor.max(key.rank);
        let held = self.tasks.get(key.task).expect("queued task is held");
        let (task, attempt) = (held.id.to_string(), held.attempt + 1);
        self.reservations.insert(key.task, worker.clone());
        self.reserved += 1;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.reserved += 1;
        }
        self.relist(&worker);
        Assignment {
            task,
            worker,
            attempt,
        }
    }

    /// Ends a reservation on `worker` (committed, rejected or removed).
    fn release(&mut self, worker: &str) {
        self.reserved -= 1;
        if let Some(w) = self.workers.get_mut(worker) {
            w.reserved = w.reserved.saturating_sub(1);
        }
        self.relist(worker);
        self.forget_if_idle(worker);
    }

    /// Drops a task that left the scheduler from its class's and job's member counts.
    fn drop_member(&mut self, held: &Held) {
        if let Some(class) = self.classes.get_mut(&held.class) {
            class.members -= 1;
            if class.members == 0 {
                let class = self.classes.remove(&held.class).expect("present");
                self.class_ids.remove(&class.key);
                for worker in &class.capable {
                    if let Some(w) = self.workers.get_mut(worker) {
                        w.classes.remove(&held.class);
                    }
                }
            }
        }
        self.jobs.leave(held.job);
    }

    /// The class of `task`'s requirements, created (and matched against live workers) if new.
    fn intern(&mut self, task: &QueuedTask) -> ClassId {
        let mut capabilities = task.capabilities.clone();
        capabilities.sort();
        capabilities.dedup();
        let key = ClassKey {
            labels: task.labels.clone(),
            capabilities,
            avoid: task.avoid_worker.clone(),
        };
        if let Some(id) = self.class_ids.get(&key) {
            return *id;
        }
        let mut id = self.next_class;
        while self.classes.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_class = id.wrapping_add(1);
        let mut class = Class {
            exprs: key.capabilities.iter().map(|c| Expr::parse(c)).collect(),
            key: key.clone(),
            queue: BTreeSet::new(),
            capable: BTreeSet::new(),
            members: 0,
            floor: 0,
        };
        for (worker_id, worker) in &mut self.workers {
            if let Some(profile) = &worker.profile
                && class.admits(profile)
            {
                class.capable.insert(worker_id.clone());
                worker.classes.insert(id);
            }
        }
        self.class_ids.insert(key, id);
        self.classes.insert(id, class);
        id
    }

    fn delist(&mut self, worker: &str) {
        if let Some(w) = self.workers.get_mut(worker)
            && let Some(key) = w.listed.take()
        {
            self.by_free.remove(&key);
        }
    }

    /// Puts `worker` in `by_free` under its rarity and current free count (or takes it out
    /// at zero).
    fn relist(&mut self, worker: &str) {
        self.delist(worker);
        if let Some(w) = self.workers.get_mut(worker) {
            let free = w.free();
            if free > 0 {
                let key = (w.rarity, Reverse(free), worker.to_string());
                w.listed = Some(key.clone());
                self.by_free.insert(key);
            }
        }
    }

    /// Recomputes every live worker's rarity after the live set or a profile changed: the
    /// number of its [`offers`] that not every live worker has.
    fn rerank(&mut self) {
        let live: Vec<(WorkerId, BTreeSet<String>)> = (self.workers.iter())
            .filter_map(|(id, w)| Some((id.clone(), offers(w.profile.as_ref()?))))
            .collect();
        let common: BTreeSet<&String> = match live.split_first() {
            Some((first, rest)) => (first.1.iter())
                .filter(|o| rest.iter().all(|(_, others)| others.contains(*o)))
                .collect(),
            None => BTreeSet::new(),
        };
        let ids: Vec<WorkerId> = self.workers.keys().cloned().collect();
        for (id, offered) in &live {
            let rarity = offered.iter().filter(|o| !common.contains(o)).count();
            if let Some(w) = self.workers.get_mut(id) {
                w.rarity = u32::try_from(rarity).unwrap_or(u32::MAX);
            }
        }
        for id in ids {
            self.relist(&id);
        }
    }

    /// Forgets a worker that is down and holds nothing.
    fn forget_if_idle(&mut self, worker: &str) {
        if let Some(w) = self.workers.get(worker)
            && w.profile.is_none()
            && w.busy == 0
            && w.reserved == 0
        {
            self.workers.remove(worker);
        }
    }
}

/// Median time to fill one slot with `queued` tasks queued over four requirement classes and
/// 16 workers. For `testfleet bench scheduler`: the time should stay flat as `queued` grows.
pub fn bench_pick(queued: usize) -> Duration {
    const SAMPLES: usize = 201;
    let mut scheduler = Scheduler::new();
    for i in 0..16 {
        let mut capabilities = BTreeMap::new();
        if i % 4 == 0 {
            capabilities.insert("webgpu".to_string(), "true".to_string());
            capabilities.insert("gpu".to_string(), "discrete".to_string());
        }
        capabilities.insert("memory_gb".to_string(), (8 * (1 + i % 3)).to_string());
        scheduler.worker_up(WorkerProfile {
            id: format!("worker-{i:02}"),
            labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
            capabilities,
            slots: 4,
        });
    }
    let requirements: [&[&str]; 4] = [&[], &["webgpu"], &["gpu=discrete"], &["memory_gb>=16"]];
    for i in 0..queued {
        scheduler.enqueue(QueuedTask {
            id: format!("task-{i:07}"),
            job: format!("job-{}", i % 7),
            priority: (i % 3) as i32,
            requeued: i % 11 == 0,
            seq: i as i64,
            attempt: 0,
            labels: BTreeMap::new(),
            capabilities: requirements[i % 4].iter().map(|c| c.to_string()).collect(),
            avoid_worker: None,
        });
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = std::time::Instant::now();
        let picked = scheduler.pick(1);
        times.push(start.elapsed());
        // Keep the fleet's slots free so every sample is a successful pick.
        for a in picked {
            scheduler.committed(&a.task);
            scheduler.attempt_ended(&a.worker);
        }
    }
    times.sort();
    times[SAMPLES / 2]
}

#[cfg(test)]
mod tests;
