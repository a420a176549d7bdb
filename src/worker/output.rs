//! Sends an attempt's output to the leader while someone watches it (`testfleet logs`).
//!
//! The leader asks with `WatchOutput { task, attempt, from_offset }` over the worker's session
//! and stops with `UnwatchOutput` once nobody watches any more; nothing is sent otherwise. A
//! watch is a small task per attempt that reads the attempt's [`LiveOutput`] from an offset
//! and sends `Output` messages of at most [`MAX_OUTPUT_CHUNK`] bytes: first what the tail
//! holds, then a `caught_up` marker, then new output as it is printed, and `eof` once the
//! command's output is complete.
//!
//! Output goes through its own small channel, merged into the session's outbound stream, so a
//! flood of output never delays heartbeats or results. When that channel is full the watch
//! waits; the command does not (it writes into the bounded tail), and the watch reads on from
//! where it was: bytes that scrolled out of the tail meanwhile show as a jump in `offset`
//! (a gap the leader reports as skipped), never as memory growing.
//!
//! Watches belong to one session: [`Watches`] is dropped with it, which stops them all. The
//! leader watches again on the next session if someone still follows.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::executor::LiveOutput;
use crate::proto::{Output, WorkerMessage, worker_message};

/// The largest `data` of one `Output` message.
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// `Output` messages that may wait to be sent, per session: at most this many chunks of
/// output sit in memory beyond the attempts' tails.
pub const OUTPUT_BUFFER: usize = 16;

type Key = (String, u32);

/// One running watch.
struct Watch {
    /// The earliest offset a watcher asked for since the last read; the watch goes back there.
    rewind: watch::Sender<u64>,
    stop: CancellationToken,
}

/// The output watches of one session.
pub struct Watches {
    active: HashMap<Key, Watch>,
    tx: mpsc::Sender<WorkerMessage>,
}

fn message(output: Output) -> WorkerMessage {
    WorkerMessage {
        body: Some(worker_message::Body::Output(output)),
    }
}

impl Watches {
    /// Watches that send into `tx` (the session's output channel).
    pub fn new(tx: mpsc::Sender<WorkerMessage>) -> Self {
        Watches {
            active: HashMap::new(),
            tx,
        }
    }

    /// Starts a watch of `key` at `from`, or sends a running one back to `from` if that is
    /// earlier. Without `output` (the attempt is not running here) it answers `eof` at once.
    pub fn watch(&mut self, key: Key, from: u64, output: Option<&LiveOutput>) {
        self.active.retain(|_, w| !w.rewind.is_closed());
        let Some(output) = output else {
            let eof = Output {
                task_id: key.0,
                attempt: key.1,
                offset: from,
                eof: true,
                ..Output::default()
            };
            let _ = self.tx.try_send(message(eof));
            return;
        };
        if let Some(running) = self.active.get(&key) {
            running.rewind.send_modify(|at| *at = (*at).min(from));
            return;
        }
        let (rewind, rewinds) = watch::channel(u64::MAX);
        let stop = CancellationToken::new();
        tokio::spawn(stream(
            key.clone(),
            from,
            output.clone(),
            rewinds,
            stop.clone(),
            self.tx.clone(),
        ));
        self.active.insert(key, Watch { rewind, stop });
    }

