//! The receiving side of coordinator-to-coordinator Raft RPC: the `testfleet.raft.v1.RaftService`
//! gRPC service (`proto/raft.proto`), which hands what peers send to this node's [`RaftNode`].
//!
//! This is the trusted cluster service: only coordinators call it, and whatever it receives
//! goes straight into Raft. It is served on the same port as the client-facing
//! `testfleet.v1.Control` service, as a separate service; [`server`] builds it. The sending side
//! is [`super::network`].
//!
//! # Wire format
//!
//! Every payload is openraft's own request or response type, bincode-encoded inside a protobuf
//! `bytes` field ([`super::network::encode`] / [`super::network::decode`]): openraft's types
//! cross the wire unchanged, while protobuf and gRPC give a stable envelope, HTTP/2 and client
//! streaming for snapshots. A [`RaftReply`] carries either the encoded response (`ok`, which
//! includes protocol refusals such as a higher vote) or, when this node's Raft has stopped, the
//! encoded `openraft::errors::Fatal` (`raft_error`). A payload that does not decode is refused
//! with `INVALID_ARGUMENT`.
//!
//! # Snapshots
//!
//! `InstallSnapshot` is a client stream: a header (vote, meta, total size) and then data chunks.
//! The chunks are gathered into one `Vec<u8>` (the state machine's snapshot type is an in-memory
//! image, so the whole snapshot is in memory once here, as it is on the sender) and checked
//! against the announced size before [`RaftNode::install_full_snapshot`] installs it.

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use futures::StreamExt;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::leader_watch::{self, GoneRequest};
use super::network::{MAX_MESSAGE_SIZE, MAX_SNAPSHOT_CHUNK, WireError, decode, encode};
use super::stages::{Stage, StageClock};
use super::state_machine::SnapshotData;
use super::{RaftNode, TypeConfig};
use crate::raft_proto::raft_reply::Outcome;
use crate::raft_proto::raft_service_server::{self, RaftServiceServer};
use crate::raft_proto::snapshot_chunk::Item;
use crate::raft_proto::{
    RaftReply, RaftRequest, SnapshotChunk, SnapshotHeader, WatchLeaderEvent, WatchLeaderRequest,
};

/// The most snapshot memory reserved up front from the size a header announces; a larger
/// snapshot grows the buffer as its chunks arrive, so a header alone cannot make a node
/// allocate much.
const MAX_SNAPSHOT_PREALLOCATION: usize = 64 * 1024 * 1024;

/// The largest snapshot a node accepts (the image is held in memory while it installs). A
/// header announcing more is refused before any data is read.
pub const MAX_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// How long a snapshot stream may go without a message before it is dropped.
pub const SNAPSHOT_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The Raft service of one coordinator, answering its peers' Raft RPCs.
pub struct RaftService {
    /// The local Raft node every RPC is handed to.
    raft: RaftNode,
    /// Cancelled when the server shuts down: ends the `WatchLeader` streams it holds open.
    stop: CancellationToken,
    /// Where entries received from the leader are timed (`--stage-clock`).
    stages: Arc<StageClock>,
}

impl RaftService {
    /// A service that hands every RPC to `raft`; its open streams end when `stop` is cancelled.
    pub fn new(raft: RaftNode, stop: CancellationToken, stages: Arc<StageClock>) -> Self {
        RaftService { raft, stop, stages }
    }
}

/// The Raft service of `raft`, ready to add to a tonic server next to the `Control` service.
/// Cancel `stop` when the server shuts down, or the followers' `WatchLeader` streams hold
/// its graceful shutdown open. Entries received are timed on `stages`.
///
/// Accepts messages up to [`MAX_MESSAGE_SIZE`] (tonic's default is 4 MiB), enough for
/// AppendEntries batches of large commands.
pub fn server(
    raft: RaftNode,
    stop: CancellationToken,
    stages: Arc<StageClock>,
) -> RaftServiceServer<RaftService> {
    RaftServiceServer::new(RaftService::new(raft, stop, stages))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// The next message of a snapshot stream, or an error when none comes for [`SNAPSHOT_IDLE`].
async fn next_chunk(
    chunks: &mut Streaming<SnapshotChunk>,
) -> Result<Option<SnapshotChunk>, Status> {
    tokio::time::timeout(SNAPSHOT_IDLE, chunks.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "InstallSnapshot: no message for {SNAPSHOT_IDLE:?}; the stream is dropped"
            ))
        })?
}

