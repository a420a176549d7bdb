//! The `[self_healing]` section of a coordinator's config file: how often a node samples its
//! own health, where its thresholds lie, and what it does about them (ARCHITECTURE.md
//! § Self-health).
//!
//! ```toml
//! [self_healing]
//! sample_interval_ms = 10000      # how often each node samples itself
//! critical_samples = 3            # a leader critical this many samples in a row hands over
//! actions = true                  # false: sample, warn and record, but change nothing
//! memory_pressure_rss_bytes = 800000000   # absent: limits.rss_degraded of the machine's memory
//!
//! [self_healing.limits]           # the thresholds of `health::sampler::assess`
//! disk_free_critical_bytes = 1073741824
//! ```
//!
//! Every key is optional; the defaults are the behaviour from before the section existed (a
//! 10 s sample, three critical samples, [`HealthLimits::default`]), plus the disk and memory
//! relief actions, which `actions = false` turns off together with the leader's handover.
//! [`SelfHealing::validate`] names the key that is wrong as `self_healing.<key>` and says what
//! would be accepted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health::sampler::HealthLimits;

/// The self-healing settings of one coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfHealing {
    /// Act on what the samples say (hand leadership over, relieve disk and memory pressure).
    /// False: samples are still taken, recorded and warned about. Default true.
    pub actions: bool,
    /// How often a node samples its own health. Default 10000 ms.
    pub sample_interval_ms: u64,
    /// A leader whose health is critical on this many samples in a row hands leadership over.
    /// Default 3: one burst should not cost an election.
    pub critical_samples: u32,
    /// The thresholds a sample is judged by (`[self_healing.limits]`).
    pub limits: HealthLimits,
    /// RSS at or above which this node relieves memory pressure. Absent (the default):
    /// `limits.rss_degraded` of the machine's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_pressure_rss_bytes: Option<u64>,
    /// Under memory pressure DuckDB's `memory_limit` is lowered to this fraction of
    /// `duckdb_memory_limit`. Default 0.5.
    pub memory_limit_fraction: f64,
    /// DuckDB's own `memory_limit` comes back once this many samples in a row are free of
    /// memory pressure. Default 6 (a minute at the default interval).
    pub restore_after_samples: u32,
    /// The same relief action (disk, memory) runs at most once per this long; so does a
    /// record of a handover that found no follower to take over. Default 300000 ms.
    pub action_cooldown_ms: u64,
    /// While this node stays degraded or critical, the warning is repeated at most this
    /// often (a change of level is always logged). Default 300000 ms.
    pub warn_every_ms: u64,
    /// A follower may take over only when its log matches the leader's last index within
    /// this many entries. Default 1000.
    pub successor_max_lag: u64,
    /// A follower whose latest recorded sample is older than this many sample intervals is
    /// not chosen to take over (its health is unknown). Default 3.
    pub stale_after_samples: u32,
    /// Temporary files of this node (a snapshot's `*.tmp`, DuckDB's spill files) are removed
    /// under disk pressure only when at least this old and not open. Default 600000 ms.
    pub temp_file_min_age_ms: u64,
}

impl Default for SelfHealing {
    fn default() -> Self {
        SelfHealing {
            actions: true,
            sample_interval_ms: 10_000,
            critical_samples: 3,
            limits: HealthLimits::default(),
            memory_pressure_rss_bytes: None,
            memory_limit_fraction: 0.5,
            restore_after_samples: 6,
            action_cooldown_ms: 300_000,
            warn_every_ms: 300_000,
            successor_max_lag: 1000,
            stale_after_samples: 3,
            temp_file_min_age_ms: 600_000,
        }
    }
}

