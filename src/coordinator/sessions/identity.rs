//! Who may use a worker name: one live process at a time.
//!
//! A worker's name is its identity in the log (its tasks, its history), and nothing in its
//! hello is authenticated. So a second process that says it is `w1` while `w1` is connected
//! must not take over `w1`'s session (and, with it, the reports on `w1`'s attempts): the
//! leader refuses it. The same process must still be able to come back after a network blip,
//! though, even before the leader has noticed that its old stream is dead. Each worker process
//! therefore picks a random session id once, when it starts, and sends it in every hello
//! (`Hello.session_id`); the rule ([`may_take`]) is:
//!
//! * a name with no session, or whose session is no longer alive — its stream closed, or
//!   nothing heard for the failure timeout (the health monitor fails such a worker) — may be
//!   taken by anyone;
//! * a live session is replaced only by a hello with the same, non-empty session id (the same
//!   process reconnecting);
//! * anything else is refused with [`NameTaken`], which names the host of the holder.
//!
//! A hello being registered holds the name the same way until its session opens, so two new
//! processes racing for a free name cannot both register. A worker that sends no session id
//! (an older version) is treated as a different process each time: after a blip it gets back
//! in once its old session is gone.

use std::time::{Duration, Instant};

/// Whoever holds a worker name right now: a live session, or a hello being registered.
#[derive(Clone, Copy, Debug)]
pub struct Holder<'a> {
    /// The session id of the holding process (empty for a worker that sends none).
    pub session_id: &'a str,
    /// The host it said it runs on.
    pub host: &'a str,
    /// When it was last heard from (its last heartbeat, or its hello).
    pub last_seen: Instant,
}

/// A hello refused because another process holds the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a worker named {worker} is already connected from {host}; give this one another --name, or \
     stop the other first"
)]
pub struct NameTaken {
    /// The name asked for.
    pub worker: String,
    /// The host of the process that holds it.
    pub host: String,
}

/// Whether a hello from process `session_id` may take `worker`, held by `holder`, at `now`;
/// a holder not heard from for `timeout` no longer counts.
pub fn may_take(
    worker: &str,
    holder: Option<Holder<'_>>,
    session_id: &str,
    now: Instant,
    timeout: Duration,
) -> Result<(), NameTaken> {
    let Some(holder) = holder else {
        return Ok(());
    };
    let alive = now.saturating_duration_since(holder.last_seen) < timeout;
    let same_process = !session_id.is_empty() && holder.session_id == session_id;
    if !alive || same_process {
        Ok(())
    } else {
        Err(NameTaken {
            worker: worker.to_string(),
            host: holder.host.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn holder(session_id: &str, last_seen: Instant) -> Holder<'_> {
        Holder {
            session_id,
            host: "box-a",
            last_seen,
        }
    }

    #[test]
    fn a_free_name_may_be_taken() {
        assert_eq!(may_take("w1", None, "p2", Instant::now(), TIMEOUT), Ok(()));
        assert_eq!(may_take("w1", None, "", Instant::now(), TIMEOUT), Ok(()));
    }

    #[test]
    fn another_process_is_refused_while_the_holder_is_alive() {
        let now = Instant::now();
        let seen = now - Duration::from_secs(4);
        let err = may_take("w1", Some(holder("p1", seen)), "p2", now, TIMEOUT).unwrap_err();
        assert_eq!(
            err,
            NameTaken {
                worker: "w1".into(),
                host: "box-a".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "a worker named w1 is already connected from box-a; give this one another --name, \
             or stop the other first"
        );
        // A process that sends no session id cannot prove it is the holder.
        assert!(may_take("w1", Some(holder("p1", seen)), "", now, TIMEOUT).is_err());
        assert!(may_take("w1", Some(holder("", seen)), "", now, TIMEOUT).is_err());
    }

    #[test]
    fn the_same_process_replaces_its_own_live_session() {
        let now = Instant::now();
        assert_eq!(
            may_take("w1", Some(holder("p1", now)), "p1", now, TIMEOUT),
            Ok(())
        );
    }

    #[test]
    fn a_silent_holder_no_longer_counts() {
        let now = Instant::now();
        let seen = now - TIMEOUT;
        assert_eq!(
            may_take("w1", Some(holder("p1", seen)), "p2", now, TIMEOUT),
            Ok(())
        );
        assert_eq!(
            may_take("w1", Some(holder("", seen)), "", now, TIMEOUT),
            Ok(())
        );
    }
}