/// Refuses a payload that does not decode.
fn bad_payload(e: WireError) -> Status {
    tracing::warn!("refusing a Raft RPC: {e}");
    Status::invalid_argument(e.to_string())
}

/// Decodes the openraft request inside a unary Raft RPC.
fn decode_request<T: DeserializeOwned>(
    what: &'static str,
    request: Request<RaftRequest>,
) -> Result<T, Status> {
    decode(what, &request.into_inner().payload).map_err(bad_payload)
}

/// The `Fatal` inside an error of a Raft method whose only error is `Fatal`.
fn into_fatal(e: RaftError<TypeConfig>) -> Fatal<TypeConfig> {
    match e {
        RaftError::APIError(never) => match never {},
        RaftError::Fatal(fatal) => fatal,
    }
}

/// Encodes the result of a Raft method as a reply.
fn reply<T: Serialize>(
    what: &'static str,
    result: Result<T, Fatal<TypeConfig>>,
) -> Result<Response<RaftReply>, Status> {
    reply_message(what, result).map(Response::new)
}

/// [`reply`], as the message alone (for a reply on a stream).
fn reply_message<T: Serialize>(
    what: &'static str,
    result: Result<T, Fatal<TypeConfig>>,
) -> Result<RaftReply, Status> {
    let outcome = match result {
        Ok(response) => encode(what, &response).map(Outcome::Ok),
        Err(fatal) => {
            tracing::debug!("answering a Raft RPC with this node's fatal error: {fatal}");
            encode("Raft error", &fatal).map(Outcome::RaftError)
        }
    };
    let outcome = outcome.map_err(|e| {
        tracing::error!("cannot answer a Raft RPC: {e}");
        Status::internal(e.to_string())
    })?;
    Ok(RaftReply {
        outcome: Some(outcome),
    })
}

/// The replies of an `AppendStream` call, one per request.
type ReplyStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftReply, Status>> + Send>>;

/// Hands one AppendEntries request (its bincode payload) to `raft` and encodes its answer.
async fn append_entries(
    raft: &RaftNode,
    stages: &StageClock,
    payload: &[u8],
) -> Result<RaftReply, Status> {
    let rpc: AppendEntriesRequest<TypeConfig> =
        decode("AppendEntries request", payload).map_err(bad_payload)?;
    if let (Some(first), Some(last)) = (rpc.entries.first(), rpc.entries.last()) {
        use openraft::entry::RaftEntry;
        stages.record(first.index(), last.index(), Stage::Received);
    }
    let result = raft.append_entries(rpc).await.map_err(into_fatal);
    reply_message("AppendEntriesResponse", result)
}

/// The stream a `WatchLeader` call gets: it never yields, it only ends.
type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchLeaderEvent, Status>> + Send>>;

#[tonic::async_trait]
impl raft_service_server::RaftService for RaftService {
    type WatchLeaderStream = WatchStream;
    type AppendStreamStream = ReplyStream;

    async fn watch_leader(
        &self,
        _request: Request<WatchLeaderRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let mut metrics = self.raft.server_metrics();
        let stop = self.stop.clone();
        let leading_ends = async move {
            while metrics.borrow_watched().state == ServerState::Leader {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = metrics.changed() => if changed.is_err() { break },
                }
            }
        };
        let stream = futures::stream::once(leading_ends).filter_map(|()| async { None });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn leader_gone(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: GoneRequest = decode_request("LeaderGone request", request)?;
        let answer = leader_watch::confirm_gone(&self.raft, &rpc).await;
        reply("LeaderGone reply", Ok(answer))
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        append_entries(&self.raft, &self.stages, &request.into_inner().payload)
            .await
            .map(Response::new)
    }

