//! The detector in logical time: exact suspicion and failure points, no flapping under
//! jitter, adaptive suspicion for jittery workers, sessions, leader changes, recovery,
//! deadlines and settings. Every instant is `base + offset`; nothing sleeps.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const NS: Duration = Duration::from_nanos(1);

/// Seeded xorshift64: the same jitter on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[low, high)`.
    fn between(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }
}

/// A detector driven the way the health monitor drives it: before each event, `tick` at
/// every [`Detector::next_deadline`] that has come. Every transition is logged with the
/// offset at which it was reported.
struct Sim {
    detector: Detector,
    base: Instant,
    log: Vec<(Duration, Transition)>,
}

impl Sim {
    fn new(config: DetectorConfig) -> Self {
        Sim {
            detector: Detector::new(config).expect("valid config"),
            base: Instant::now(),
            log: Vec::new(),
        }
    }

    fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    /// Ticks at each deadline up to and including `offset`. A deadline must always yield a
    /// transition: otherwise the driver would spin.
    fn run_until(&mut self, offset: Duration) {
        while let Some(deadline) = self.detector.next_deadline()
            && deadline <= self.at(offset)
        {
            let transitions = self.detector.tick(deadline);
            let when = deadline - self.base;
            assert!(!transitions.is_empty(), "deadline {when:?} gave nothing");
            self.log.extend(transitions.into_iter().map(|t| (when, t)));
        }
    }

    fn record(&mut self, offset: Duration, transition: Option<Transition>) {
        self.log.extend(transition.map(|t| (offset, t)));
    }

    fn heartbeat(&mut self, worker: &str, offset: Duration) {
        self.run_until(offset);
        let transition = self.detector.heartbeat(worker, self.at(offset));
        self.record(offset, transition);
    }

    fn session_opened(&mut self, worker: &str, offset: Duration) {
        self.run_until(offset);
        let transition = self.detector.session_opened(worker, self.at(offset));
        self.record(offset, transition);
    }

    fn session_closed(&mut self, worker: &str, offset: Duration) {
        self.run_until(offset);
        let transition = self.detector.session_closed(worker, self.at(offset));
        self.record(offset, transition);
    }

    fn leader_changed(&mut self, offset: Duration) {
        self.run_until(offset);
        self.detector.leader_changed(self.at(offset));
    }

    /// The log as `(offset, worker, from, to)`.
    fn changes(&self) -> Vec<(Duration, &str, Liveness, Liveness)> {
        (self.log.iter())
            .map(|(at, t)| (*at, t.worker.as_str(), t.from, t.to))
            .collect()
    }

    fn changes_of(&self, worker: &str) -> Vec<(Duration, Liveness, Liveness)> {
        (self.changes().into_iter())
            .filter(|c| c.1 == worker)
            .map(|(at, _, from, to)| (at, from, to))
            .collect()
    }
}

use Liveness::{Alive, Failed, Suspect};

#[test]
fn suspects_and_fails_exactly_at_the_configured_times() {
    let custom = DetectorConfig {
        suspect_after_missed: 2,
        ..DetectorConfig::from_timing(secs(2), secs(10))
    };
    // (name, config, heartbeats before going silent, suspect after, failed after)
    let cases = [
        ("default", DetectorConfig::default(), 20, secs(3), secs(5)),
        (
            "default, one heartbeat",
            DetectorConfig::default(),
            1,
            secs(3),
            secs(5),
        ),
        ("tuned", DetectorConfig::tuned(), 50, ms(300), ms(500)),
        (
            "tuned, one heartbeat",
            DetectorConfig::tuned(),
            1,
            ms(300),
            ms(500),
        ),
        ("2 missed of 2 s, 10 s", custom, 20, secs(4), secs(10)),
    ];
    for (name, config, beats, suspect_after, failed_after) in cases {
        let interval = config.heartbeat_interval;
        let mut sim = Sim::new(config);
        for i in 0..beats {
            sim.heartbeat("w", interval * i);
        }
        let last = interval * (beats - 1);
        let detector = &mut sim.detector;

        assert_eq!(
            detector.next_deadline(),
            Some(sim.base + last + suspect_after),
            "{name}"
        );
        assert!(
            detector
                .tick(sim.base + last + suspect_after - NS)
                .is_empty(),
            "{name}"
        );
        let suspected = detector.tick(sim.base + last + suspect_after);
        assert_eq!(suspected.len(), 1, "{name}");
        assert_eq!(
            (suspected[0].from, suspected[0].to),
            (Alive, Suspect),
            "{name}"
        );
        assert_eq!(suspected[0].silent_for, suspect_after, "{name}");
        assert!(suspected[0].phi >= detector.config().phi_suspect, "{name}");

        assert_eq!(
            detector.next_deadline(),
            Some(sim.base + last + failed_after),
            "{name}"
        );
        assert!(
            detector
                .tick(sim.base + last + failed_after - NS)
                .is_empty(),
            "{name}"
        );
        let failed = detector.tick(sim.base + last + failed_after);
        assert_eq!(failed.len(), 1, "{name}");
        assert_eq!((failed[0].from, failed[0].to), (Suspect, Failed), "{name}");
        assert_eq!(failed[0].silent_for, failed_after, "{name}");

        assert_eq!(
            detector.next_deadline(),
            None,
            "{name}: a failed worker has no deadline"
        );
        assert!(
            detector
                .tick(sim.base + last + failed_after * 10)
                .is_empty(),
            "{name}"
        );
        assert_eq!(detector.liveness("w"), Some(Failed), "{name}");
    }
}

