//! `AppendStream` from the sending side, against a scripted peer served over real gRPC on
//! loopback: replies stay paired with their requests when a call is dropped midway, and a
//! peer without the stream (an older build) is replicated to with unary calls.

use std::sync::Mutex;

use openraft::RaftNetworkFactory;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::raft_proto::raft_service_server::{self, RaftServiceServer};
use crate::raft_proto::{WatchLeaderEvent, WatchLeaderRequest};

type LogId = openraft::alias::LogIdOf<TypeConfig>;

/// A peer that answers every AppendEntries with `PartialSuccess(prev_log_id)`, so an answer
/// names the request it answers.
struct Peer {
    /// Whether it serves `AppendStream` (an older build does not).
    streams: bool,
    /// How long it takes over the request whose `prev_log_id` has this index.
    slow: Option<(u64, Duration)>,
    /// Each request as it came: which method, and its `prev_log_id` index.
    seen: Arc<Mutex<Vec<(&'static str, u64)>>>,
}

impl Peer {
    async fn answer(
        &self,
        method: &'static str,
        payload: &[u8],
    ) -> Result<RaftReply, tonic::Status> {
        let request: AppendEntriesRequest<TypeConfig> =
            decode("request", payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let index = request.prev_log_id.as_ref().map_or(0, |id| id.index);
        self.seen.lock().unwrap().push((method, index));
        if let Some((slow, delay)) = self.slow
            && slow == index
        {
            tokio::time::sleep(delay).await;
        }
        let response = AppendEntriesResponse::<TypeConfig>::PartialSuccess(request.prev_log_id);
        Ok(RaftReply {
            outcome: Some(Outcome::Ok(encode("response", &response).unwrap())),
        })
    }
}

type Replies =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftReply, Status>> + Send + 'static>>;
type Never = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<WatchLeaderEvent, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl raft_service_server::RaftService for Arc<Peer> {
    type WatchLeaderStream = Never;
    type AppendStreamStream = Replies;

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.answer("unary", &request.into_inner().payload)
            .await
            .map(Response::new)
    }

    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Replies>, Status> {
        if !self.streams {
            return Err(Status::unimplemented("not in this build"));
        }
        let peer = self.clone();
        let replies = futures::stream::unfold(
            (request.into_inner(), peer),
            |(mut requests, peer)| async move {
                let request = requests.message().await.ok()??;
                let reply = peer.answer("stream", &request.payload).await;
                Some((reply, (requests, peer)))
            },
        );
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("vote"))
    }
    async fn pre_vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("pre_vote"))
    }
    async fn transfer_leader(
        &self,
        _: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("transfer_leader"))
    }
    async fn install_snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("install_snapshot"))
    }
    async fn watch_leader(
        &self,
        _: Request<WatchLeaderRequest>,
    ) -> Result<Response<Never>, Status> {
        Err(Status::unimplemented("watch_leader"))
    }
    async fn leader_gone(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("leader_gone"))
    }
}

/// Serves `peer` on a loopback port and returns a client of node 1's network to it.
async fn client_to(peer: Arc<Peer>) -> PeerClient {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(peer))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Network::new(1, Credentials::none())
        .new_client(2, &BasicNode { addr })
        .await
}

fn peer(streams: bool, slow: Option<(u64, Duration)>) -> Arc<Peer> {
    Arc::new(Peer {
        streams,
        slow,
        seen: Arc::default(),
    })
}

/// A heartbeat-shaped request whose `prev_log_id` has index `index`.
fn request(index: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: VoteOf::<TypeConfig>::new(1, 1),
        prev_log_id: Some(log_id(index)),
        entries: Vec::new(),
        leader_commit: None,
    }
}

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

fn answered(response: AppendEntriesResponse<TypeConfig>) -> u64 {
    match response {
        AppendEntriesResponse::PartialSuccess(Some(id)) => id.index,
        other => panic!("unexpected response {other:?}"),
    }
}

#[tokio::test]
async fn requests_go_on_one_stream_and_each_answer_is_its_own() {
    let peer = peer(true, None);
    let mut client = client_to(peer.clone()).await;
    let option = RPCOption::new(Duration::from_secs(10));
    for index in 1..=5 {
        let response = client.append_entries(request(index), option.clone()).await;
        assert_eq!(answered(response.unwrap()), index);
    }
    let seen = peer.seen.lock().unwrap().clone();
    assert_eq!(seen, (1..=5).map(|i| ("stream", i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_call_dropped_before_its_answer_does_not_pair_that_answer_with_the_next_request() {
    // The peer sits on request 1 for a while and then answers it anyway.
    let peer = peer(true, Some((1, Duration::from_millis(300))));
    let mut client = client_to(peer.clone()).await;
    let option = RPCOption::new(Duration::from_secs(10));
    // Dropped midway, as openraft drops a call past its hard_ttl.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        client.append_entries(request(1), option.clone()),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the call was to be dropped before the answer"
    );

    // Without a new stream, this would read request 1's late answer as its own.
    let response = client.append_entries(request(2), option.clone()).await;
    assert_eq!(answered(response.unwrap()), 2);
    let response = client.append_entries(request(3), option).await;
    assert_eq!(answered(response.unwrap()), 3);
}

#[tokio::test]
async fn a_call_past_its_deadline_fails_and_the_next_one_is_answered() {
    let peer = peer(true, Some((1, Duration::from_millis(600))));
    let mut client = client_to(peer.clone()).await;
    // soft_ttl = 3/4 of this: 300 ms, shorter than the peer takes over request 1.
    let short = RPCOption::new(Duration::from_millis(400));
    let late = client.append_entries(request(1), short.clone()).await;
    assert!(matches!(late, Err(RPCError::Unreachable(_))), "{late:?}");
    let response = client.append_entries(request(2), short).await;
    assert_eq!(answered(response.unwrap()), 2);
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_unary_calls() {
    let peer = peer(false, None);
    let mut client = client_to(peer.clone()).await;
    let option = RPCOption::new(Duration::from_secs(10));
    for index in 1..=3 {
        let response = client.append_entries(request(index), option.clone()).await;
        assert_eq!(answered(response.unwrap()), index);
    }
    let seen = peer.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("unary", 1), ("unary", 2), ("unary", 3)]);
}