    /// Each request is handled as it arrives, in order, by the task that sends the replies
    /// (no task of its own). The stream ends when the caller ends or drops its side, when a
    /// payload does not decode (with that status), or when the server stops.
    async fn append_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let state = (
            request.into_inner(),
            self.raft.clone(),
            self.stages.clone(),
            self.stop.clone(),
        );
        let replies = futures::stream::unfold(Some(state), |state| async move {
            let (mut requests, raft, stages, stop) = state?;
            let next = tokio::select! {
                _ = stop.cancelled() => return None,
                next = requests.message() => next,
            };
            // A broken request stream (the caller went away) just ends the replies.
            let request = next.ok()??;
            match append_entries(&raft, &stages, &request.payload).await {
                Ok(reply) => Some((Ok(reply), Some((requests, raft, stages, stop)))),
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode_request("Vote request", request)?;
        let result = self.raft.vote(rpc).await.map_err(into_fatal);
        reply("VoteResponse", result)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode_request("PreVote request", request)?;
        let result = self.raft.pre_vote(rpc).await.map_err(into_fatal);
        reply("VoteResponse", result)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> =
            decode_request("TransferLeader request", request)?;
        let result = self.raft.handle_transfer_leader(rpc).await;
        reply("TransferLeaderResponse", result)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut chunks = request.into_inner();
        let header = match next_chunk(&mut chunks).await? {
            Some(SnapshotChunk {
                item: Some(Item::Header(header)),
            }) => header,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "InstallSnapshot: the first message must be the snapshot header",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "InstallSnapshot: the stream ended before the snapshot header",
                ));
            }
        };
        let SnapshotHeader { vote, meta, size } = header;
        let vote: VoteOf<TypeConfig> = decode("snapshot vote", &vote).map_err(bad_payload)?;
        let meta: SnapshotMetaOf<TypeConfig> =
            decode("snapshot meta", &meta).map_err(bad_payload)?;
        if size > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument(format!(
                "InstallSnapshot: the header announces {size} bytes, more than the limit of \
                 {MAX_SNAPSHOT_BYTES}"
            )));
        }
        let size = usize::try_from(size).map_err(|_| {
            Status::invalid_argument(format!(
                "InstallSnapshot: a snapshot of {size} bytes does not fit in memory"
            ))
        })?;

        let mut data: SnapshotData = Vec::with_capacity(size.min(MAX_SNAPSHOT_PREALLOCATION));
        while let Some(chunk) = next_chunk(&mut chunks).await? {
            match chunk.item {
                Some(Item::Data(bytes)) if bytes.len() > MAX_SNAPSHOT_CHUNK => {
                    return Err(Status::invalid_argument(format!(
                        "InstallSnapshot: a chunk of {} bytes, more than the limit of \
                         {MAX_SNAPSHOT_CHUNK}",
                        bytes.len()
                    )));
                }
                Some(Item::Data(bytes)) if data.len() + bytes.len() <= size => {
                    data.extend_from_slice(&bytes);
                }
                Some(Item::Data(bytes)) => {
                    return Err(Status::invalid_argument(format!(
                        "InstallSnapshot: {} bytes received, more than the {size} announced",
                        data.len() + bytes.len()
                    )));
                }
                Some(Item::Header(_)) => {
                    return Err(Status::invalid_argument(
                        "InstallSnapshot: a second snapshot header",
                    ));
                }
                None => {
                    return Err(Status::invalid_argument(
                        "InstallSnapshot: a message with neither header nor data",
                    ));
                }
            }
        }
        if data.len() != size {
            return Err(Status::invalid_argument(format!(
                "InstallSnapshot: the stream ended after {} of {size} bytes",
                data.len()
            )));
        }

        let snapshot = SnapshotOf::<TypeConfig, SnapshotData> {
            meta,
            snapshot: data,
        };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        reply("SnapshotResponse", result)
    }
}
