//! Faults a worker injects into itself: a testing aid for recovery and the circuit-breaker
//! benchmark (`testfleet worker --inject-fault SPEC`, a hidden, repeatable flag;
//! ARCHITECTURE.md § Worker faults).
//!
//! Each fault drives the worker's *real* code paths rather than faking their results:
//!
//! * `spawn-error=ERRNO[,rate=R]` — a fraction `R` (default 1) of attempts fail to spawn with
//!   `ERRNO`, as the kernel would have failed them (`AttemptSpec::injected_spawn_error`), so the
//!   executor's classification decides the outcome and the fault category.
//! * `drop-session,every=DUR` — every `DUR` of a session, the worker drops it as a broken
//!   connection would, and reconnects the normal way; the process and its attempts live on.
//! * `stall-heartbeats,every=DUR,for=DUR` — every `every`, no heartbeats for `for`: the
//!   session stays open and attempts keep running and reporting, a hung-looking worker.
//! * `slow-heartbeats,factor=F` — heartbeats `F` times further apart than the leader asks.
//! * `withhold-results` — a wedged executor: attempts run, but their end is never reported;
//!   the worker goes on heartbeating and listing them as running until the leader cancels
//!   them (what the leader sees of an attempt stalled on a live worker).
//!
//! [`Fault`] is the parsed spec, [`Faults`] a worker's checked set of them, and [`Injector`]
//! the little state they need at run time: a generator seeded from the worker's name, so a run
//! draws the same spawn failures every time.

use std::str::FromStr;
use std::time::Duration;

/// The errnos `spawn-error` accepts, by name.
pub const SPAWN_ERRNOS: [(&str, i32); 6] = [
    ("ENOMEM", libc::ENOMEM),
    ("EMFILE", libc::EMFILE),
    ("ENFILE", libc::ENFILE),
    ("EAGAIN", libc::EAGAIN),
    ("ENOSPC", libc::ENOSPC),
    ("EROFS", libc::EROFS),
];

/// The accepted forms, for error messages and `--help`.
pub const FORMS: &str = "spawn-error=ERRNO[,rate=R] (ERRNO one of ENOMEM, EMFILE, ENFILE, \
     EAGAIN, ENOSPC, EROFS; R in (0, 1], default 1), drop-session,every=DUR, \
     stall-heartbeats,every=DUR,for=DUR (for shorter than every), slow-heartbeats,factor=F \
     (F at least 1), withhold-results; DUR like 500ms or 5s";

/// One injected fault, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// A fraction `rate` of spawns fail with `errno` instead of starting the command.
    SpawnError { errno: i32, rate: f64 },
    /// Each session is dropped `every` after the leader welcomed it.
    DropSession { every: Duration },
    /// From `every` after the start, and again every `every`, no heartbeats for `stall`.
    StallHeartbeats { every: Duration, stall: Duration },
    /// Heartbeats `factor` times further apart than the leader's interval.
    SlowHeartbeats { factor: f64 },
    /// No attempt's end is reported; ended attempts stay listed as running.
    WithholdResults,
}

impl Fault {
    /// The spec's first word.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::SpawnError { .. } => "spawn-error",
            Fault::DropSession { .. } => "drop-session",
            Fault::StallHeartbeats { .. } => "stall-heartbeats",
            Fault::SlowHeartbeats { .. } => "slow-heartbeats",
            Fault::WithholdResults => "withhold-results",
        }
    }
}

/// The spec again, as it would be given.
impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::SpawnError { errno, rate } => {
                let name = SPAWN_ERRNOS
                    .iter()
                    .find(|(_, known)| known == errno)
                    .map_or("?", |(name, _)| *name);
                write!(f, "spawn-error={name},rate={rate}")
            }
            Fault::DropSession { every } => {
                write!(f, "drop-session,every={}ms", every.as_millis())
            }
            Fault::StallHeartbeats { every, stall } => write!(
                f,
                "stall-heartbeats,every={}ms,for={}ms",
                every.as_millis(),
                stall.as_millis()
            ),
            Fault::SlowHeartbeats { factor } => write!(f, "slow-heartbeats,factor={factor}"),
            Fault::WithholdResults => write!(f, "withhold-results"),
        }
    }
}