/// The shortest sample interval: `/proc` reads and a `statvfs` cost little, but a proposal
/// per node per sample goes through the Raft log.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The longest interval or wait any key may name: a day.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A key of `[self_healing]` whose value cannot work: the key as written in the file
/// (`self_healing.limits.rss_critical`), the value, and what to do instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl SelfHealing {
    /// How often a node samples itself.
    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_interval_ms)
    }

    /// Checks every key; the first wrong one is named.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |key: &str, value: String, reason: &str| Invalid {
            key: format!("self_healing.{key}"),
            value,
            reason: reason.to_owned(),
        };
        let max_ms = MAX_INTERVAL.as_millis() as u64;
        for (key, value, min) in [
            (
                "sample_interval_ms",
                self.sample_interval_ms,
                MIN_SAMPLE_INTERVAL.as_millis() as u64,
            ),
            ("action_cooldown_ms", self.action_cooldown_ms, 0),
            ("warn_every_ms", self.warn_every_ms, 0),
            ("temp_file_min_age_ms", self.temp_file_min_age_ms, 0),
        ] {
            if value < min || value > max_ms {
                return Err(bad(
                    key,
                    value.to_string(),
                    &format!("give between {min} and {max_ms} milliseconds (a day)"),
                ));
            }
        }
        for (key, value) in [
            ("critical_samples", self.critical_samples),
            ("restore_after_samples", self.restore_after_samples),
            ("stale_after_samples", self.stale_after_samples),
        ] {
            if value == 0 || value > 10_000 {
                return Err(bad(
                    key,
                    value.to_string(),
                    "give a number of samples from 1 to 10000",
                ));
            }
        }
        if !(self.memory_limit_fraction > 0.0 && self.memory_limit_fraction < 1.0) {
            return Err(bad(
                "memory_limit_fraction",
                self.memory_limit_fraction.to_string(),
                "give a fraction of duckdb_memory_limit above 0 and below 1, e.g. 0.5",
            ));
        }
        if self.memory_pressure_rss_bytes == Some(0) {
            return Err(bad(
                "memory_pressure_rss_bytes",
                "0".to_owned(),
                "give a size in bytes above 0, or leave the key out to use limits.rss_degraded \
                 of the machine's memory",
            ));
        }
        validate_limits(&self.limits).map_err(|(key, value, reason)| {
            bad(&format!("limits.{key}"), value.to_string(), &reason)
        })
    }
}

