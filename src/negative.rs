//! Negative controls: bugs put back on purpose, to show that the chaos checker
//! (`crate::chaos::checker`) catches what it guards against. Compiled only with the cargo
//! feature `negative-controls`; a build without it has neither the switches nor the code paths.
//!
//! A coordinator started with `--negative-control NAME` turns one on for its whole life
//! ([`set`]); `testfleet chaos --negative-control NAME` starts every coordinator so.
//!
//! * [`Control::AckBeforeFsync`]: the Raft log store reports appended entries durable as soon
//!   as they are queued, and its writer thread writes each batch of appends [`WRITE_DELAY`]
//!   later. A
//!   majority killed at once then loses entries the cluster acknowledged — the bug Jepsen found
//!   in NATS's lazy fsync.
//! * [`Control::NoFencing`]: apply accepts the result of a superseded attempt instead of
//!   recording it as stale — the attempt row gets the result — so a worker paused past its
//!   failure timeout, whose task was given to another, finishes it a second time.

use std::sync::OnceLock;
use std::time::Duration;

/// A bug that can be put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Control {
    AckBeforeFsync,
    NoFencing,
}

/// How much later than acknowledged an append is written under [`Control::AckBeforeFsync`].
pub const WRITE_DELAY: Duration = Duration::from_millis(300);

static ACTIVE: OnceLock<Control> = OnceLock::new();

/// Turns `control` on for this process (once; a second call is ignored).
pub fn set(control: Control) {
    if ACTIVE.set(control).is_ok() {
        tracing::warn!(
            ?control,
            "NEGATIVE CONTROL ON: this node runs with a bug put back"
        );
    }
}

/// Whether `control` is on in this process.
pub fn active(control: Control) -> bool {
    ACTIVE.get() == Some(&control)
}