/// A spec that is not one of [`FORMS`], or a set of faults that cannot go together.
#[derive(Debug, thiserror::Error)]
#[error("bad --inject-fault {spec:?}: {why}; accepted: {FORMS}")]
pub struct SpecError {
    /// The spec as given (its kind, for a kind given twice).
    spec: String,
    why: String,
}

impl FromStr for Fault {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Fault, SpecError> {
        let bad = |why: String| SpecError {
            spec: spec.to_string(),
            why,
        };
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or_default();
        let (kind, value) = match head.split_once('=') {
            Some((kind, value)) => (kind, Some(value)),
            None => (head, None),
        };
        let mut options = Options::default();
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(bad(format!("{part:?} is not KEY=VALUE")));
            };
            options.add(key, value).map_err(bad)?;
        }
        let fault = match (kind, value) {
            ("spawn-error", Some(name)) => {
                let errno = SPAWN_ERRNOS
                    .iter()
                    .find(|(known, _)| *known == name)
                    .map(|(_, errno)| *errno)
                    .ok_or_else(|| bad(format!("unknown errno {name:?}")))?;
                let rate = options.number("rate").map_err(bad)?.unwrap_or(1.0);
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(bad(format!("rate {rate} is not in (0, 1]")));
                }
                Fault::SpawnError { errno, rate }
            }
            ("spawn-error", None) => return Err(bad("spawn-error needs =ERRNO".into())),
            ("drop-session", None) => Fault::DropSession {
                every: options.duration("every").map_err(bad)?,
            },
            ("stall-heartbeats", None) => {
                let every = options.duration("every").map_err(bad)?;
                let stall = options.duration("for").map_err(bad)?;
                if stall >= every {
                    return Err(bad(format!(
                        "for ({stall:?}) must be shorter than every ({every:?})"
                    )));
                }
                Fault::StallHeartbeats { every, stall }
            }
            ("slow-heartbeats", None) => {
                let factor = options
                    .number("factor")
                    .map_err(bad)?
                    .ok_or_else(|| bad("factor=F is missing".into()))?;
                if !(factor.is_finite() && factor >= 1.0) {
                    return Err(bad(format!(
                        "factor {factor} is not a number of at least 1"
                    )));
                }
                Fault::SlowHeartbeats { factor }
            }
            ("withhold-results", None) => Fault::WithholdResults,
            (
                kind @ ("drop-session" | "stall-heartbeats" | "slow-heartbeats"
                | "withhold-results"),
                Some(_),
            ) => {
                return Err(bad(format!("{kind} takes no =VALUE of its own")));
            }
            (kind, _) => return Err(bad(format!("unknown fault {kind:?}"))),
        };
        options.finish().map_err(bad)?;
        Ok(fault)
    }
}

/// The `KEY=VALUE` options after a spec's kind; each must be used once.
#[derive(Default)]
struct Options<'a>(Vec<(&'a str, &'a str, bool)>);

impl<'a> Options<'a> {
    fn add(&mut self, key: &'a str, value: &'a str) -> Result<(), String> {
        if self.0.iter().any(|(known, _, _)| *known == key) {
            return Err(format!("{key} is given twice"));
        }
        self.0.push((key, value, false));
        Ok(())
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let entry = self.0.iter_mut().find(|(known, _, _)| *known == key)?;
        entry.2 = true;
        Some(entry.1)
    }

    fn number(&mut self, key: &str) -> Result<Option<f64>, String> {
        let Some(text) = self.take(key) else {
            return Ok(None);
        };
        text.parse()
            .map(Some)
            .map_err(|_| format!("{key} must be a number, not {text:?}"))
    }

    /// A required, positive duration (`plan::parse_duration`'s syntax).
    fn duration(&mut self, key: &str) -> Result<Duration, String> {
        let text = self
            .take(key)
            .ok_or_else(|| format!("{key}=DUR is missing"))?;
        match crate::plan::parse_duration(text)? {
            duration if duration.is_zero() => Err(format!("{key} must be above zero")),
            duration => Ok(duration),
        }
    }

