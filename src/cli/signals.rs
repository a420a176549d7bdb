//! Signal names for people: an attempt killed by signal 11 reads "killed by SIGSEGV (signal
//! 11)", and the `tasks` list shows `SIGSEGV` where an exit code would be. The numbers are
//! libc's, so the names are right for the platform the CLI runs on (the usual case: the same
//! as the workers').

/// Signals by number, from libc.
const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGSYS, "SIGSYS"),
];

/// `SIGSEGV` for 11; `SIG11` for a number without a name (real-time signals).
pub fn name(signal: i32) -> String {
    NAMES
        .iter()
        .find(|(number, _)| *number == signal)
        .map_or_else(|| format!("SIG{signal}"), |(_, name)| name.to_string())
}

/// "killed by SIGSEGV (signal 11)".
pub fn killed_by(signal: i32) -> String {
    format!("killed by {} (signal {signal})", name(signal))
}

/// A SQL expression naming the signal in the integer column `column` (`SIGSEGV`, or `SIG40`),
/// for listings that show it in place of an exit code.
pub fn sql_name(column: &str) -> String {
    let cases: String = NAMES
        .iter()
        .map(|(number, name)| format!(" WHEN {number} THEN '{name}'"))
        .collect();
    format!("CASE {column}{cases} ELSE 'SIG' || CAST({column} AS VARCHAR) END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_people_know_them() {
        assert_eq!(name(11), "SIGSEGV");
        assert_eq!(name(9), "SIGKILL");
        assert_eq!(name(40), "SIG40");
        assert_eq!(killed_by(11), "killed by SIGSEGV (signal 11)");
        let sql = sql_name("a.signal");
        assert!(
            sql.starts_with("CASE a.signal WHEN 1 THEN 'SIGHUP'"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ELSE 'SIG' || CAST(a.signal AS VARCHAR) END"),
            "{sql}"
        );
    }
}