/// Checks [`HealthLimits`]: every fraction a number in its range, and each degraded threshold
/// on the near side of its critical one (else the critical check could never fire before the
/// degraded one, or would fire on a healthier value).
fn validate_limits(limits: &HealthLimits) -> Result<(), (&'static str, f64, String)> {
    let fraction = "give a fraction from 0 to 1";
    for (key, value) in [
        ("rss_degraded", limits.rss_degraded),
        ("rss_critical", limits.rss_critical),
        ("disk_free_degraded", limits.disk_free_degraded),
        ("disk_free_critical", limits.disk_free_critical),
        ("fds_degraded", limits.fds_degraded),
        ("fds_critical", limits.fds_critical),
        ("error_rate_degraded", limits.error_rate_degraded),
        ("error_rate_critical", limits.error_rate_critical),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err((key, value, fraction.to_owned()));
        }
    }
    if !(limits.cpu_degraded.is_finite() && limits.cpu_degraded > 0.0) {
        return Err((
            "cpu_degraded",
            limits.cpu_degraded,
            "give a positive fraction of one core, e.g. 0.9".to_owned(),
        ));
    }
    for (degraded, critical, d, c) in [
        (
            "rss_degraded",
            "rss_critical",
            limits.rss_degraded,
            limits.rss_critical,
        ),
        (
            "fds_degraded",
            "fds_critical",
            limits.fds_degraded,
            limits.fds_critical,
        ),
        (
            "error_rate_degraded",
            "error_rate_critical",
            limits.error_rate_degraded,
            limits.error_rate_critical,
        ),
    ] {
        if d > c {
            return Err((
                degraded,
                d,
                format!("it must not exceed {critical} ({c}); lower it or raise {critical}"),
            ));
        }
    }
    if limits.disk_free_degraded < limits.disk_free_critical {
        return Err((
            "disk_free_degraded",
            limits.disk_free_degraded,
            format!(
                "free space is degraded before it is critical, so it must be at least \
                 disk_free_critical ({}); raise it or lower disk_free_critical",
                limits.disk_free_critical
            ),
        ));
    }
    if limits.disk_free_degraded_bytes != 0
        && limits.disk_free_degraded_bytes < limits.disk_free_critical_bytes
    {
        return Err((
            "disk_free_degraded_bytes",
            limits.disk_free_degraded_bytes as f64,
            format!(
                "it must be 0 (off) or at least disk_free_critical_bytes ({}); raise it",
                limits.disk_free_critical_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CoordinatorArgs, CoordinatorConfig};

    /// Resolves a config file holding `text`, the database in a temporary directory.
    fn resolve(text: &str) -> Result<CoordinatorConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, text).unwrap();
        CoordinatorConfig::resolve(&CoordinatorArgs {
            config: Some(path),
            db_path: Some(dir.path().join("state.duckdb")),
            ..CoordinatorArgs::default()
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_the_behaviour_from_before_the_section() {
        let config = resolve("").unwrap();
        let healing = &config.self_healing;
        assert_eq!(healing, &SelfHealing::default());
        assert_eq!(healing.sample_interval(), Duration::from_secs(10));
        assert_eq!(healing.critical_samples, 3);
        assert_eq!(healing.limits, HealthLimits::default());
        assert!(healing.actions);
        assert_eq!(healing.memory_pressure_rss_bytes, None);
    }

    #[test]
    fn keys_are_read_from_the_file_and_the_rest_keep_their_defaults() {
        let config = resolve(
            r#"
[self_healing]
sample_interval_ms = 1000
critical_samples = 2
actions = false
memory_pressure_rss_bytes = 1048576

[self_healing.limits]
disk_free_critical_bytes = 16777216
disk_free_degraded_bytes = 33554432
"#,
        )
        .unwrap();
        let healing = config.self_healing;
        assert_eq!(healing.sample_interval(), Duration::from_secs(1));
        assert_eq!(healing.critical_samples, 2);
        assert!(!healing.actions);
        assert_eq!(healing.memory_pressure_rss_bytes, Some(1 << 20));
        assert_eq!(healing.limits.disk_free_critical_bytes, 16 << 20);
        assert_eq!(healing.limits.disk_free_degraded_bytes, 32 << 20);
        assert_eq!(healing.limits.rss_critical, 0.8, "untouched key");
        assert_eq!(healing.action_cooldown_ms, 300_000, "untouched key");
    }

    #[test]
    fn a_wrong_value_is_refused_naming_its_key_and_the_fix() {
        for (text, key, hint) in [
            (
                "[self_healing]\nsample_interval_ms = 10\n",
                "`self_healing.sample_interval_ms`",
                "between 100 and",
            ),
            (
                "[self_healing]\ncritical_samples = 0\n",
                "`self_healing.critical_samples`",
                "from 1 to 10000",
            ),
            (
                "[self_healing]\nmemory_limit_fraction = 1.5\n",
                "`self_healing.memory_limit_fraction`",
                "above 0 and below 1",
            ),
            (
                "[self_healing]\nmemory_pressure_rss_bytes = 0\n",
                "`self_healing.memory_pressure_rss_bytes`",
                "leave the key out",
            ),
            (
                "[self_healing.limits]\nrss_critical = 2.0\n",
                "`self_healing.limits.rss_critical`",
                "fraction from 0 to 1",
            ),
            (
                "[self_healing.limits]\nrss_degraded = 0.9\nrss_critical = 0.7\n",
                "`self_healing.limits.rss_degraded`",
                "must not exceed rss_critical",
            ),
            (
                "[self_healing.limits]\ndisk_free_degraded = 0.01\n",
                "`self_healing.limits.disk_free_degraded`",
                "at least disk_free_critical",
            ),
            (
                "[self_healing.limits]\ndisk_free_degraded_bytes = 1000\n",
                "`self_healing.limits.disk_free_degraded_bytes`",
                "0 (off) or at least",
            ),
        ] {
            let error = resolve(text).unwrap_err();
            assert!(
                error.contains(key) && error.contains(hint),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_the_parser() {
        let error = resolve("[self_healing]\nsample_every_ms = 1000\n").unwrap_err();
        assert!(error.contains("sample_every_ms"), "{error}");
        let error = resolve("[self_healing.limits]\ncpu_critical = 1.0\n").unwrap_err();
        assert!(error.contains("cpu_critical"), "{error}");
    }
}