    /// Refuses an option the kind does not take.
    fn finish(self) -> Result<(), String> {
        match self.0.iter().find(|(_, _, used)| !used) {
            Some((key, _, _)) => Err(format!("unknown option {key:?}")),
            None => Ok(()),
        }
    }
}

/// A worker's injected faults, checked as a set: any number of `spawn-error` (each drawn on
/// its own, in the order given), at most one of each other kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults(Vec<Fault>);

impl Faults {
    pub fn new(faults: Vec<Fault>) -> Result<Faults, SpecError> {
        for (i, fault) in faults.iter().enumerate() {
            let again = faults[..i].iter().any(|f| f.kind() == fault.kind());
            if again && !matches!(fault, Fault::SpawnError { .. }) {
                return Err(SpecError {
                    spec: fault.kind().to_string(),
                    why: "only spawn-error may be given more than once".into(),
                });
            }
        }
        Ok(Faults(faults))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Fault> {
        self.0.iter()
    }
}

/// The faults of one worker process as they play out.
#[derive(Debug)]
pub struct Injector {
    faults: Faults,
    /// SplitMix64 state, seeded from the worker's name.
    rng: u64,
}

impl Injector {
    /// `faults` for the worker `name`: the name seeds the spawn-error draws, so two runs of a
    /// worker fail the same attempts (by their order on the worker).
    pub fn new(faults: Faults, name: &str) -> Injector {
        // FNV-1a: a hash that does not change between Rust releases, unlike std's.
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Injector { faults, rng: seed }
    }

    /// A uniform draw in [0, 1) (SplitMix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The errno the next attempt's spawn fails with, if a `spawn-error` draws it. Every
    /// `spawn-error` draws once per attempt, whatever the others drew, so each keeps its
    /// sequence.
    pub fn spawn_error(&mut self) -> Option<i32> {
        let mut failed = None;
        for i in 0..self.faults.0.len() {
            if let Fault::SpawnError { errno, rate } = self.faults.0[i] {
                let hit = self.unit() < rate;
                if hit && failed.is_none() {
                    failed = Some(errno);
                }
            }
        }
        failed
    }

    /// How long a session lives before the worker drops it, counted from its welcome.
    pub fn session_lifetime(&self) -> Option<Duration> {
        self.faults.iter().find_map(|fault| match fault {
            Fault::DropSession { every } => Some(*every),
            _ => None,
        })
    }

    /// Whether heartbeats are stalled `since_start` after the worker started.
    pub fn heartbeats_stalled(&self, since_start: Duration) -> bool {
        self.faults.iter().any(|fault| match fault {
            Fault::StallHeartbeats { every, stall } => {
                let into_period = since_start.as_nanos() % every.as_nanos().max(1);
                since_start >= *every && into_period < stall.as_nanos()
            }
            _ => false,
        })
    }

    /// Whether attempts' ends are withheld (`withhold-results`).
    pub fn withholds_results(&self) -> bool {
        self.faults.iter().any(|f| *f == Fault::WithholdResults)
    }

