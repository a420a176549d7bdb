//! The hub against real channels: what a worker is told, what each subscriber gets.

use super::*;
use crate::proto::coordinator_message::Body;

fn session() -> (
    SessionSender,
    mpsc::Receiver<Result<CoordinatorMessage, Status>>,
) {
    mpsc::channel(64)
}

fn told(rx: &mut mpsc::Receiver<Result<CoordinatorMessage, Status>>) -> Option<Body> {
    rx.try_recv().ok().and_then(|m| m.ok()).and_then(|m| m.body)
}

fn output(offset: u64, data: &[u8]) -> Output {
    Output {
        task_id: "t".into(),
        attempt: 1,
        offset,
        data: data.to_vec(),
        ..Output::default()
    }
}

fn key() -> Key {
    ("t".to_string(), 1)
}

#[test]
fn clip_sends_each_byte_once_and_counts_what_was_lost() {
    assert_eq!(clip(0, 0, b"abc"), Some((0, &b"abc"[..])));
    assert_eq!(clip(3, 0, b"abc"), None, "already sent");
    assert_eq!(
        clip(2, 0, b"abcd"),
        Some((0, &b"cd"[..])),
        "an overlap is trimmed"
    );
    assert_eq!(clip(2, 5, b"xy"), Some((3, &b"xy"[..])), "a gap is counted");
    assert_eq!(clip(2, 2, b""), None);
}

#[tokio::test]
async fn the_first_subscriber_starts_the_watch_and_the_last_one_stops_it() {
    let hub = Arc::new(OutputHub::default());
    let (tx, mut worker) = session();
    let mut a = hub.subscribe(key(), "w1", tx.clone(), 0).unwrap();
    assert!(matches!(told(&mut worker), Some(Body::WatchOutput(w)) if w.from_offset == 0));
    let mut b = hub.subscribe(key(), "w1", tx.clone(), 5).unwrap();
    assert!(matches!(told(&mut worker), Some(Body::WatchOutput(w)) if w.from_offset == 5));

    hub.deliver("w1", output(0, b"hello"));
    hub.deliver("intruder", output(5, b"forged"));
    let chunk = |data: &[u8]| Relay::Chunk {
        offset: 0,
        data: Arc::new(data.to_vec()),
    };
    assert_eq!(a.relays.try_recv().unwrap(), chunk(b"hello"));
    assert_eq!(b.relays.try_recv().unwrap(), chunk(b"hello"));
    assert!(
        a.relays.try_recv().is_err(),
        "another worker's output is not relayed"
    );

    drop(a);
    assert!(told(&mut worker).is_none(), "one subscriber is left");
    drop(b);
    assert!(matches!(told(&mut worker), Some(Body::UnwatchOutput(_))));
    assert_eq!(hub.watched(), 0);
}

#[tokio::test]
async fn subscribers_and_chunks_are_bounded() {
    let hub = Arc::new(OutputHub::default());
    let (tx, _worker) = mpsc::channel(2 * MAX_SUBSCRIBERS);
    let subs: Vec<Subscription> = (0..MAX_SUBSCRIBERS)
        .map(|_| hub.subscribe(key(), "w1", tx.clone(), 0).unwrap())
        .collect();
    let refused = hub.subscribe(key(), "w1", tx.clone(), 0).err().unwrap();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);

    let mut sub = subs.into_iter().next().unwrap();
    hub.deliver("w1", output(0, &vec![b'x'; MAX_CHUNK + 1]));
    assert!(
        sub.relays.try_recv().is_err(),
        "an oversized chunk is dropped"
    );
    // A subscriber that does not read misses output; the hub never waits for it.
    for i in 0..(SUBSCRIBER_BUFFER as u64 + 10) {
        hub.deliver("w1", output(i, b"y"));
    }
    let mut got = 0;
    while sub.relays.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, SUBSCRIBER_BUFFER);
}

#[tokio::test]
async fn eof_ends_the_watch_and_a_reconnected_worker_is_watched_again() {
    let hub = Arc::new(OutputHub::default());
    let (old, mut old_rx) = session();
    let mut sub = hub.subscribe(key(), "w1", old.clone(), 0).unwrap();
    told(&mut old_rx);
    let (new, mut new_rx) = session();
    hub.resume(&key(), &new, 7);
    assert!(matches!(told(&mut new_rx), Some(Body::WatchOutput(w)) if w.from_offset == 7));
    hub.deliver(
        "w1",
        Output {
            eof: true,
            ..output(7, b"")
        },
    );
    assert_eq!(sub.relays.try_recv().unwrap(), Relay::Eof);
    assert_eq!(hub.watched(), 0);
    drop(sub);
    assert!(
        told(&mut new_rx).is_none(),
        "no unwatch after the worker ended the watch"
    );
}
