//! How an attempt's end is written into [`Command::FinishTask`](super::command::Command)'s
//! `exit_code`: an exit code, or the signal that killed the command.
//!
//! The command's fields cannot change (log entries outlive binaries, ARCHITECTURE.md
//! § Commands), so the signal rides in `exit_code` as a negative number, the convention of
//! Python's `subprocess`: `Some(-9)` means "killed by signal 9". Unix exit codes are 0..=255,
//! so no negative value was ever written before the convention existed. Apply accepts
//! `-MAX_SIGNAL..=-1` and rejects every other negative value ([`check`], deterministic); the
//! DuckDB rows split it into `exit_code` and `signal` columns ([`split`]) and loading joins
//! them again ([`join`]).

/// The highest signal number (Linux's `SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;

/// How an attempt's command ended, as far as the worker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signalled(i32),
}

/// The `exit_code` of a `FinishTask` for what a worker reported: a signal in
/// `1..=MAX_SIGNAL` wins (a killed process has no exit code); otherwise the exit code, unless
/// it is negative (no Unix process exits so; a worker that says so is not believed).
pub fn encode(exit_code: Option<i32>, signal: Option<i32>) -> Option<i32> {
    match (exit_code, signal) {
        (_, Some(sig)) if (1..=MAX_SIGNAL).contains(&sig) => Some(-sig),
        (Some(code), _) if code >= 0 => Some(code),
        _ => None,
    }
}

/// What a stored `exit_code` means.
pub fn decode(exit_code: Option<i32>) -> Option<Ending> {
    match exit_code? {
        code if code >= 0 => Some(Ending::Exited(code)),
        code => Some(Ending::Signalled(code.checked_neg()?)),
    }
}

/// The `exit_code` and `signal` columns of a stored `exit_code`.
pub fn split(exit_code: Option<i32>) -> (Option<i32>, Option<i32>) {
    match decode(exit_code) {
        Some(Ending::Exited(code)) => (Some(code), None),
        Some(Ending::Signalled(sig)) => (None, Some(sig)),
        None => (None, None),
    }
}

/// The stored `exit_code` of the `exit_code` and `signal` columns (the inverse of [`split`]).
pub fn join(exit_code: Option<i32>, signal: Option<i32>) -> Option<i32> {
    exit_code.or_else(|| signal.map(|sig| -sig))
}

/// Whether apply accepts `exit_code`: any exit code, or a signal within `1..=MAX_SIGNAL`.
pub fn check(exit_code: Option<i32>) -> Result<(), String> {
    match exit_code {
        Some(code) if code < -MAX_SIGNAL => Err(format!(
            "exit code {code} is negative and not a signal (-1 to -{MAX_SIGNAL} mean \"killed by \
             signal N\")"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_travels_as_a_negative_exit_code_and_comes_back() {
        assert_eq!(encode(None, Some(11)), Some(-11));
        assert_eq!(decode(Some(-11)), Some(Ending::Signalled(11)));
        assert_eq!(split(Some(-11)), (None, Some(11)));
        assert_eq!(join(None, Some(11)), Some(-11));
        assert_eq!(encode(Some(3), None), Some(3));
        assert_eq!(split(Some(3)), (Some(3), None));
        assert_eq!(join(Some(0), None), Some(0));
        assert_eq!(split(None), (None, None));
    }

    #[test]
    fn what_a_worker_cannot_mean_is_not_stored() {
        // Out-of-range signals and negative exit codes are dropped at the edge ...
        assert_eq!(encode(None, Some(0)), None);
        assert_eq!(encode(None, Some(MAX_SIGNAL + 1)), None);
        assert_eq!(encode(Some(-3), None), None);
        assert_eq!(encode(Some(1), Some(-4)), Some(1));
        // ... and refused in apply when a command carries them anyway.
        assert!(check(Some(-MAX_SIGNAL)).is_ok() && check(Some(-1)).is_ok());
        assert!(check(Some(255)).is_ok() && check(Some(i32::MAX)).is_ok() && check(None).is_ok());
        assert!(check(Some(-MAX_SIGNAL - 1)).is_err());
        assert!(check(Some(i32::MIN)).is_err());
        assert_eq!(decode(Some(i32::MIN)), None);
    }
}