    /// The interval between heartbeats, given the one the leader asks for.
    pub fn heartbeat_interval(&self, asked: Duration) -> Duration {
        self.faults
            .iter()
            .find_map(|fault| match fault {
                Fault::SlowHeartbeats { factor } => Some(asked.mul_f64(*factor)),
                _ => None,
            })
            .unwrap_or(asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Fault, String> {
        spec.parse::<Fault>().map_err(|e| e.to_string())
    }

    #[test]
    fn good_specs_parse() {
        let cases = [
            (
                "spawn-error=EMFILE",
                Fault::SpawnError {
                    errno: libc::EMFILE,
                    rate: 1.0,
                },
            ),
            (
                "spawn-error=ENOSPC,rate=0.25",
                Fault::SpawnError {
                    errno: libc::ENOSPC,
                    rate: 0.25,
                },
            ),
            (
                "drop-session,every=1s",
                Fault::DropSession {
                    every: Duration::from_secs(1),
                },
            ),
            (
                "stall-heartbeats,every=1500ms,for=500ms",
                Fault::StallHeartbeats {
                    every: Duration::from_millis(1500),
                    stall: Duration::from_millis(500),
                },
            ),
            ("withhold-results", Fault::WithholdResults),
            (
                "stall-heartbeats,for=3s,every=1m",
                Fault::StallHeartbeats {
                    every: Duration::from_secs(60),
                    stall: Duration::from_secs(3),
                },
            ),
            (
                "slow-heartbeats,factor=2.5",
                Fault::SlowHeartbeats { factor: 2.5 },
            ),
        ];
        for (spec, fault) in cases {
            assert_eq!(parse(spec), Ok(fault), "{spec}");
            // Shown as a spec that parses back to the same fault.
            assert_eq!(parse(&fault.to_string()), Ok(fault), "{fault}");
        }
        for (name, errno) in SPAWN_ERRNOS {
            let fault = parse(&format!("spawn-error={name}")).unwrap();
            assert_eq!(fault, Fault::SpawnError { errno, rate: 1.0 });
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong_and_list_the_accepted_forms() {
        let cases = [
            ("", "unknown fault \"\""),
            ("crash", "unknown fault \"crash\""),
            ("spawn-error", "spawn-error needs =ERRNO"),
            ("spawn-error=ENOENT", "unknown errno \"ENOENT\""),
            ("spawn-error=emfile", "unknown errno \"emfile\""),
            ("spawn-error=EMFILE,rate=0", "rate 0 is not in (0, 1]"),
            ("spawn-error=EMFILE,rate=1.5", "rate 1.5 is not in (0, 1]"),
            ("spawn-error=EMFILE,rate=NaN", "rate NaN is not in (0, 1]"),
            (
                "spawn-error=EMFILE,rate=half",
                "rate must be a number, not \"half\"",
            ),
            (
                "spawn-error=EMFILE,rate=0.5,rate=0.5",
                "rate is given twice",
            ),
            ("spawn-error=EMFILE,every=1s", "unknown option \"every\""),
            ("spawn-error=EMFILE,0.5", "\"0.5\" is not KEY=VALUE"),
            ("drop-session", "every=DUR is missing"),
            ("drop-session=1s", "drop-session takes no =VALUE of its own"),
            (
                "withhold-results=yes",
                "withhold-results takes no =VALUE of its own",
            ),
            ("drop-session,every=0s", "every must be above zero"),
            ("drop-session,every=1", "bad duration \"1\""),
            ("drop-session,every=1s,for=1s", "unknown option \"for\""),
            ("stall-heartbeats,every=5s", "for=DUR is missing"),
            (
                "stall-heartbeats,every=5s,for=5s",
                "for (5s) must be shorter than every (5s)",
            ),
            ("slow-heartbeats", "factor=F is missing"),
            (
                "slow-heartbeats,factor=0.5",
                "factor 0.5 is not a number of at least 1",
            ),
            (
                "slow-heartbeats,factor=inf",
                "factor inf is not a number of at least 1",
            ),
        ];
        for (spec, why) in cases {
            let error = parse(spec).expect_err(spec);
            assert!(error.contains(why), "{spec}: {error}");
            assert!(error.contains("bad --inject-fault"), "{spec}: {error}");
            assert!(error.contains(FORMS), "{spec}: {error}");
        }
        // The whole spec is named, not just the part that is wrong.
        let error = parse("spawn-error=EMFILE,rate=2").unwrap_err();
        assert!(error.contains("\"spawn-error=EMFILE,rate=2\""), "{error}");
    }

    #[test]
    fn only_spawn_errors_may_be_given_more_than_once() {
        let faults =
            |specs: &[&str]| Faults::new(specs.iter().map(|s| s.parse().unwrap()).collect());
        assert!(faults(&["spawn-error=EMFILE,rate=0.1", "spawn-error=ENOSPC,rate=0.1"]).is_ok());
        assert!(faults(&["drop-session,every=1s", "slow-heartbeats,factor=2"]).is_ok());
        let error = faults(&["drop-session,every=1s", "drop-session,every=2s"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"drop-session\": only spawn-error may be given more"),
            "{error}"
        );
    }

    fn injector(specs: &[&str], name: &str) -> Injector {
        let faults = specs.iter().map(|s| s.parse().unwrap()).collect();
        Injector::new(Faults::new(faults).unwrap(), name)
    }

    fn draws(injector: &mut Injector, n: usize) -> Vec<Option<i32>> {
        (0..n).map(|_| injector.spawn_error()).collect()
    }

    #[test]
    fn the_seeded_rate_fails_about_that_fraction_and_the_same_attempts_every_run() {
        let n = 20_000;
        let mut first = injector(&["spawn-error=EAGAIN,rate=0.3"], "w1");
        let sequence = draws(&mut first, n);
        let failed = sequence
            .iter()
            .filter(|e| **e == Some(libc::EAGAIN))
            .count();
        let rate = failed as f64 / n as f64;
        assert!((rate - 0.3).abs() < 0.015, "rate {rate}");
        assert!(
            sequence
                .iter()
                .all(|e| e.is_none() || *e == Some(libc::EAGAIN))
        );
        // The same name draws the same sequence; another name another one.
        let mut again = injector(&["spawn-error=EAGAIN,rate=0.3"], "w1");
        assert_eq!(draws(&mut again, n), sequence);
        let mut other = injector(&["spawn-error=EAGAIN,rate=0.3"], "w2");
        assert_ne!(draws(&mut other, n), sequence);
    }

    #[test]
    fn rate_one_fails_every_spawn_and_no_spawn_error_fails_none() {
        let mut always = injector(&["spawn-error=EMFILE"], "w1");
        assert!(
            draws(&mut always, 1000)
                .iter()
                .all(|e| *e == Some(libc::EMFILE))
        );
        let mut never = injector(&["drop-session,every=1s"], "w1");
        assert!(draws(&mut never, 1000).iter().all(Option::is_none));
    }

    #[test]
    fn several_spawn_errors_each_keep_their_own_rate() {
        let n = 20_000;
        let mut both = injector(
            &["spawn-error=EMFILE,rate=0.5", "spawn-error=ENOSPC,rate=0.5"],
            "w1",
        );
        let sequence = draws(&mut both, n);
        let count = |errno| sequence.iter().filter(|e| **e == Some(errno)).count() as f64;
        // The first wins when both draw: 1/2 of attempts, then 1/2 of the other half.
        assert!((count(libc::EMFILE) / n as f64 - 0.5).abs() < 0.015);
        assert!((count(libc::ENOSPC) / n as f64 - 0.25).abs() < 0.015);
    }

    #[test]
    fn heartbeats_stall_for_a_while_once_every_period() {
        let stalls = injector(&["stall-heartbeats,every=10s,for=3s"], "w1");
        let at = |s: f64| stalls.heartbeats_stalled(Duration::from_secs_f64(s));
        let stalled: Vec<bool> = [0.0, 2.0, 9.9, 10.0, 12.9, 13.0, 19.9, 20.0, 22.0, 23.5]
            .iter()
            .map(|s| at(*s))
            .collect();
        assert_eq!(
            stalled,
            [
                false, false, false, true, true, false, false, true, true, false
            ]
        );
        assert!(!injector(&[], "w1").heartbeats_stalled(Duration::from_secs(10)));
    }

    #[test]
    fn slow_heartbeats_stretch_the_leaders_interval_and_sessions_last_their_lifetime() {
        let asked = Duration::from_millis(1000);
        let slow = injector(&["slow-heartbeats,factor=2.5"], "w1");
        assert_eq!(slow.heartbeat_interval(asked), Duration::from_millis(2500));
        assert_eq!(slow.session_lifetime(), None);
        let dropping = injector(&["drop-session,every=1s"], "w1");
        assert_eq!(dropping.heartbeat_interval(asked), asked);
        assert_eq!(dropping.session_lifetime(), Some(Duration::from_secs(1)));
    }
}