    /// Stops the watch of `key`, if there is one.
    pub fn unwatch(&mut self, key: &Key) {
        if let Some(w) = self.active.remove(key) {
            w.stop.cancel();
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for w in self.active.values() {
            w.stop.cancel();
        }
    }
}

/// Sends `key`'s output from `pos` until it is complete or the watch is stopped.
async fn stream(
    key: Key,
    mut pos: u64,
    output: LiveOutput,
    mut rewinds: watch::Receiver<u64>,
    stop: CancellationToken,
    tx: mpsc::Sender<WorkerMessage>,
) {
    let mut progress = output.subscribe();
    let mut caught_up = false;
    let piece = |offset: u64, data: Vec<u8>, caught_up: bool, eof: bool| {
        message(Output {
            task_id: key.0.clone(),
            attempt: key.1,
            offset,
            data,
            caught_up,
            eof,
        })
    };
    loop {
        if rewinds.has_changed().unwrap_or(false) {
            pos = pos.min(*rewinds.borrow_and_update());
            caught_up = false;
        }
        progress.borrow_and_update();
        let read = output.read(pos, MAX_OUTPUT_CHUNK);
        let next = if !read.data.is_empty() {
            pos = read.offset + read.data.len() as u64;
            piece(read.offset, read.data, false, false)
        } else if !caught_up || read.progress.closed {
            caught_up = true;
            pos = read.offset;
            piece(pos, Vec::new(), true, read.progress.closed)
        } else {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = progress.changed() => {}
                changed = rewinds.changed() => if changed.is_ok() {
                    // `changed` marked the request seen: apply it here.
                    pos = pos.min(*rewinds.borrow_and_update());
                    caught_up = false;
                },
            }
            continue;
        };
        let eof = matches!(&next.body, Some(worker_message::Body::Output(o)) if o.eof);
        tokio::select! {
            () = stop.cancelled() => return,
            sent = tx.send(next) => if sent.is_err() { return },
        }
        if eof {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn output_of(m: WorkerMessage) -> Output {
        match m.body {
            Some(worker_message::Body::Output(o)) => o,
            other => panic!("not output: {other:?}"),
        }
    }

    async fn next(rx: &mut mpsc::Receiver<WorkerMessage>) -> Output {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an output message in time")
            .expect("the channel is open");
        output_of(m)
    }

    #[tokio::test]
    async fn a_watch_sends_the_tail_then_new_output_then_eof() {
        let output = LiveOutput::new(1024);
        output.push_for_test(b"one\n");
        let (tx, mut rx) = mpsc::channel(OUTPUT_BUFFER);
        let mut watches = Watches::new(tx);
        watches.watch(("t".into(), 1), 0, Some(&output));
        let first = next(&mut rx).await;
        assert_eq!((first.offset, first.data.as_slice()), (0, &b"one\n"[..]));
        assert!(next(&mut rx).await.caught_up);
        output.push_for_test(b"two\n");
        let second = next(&mut rx).await;
        assert_eq!((second.offset, second.data.as_slice()), (4, &b"two\n"[..]));
        // A second watcher wants it all: the watch goes back to the start.
        watches.watch(("t".into(), 1), 0, Some(&output));
        let again = next(&mut rx).await;
        assert_eq!(
            (again.offset, again.data.as_slice()),
            (0, &b"one\ntwo\n"[..])
        );
        assert!(next(&mut rx).await.caught_up);
        output.close();
        let end = next(&mut rx).await;
        assert!(end.eof && end.data.is_empty() && end.offset == 8, "{end:?}");
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_gets_a_gap_not_a_bigger_buffer() {
        let output = LiveOutput::new(8);
        let (tx, mut rx) = mpsc::channel(1);
        let mut watches = Watches::new(tx);
        output.push_for_test(b"abcd");
        watches.watch(("t".into(), 1), 0, Some(&output));
        // Nobody reads for a while: the command goes on printing into its bounded tail.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..100 {
            output.push_for_test(b"0123456789");
        }
        output.close();
        let first = next(&mut rx).await;
        assert_eq!(first.offset, 0);
        assert!(next(&mut rx).await.caught_up);
        let later = next(&mut rx).await;
        assert_eq!(
            later.offset,
            1004 - 8,
            "the watch jumps to what the tail still holds"
        );
        assert_eq!(later.data, b"23456789");
    }

    #[tokio::test]
    async fn an_attempt_not_running_here_answers_eof() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut watches = Watches::new(tx);
        watches.watch(("t".into(), 3), 7, None);
        let end = next(&mut rx).await;
        assert!(end.eof && end.attempt == 3 && end.offset == 7);
    }
}