#[test]
fn reasons_read_like_sentences() {
    let mut sim = Sim::new(DetectorConfig::default());
    for i in 0..10 {
        sim.heartbeat("w", secs(i));
    }
    sim.run_until(secs(20));
    let reasons: Vec<&str> = sim.log.iter().map(|(_, t)| t.reason.as_str()).collect();
    assert!(
        reasons[0].starts_with("no heartbeat for 3.0 s (3 missed, phi "),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("no heartbeat for 5.0 s (5 missed, phi ")
            && reasons[1].ends_with("), failure timeout 5.0 s"),
        "{reasons:?}"
    );
    assert_eq!(human(Duration::from_millis(3240)), "3.2 s");
    assert_eq!(human(ms(250)), "250 ms");
}

#[test]
fn jittered_heartbeats_never_flap() {
    for (name, config) in [
        ("default", DetectorConfig::default()),
        ("tuned", DetectorConfig::tuned()),
    ] {
        let interval = config.heartbeat_interval;
        let mut sim = Sim::new(config);
        let mut rng = XorShift(0x5eed_cafe_f00d_0001);
        let mut now = Duration::ZERO;
        let phi_suspect = sim.detector.config().phi_suspect;
        let mut max_phi = 0.0f64;
        for beat in 0..10_000 {
            let gap = interval.mul_f64(rng.between(0.6, 1.4));
            // Tick often between heartbeats too, not only at deadlines.
            for step in 1..10 {
                let at = sim.at(now + gap * step / 10);
                assert!(sim.detector.tick(at).is_empty(), "{name}");
                if beat >= 100 {
                    max_phi = max_phi.max(sim.detector.phi("w", at).unwrap());
                }
            }
            now += gap;
            sim.heartbeat("w", now);
        }
        assert_eq!(sim.changes(), vec![], "{name}: no transition at all");
        assert_eq!(sim.detector.liveness("w"), Some(Alive), "{name}");
        assert!(
            max_phi < phi_suspect / 2.0,
            "{name}: once warmed up, phi stays far from suspicion ({max_phi:.2})"
        );
    }
}

#[test]
fn a_jittery_worker_is_suspected_later_but_still_fails_on_time() {
    // Each worker heartbeats 300 times with its own gaps (seconds, uniform in the range) and
    // all fall silent at the same instant.
    let workers = [
        ("regular", 1.0, 1.0),
        ("jittery", 0.2, 1.8),
        ("wild", 0.1, 2.9),
    ];
    let mut rng = XorShift(42);
    let silent_from = secs(1000);
    let mut events: Vec<(Duration, &str)> = Vec::new();
    for (name, low, high) in workers {
        let mut at = silent_from;
        for _ in 0..300 {
            events.push((at, name));
            at -= Duration::from_secs_f64(rng.between(low, high));
        }
    }
    events.sort();
    let mut sim = Sim::new(DetectorConfig::default());
    for (at, worker) in events {
        sim.heartbeat(worker, at);
    }
    assert_eq!(
        sim.changes(),
        vec![],
        "nobody is suspected while heartbeating"
    );
    sim.run_until(silent_from + secs(60));

    let regular = sim.changes_of("regular");
    assert_eq!(
        regular,
        vec![(secs(3), Alive, Suspect), (secs(5), Suspect, Failed)]
            .into_iter()
            .map(|(at, from, to)| (silent_from + at, from, to))
            .collect::<Vec<_>>()
    );

    let jittery = sim.changes_of("jittery");
    assert_eq!(jittery.len(), 2, "{jittery:?}");
    let suspected = jittery[0].0 - silent_from;
    assert!(suspected > secs(3) && suspected < secs(5), "{suspected:?}");
    assert_eq!(jittery[1], (silent_from + secs(5), Suspect, Failed));

    // So wide a distribution that phi never reaches the threshold before the hard bound:
    // the worker goes straight from alive to failed, still exactly at failure_timeout.
    let wild = sim.changes_of("wild");
    assert_eq!(wild, vec![(silent_from + secs(5), Alive, Failed)]);
}

#[test]
fn a_closed_session_is_suspect_at_once_and_failed_after_the_reconnect_window() {
    for (name, config, window) in [
        ("default", DetectorConfig::default(), secs(2)),
        ("tuned", DetectorConfig::tuned(), ms(200)),
    ] {
        let interval = config.heartbeat_interval;
        assert_eq!(config.effective_reconnect_window(), window, "{name}");
        let mut sim = Sim::new(config);
        sim.session_opened("w", Duration::ZERO);
        sim.heartbeat("w", interval);
        let closed = interval + interval / 2;
        sim.session_closed("w", closed);
        assert_eq!(sim.changes(), vec![(closed, "w", Alive, Suspect)], "{name}");
        assert_eq!(
            sim.detector.next_deadline(),
            Some(sim.at(closed + window)),
            "{name}"
        );
        sim.run_until(closed + secs(60));
        assert_eq!(
            sim.changes_of("w")[1],
            (closed + window, Suspect, Failed),
            "{name}"
        );
        let reason = &sim.log[1].1.reason;
        let expected = format!("session closed and not reopened within {}", human(window));
        assert_eq!(reason, &expected, "{name}");
    }
}

#[test]
fn a_reopened_session_cancels_the_reconnect_deadline() {
    let mut sim = Sim::new(DetectorConfig::default());
    sim.heartbeat("w", Duration::ZERO);
    sim.session_closed("w", ms(500));
    sim.session_opened("w", ms(1500));
    assert_eq!(
        sim.changes(),
        vec![
            (ms(500), "w", Alive, Suspect),
            (ms(1500), "w", Suspect, Alive)
        ]
    );
    assert!(sim.log[1].1.reason.starts_with("session reopened after"));
    // From here on the silence rules count from the reopening.
    sim.run_until(secs(60));
    assert_eq!(
        sim.changes_of("w")[2..],
        [(ms(4500), Alive, Suspect), (ms(6500), Suspect, Failed)]
    );
}

#[test]
fn the_hard_bound_still_applies_to_a_closed_session() {
    let mut sim = Sim::new(DetectorConfig::default());
    sim.heartbeat("w", Duration::ZERO);
    sim.run_until(ms(4000));
    sim.session_closed("w", ms(4000)); // already suspect: nothing new to report
    sim.run_until(secs(60));
    assert_eq!(
        sim.changes(),
        vec![
            (secs(3), "w", Alive, Suspect),
            (secs(5), "w", Suspect, Failed)
        ]
    );
    assert!(sim.log[1].1.reason.starts_with("no heartbeat for 5.0 s"));
}

#[test]
fn the_reconnect_window_is_capped_by_the_failure_timeout() {
    let config = DetectorConfig {
        reconnect_window: secs(30),
        ..DetectorConfig::default()
    };
    assert_eq!(config.effective_reconnect_window(), secs(5));
    let mut sim = Sim::new(config);
    sim.heartbeat("w", Duration::ZERO);
    sim.session_closed("w", Duration::ZERO);
    sim.run_until(secs(60));
    assert_eq!(
        sim.changes(),
        vec![
            (Duration::ZERO, "w", Alive, Suspect),
            (secs(5), "w", Suspect, Failed)
        ]
    );
}

#[test]
fn a_leader_change_gives_every_worker_a_fresh_deadline() {
    let mut sim = Sim::new(DetectorConfig::default());
    sim.heartbeat("quiet", Duration::ZERO); // silent from here on: suspect at 3 s
    sim.heartbeat("closed", secs(3));
    sim.heartbeat("steady", secs(3));
    sim.session_closed("closed", ms(4000)); // would fail at 6 s
    sim.run_until(ms(4500));
    assert_eq!(
        sim.changes(),
        vec![
            (secs(3), "quiet", Alive, Suspect),
            (secs(4), "closed", Alive, Suspect)
        ]
    );

    // Elected at 4.5 s: "quiet" (about to fail at 5 s) and "closed" start afresh.
    let elected = ms(4500);
    sim.leader_changed(elected);
    assert_eq!(
        sim.detector.next_deadline(),
        Some(sim.at(elected + secs(3)))
    );
    for i in 1..=20 {
        sim.heartbeat("steady", elected + secs(i));
    }
    assert_eq!(
        sim.changes()[2..],
        [
            (elected + secs(5), "closed", Suspect, Failed),
            (elected + secs(5), "quiet", Suspect, Failed)
        ]
    );
    assert_eq!(sim.detector.liveness("steady"), Some(Alive));
}

#[test]
fn nobody_fails_within_the_grace_period() {
    let config = DetectorConfig {
        grace: secs(8),
        ..DetectorConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.heartbeat("silent", Duration::ZERO);
    sim.heartbeat("dropped", Duration::ZERO);
    // Elected at 100 s; nobody ticked before, as for a new leader's detector.
    sim.detector.leader_changed(sim.at(secs(100)));
    sim.detector.track("inherited", Alive, sim.at(secs(100)));
    sim.session_closed("dropped", secs(101)); // reconnect window ends at 103 s
    sim.run_until(secs(200));
    let failures: Vec<_> = (sim.changes().into_iter())
        .filter(|c| c.3 == Failed)
        .collect();
    assert_eq!(
        failures,
        vec![
            (secs(108), "dropped", Suspect, Failed),
            (secs(108), "inherited", Suspect, Failed),
            (secs(108), "silent", Suspect, Failed)
        ]
    );
    assert!(sim.log.iter().all(|(_, t)| {
        t.to != Failed
            || t.reason
                .ends_with("(held until the leader-change grace ended)")
    }));
    // Suspicion is not held back: silent workers are suspected 3 s after the election.
    assert!(
        sim.changes()
            .contains(&(secs(103), "silent", Alive, Suspect))
    );
}

#[test]
fn a_heartbeat_brings_a_suspect_or_failed_worker_back() {
    let mut sim = Sim::new(DetectorConfig::default());
    for i in 0..10 {
        sim.heartbeat("late", secs(i));
        sim.heartbeat("lost", secs(i));
    }
    sim.heartbeat("late", ms(12_500));
    assert_eq!(
        sim.changes_of("late")[..2],
        [(secs(12), Alive, Suspect), (ms(12_500), Suspect, Alive)]
    );
    let back = &sim.log.iter().find(|(_, t)| t.to == Alive).unwrap().1;
    assert_eq!(back.silent_for, ms(3500));
    assert_eq!(
        back.reason,
        "heartbeat after 3.5 s of silence (was suspect)"
    );

    sim.run_until(secs(50));
    assert!(
        sim.detector.tick(sim.at(secs(50))).is_empty(),
        "failed is not re-emitted"
    );
    sim.heartbeat("lost", secs(100));
    // The outage is not sampled as an interval, so the next silence is judged as before.
    for i in 1..=10 {
        sim.heartbeat("lost", secs(100 + i));
    }
    sim.run_until(secs(200));
    assert_eq!(
        sim.changes_of("lost"),
        [
            (secs(12), Alive, Suspect),
            (secs(14), Suspect, Failed),
            (secs(100), Failed, Alive),
            (secs(113), Alive, Suspect),
            (secs(115), Suspect, Failed)
        ]
    );
    let revived = &sim.log.iter().find(|(at, _)| *at == secs(100)).unwrap().1;
    assert_eq!(
        revived.reason,
        "heartbeat after 91.0 s of silence (was failed)"
    );
}

#[test]
fn next_deadline_is_the_earliest_pending_change() {
    let mut sim = Sim::new(DetectorConfig::default());
    assert_eq!(sim.detector.next_deadline(), None, "no workers");
    sim.heartbeat("a", Duration::ZERO);
    sim.heartbeat("b", ms(700));
    assert_eq!(
        sim.detector.next_deadline(),
        Some(sim.at(secs(3))),
        "a's suspicion"
    );
    sim.heartbeat("a", secs(1));
    assert_eq!(
        sim.detector.next_deadline(),
        Some(sim.at(ms(3700))),
        "b's suspicion"
    );
    sim.session_closed("a", ms(1200));
    assert_eq!(
        sim.detector.next_deadline(),
        Some(sim.at(ms(3200))),
        "a's reconnect"
    );
    sim.run_until(ms(3200));
    assert_eq!(
        sim.detector.next_deadline(),
        Some(sim.at(ms(3700))),
        "b's suspicion"
    );
    sim.run_until(ms(3700));
    assert_eq!(
        sim.detector.next_deadline(),
        Some(sim.at(ms(5700))),
        "b's failure"
    );
    sim.run_until(ms(5700));
    assert_eq!(sim.detector.next_deadline(), None, "both failed");
    assert!(sim.detector.forget("a"));
    assert!(!sim.detector.forget("a"));
    assert_eq!(sim.detector.liveness("a"), None);
    assert_eq!(sim.detector.len(), 1);
}

#[test]
fn unknown_workers() {
    let mut sim = Sim::new(DetectorConfig::default());
    assert_eq!(sim.detector.session_closed("ghost", sim.base), None);
    assert!(sim.detector.is_empty());
    assert_eq!(
        sim.detector.heartbeat("new", sim.base),
        None,
        "joins alive, silently"
    );
    assert_eq!(sim.detector.liveness("new"), Some(Alive));
    assert_eq!(sim.detector.phi("ghost", sim.base), None);
}

#[test]
fn phi_grows_with_silence_and_its_inverse_is_exact() {
    let config = DetectorConfig::default();
    let arrivals = Arrivals::of(&VecDeque::from([1.0, 1.0, 1.0]), &config);
    let mut previous = 0.0;
    for tenths in 0..100 {
        let phi = arrivals.phi(Duration::from_millis(tenths * 100));
        assert!(
            phi >= previous && phi.is_finite(),
            "at {tenths}: {phi} < {previous}"
        );
        previous = phi;
    }
    for target in [0.1, 0.5, 1.0, 3.0, 8.0, 12.0, 30.0, 300.0] {
        let silence = arrivals.silence_at(z_for_phi(target));
        let phi = arrivals.phi(silence);
        assert!(
            (phi - target).abs() < 1e-6 * target.max(1.0),
            "{target}: {phi}"
        );
    }
}

#[test]
fn opt_in_phi_fail_fails_a_regular_worker_before_the_timeout() {
    let config = DetectorConfig {
        phi_fail: 30.0,
        min_std_dev: ms(250),
        ..DetectorConfig::default()
    };
    let mut sim = Sim::new(config);
    for i in 0..20 {
        sim.heartbeat("w", secs(i));
    }
    sim.run_until(secs(100));
    let changes = sim.changes_of("w");
    assert_eq!(changes[0], (secs(22), Alive, Suspect));
    let failed = changes[1].0 - secs(19);
    assert!(failed > secs(3) && failed < secs(5), "{failed:?}");
    assert!(
        sim.log[1].1.reason.contains("phi_fail 30"),
        "{}",
        sim.log[1].1.reason
    );
    assert!(sim.log[1].1.phi >= 30.0 - 1e-6);
}

#[test]
fn validate_refuses_inconsistent_settings() {
    assert_eq!(DetectorConfig::default().validate(), Ok(()));
    assert_eq!(DetectorConfig::tuned().validate(), Ok(()));
    let tuned = DetectorConfig::tuned();
    assert_eq!(
        (
            tuned.suspect_after(),
            tuned.failure_timeout,
            tuned.reconnect_window
        ),
        (ms(300), ms(500), ms(200))
    );

    type Change = fn(&mut DetectorConfig);
    let cases: [(Change, &str); 12] = [
        (
            |c| c.heartbeat_interval = Duration::ZERO,
            "`heartbeat_interval` is zero",
        ),
        (
            |c| c.failure_timeout = Duration::ZERO,
            "`failure_timeout` is zero",
        ),
        (
            |c| c.suspect_after_missed = 0,
            "`suspect_after_missed` is zero",
        ),
        (|c| c.grace = Duration::ZERO, "`grace` is zero"),
        (
            |c| c.reconnect_window = Duration::ZERO,
            "`reconnect_window` is zero",
        ),
        (|c| c.min_std_dev = Duration::ZERO, "`min_std_dev` is zero"),
        (|c| c.history = 0, "`history` is zero"),
        (
            |c| c.heartbeat_interval = secs(5),
            "heartbeat_interval (5.0 s) must be shorter than failure_timeout (5.0 s)",
        ),
        (
            |c| c.suspect_after_missed = 5,
            "the suspect point (suspect_after_missed 5 × heartbeat_interval 1.0 s) must come \
             before failure_timeout (5.0 s)",
        ),
        (
            |c| c.phi_suspect = f64::NAN,
            "phi_suspect must be a finite number above 0",
        ),
        (
            |c| c.phi_suspect = 0.0,
            "phi_suspect must be a finite number above 0",
        ),
        (
            |c| c.phi_fail = 8.0,
            "phi_fail (8) must be above phi_suspect (8)",
        ),
    ];
    for (change, message) in cases {
        let mut config = DetectorConfig::default();
        change(&mut config);
        let error = config.validate().expect_err(message);
        assert!(error.to_string().contains(message), "{error} ≠ {message}");
        assert!(Detector::new(config).is_err());
    }
}
