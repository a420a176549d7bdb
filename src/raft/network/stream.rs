//! Log replication over one long-lived gRPC stream per [`super::PeerClient`]
//! (`RaftService/AppendStream`, `proto/raft.proto`).
//!
//! A unary `AppendEntries` call costs an HTTP/2 stream of its own: request headers, response
//! headers and trailers (each HPACK-coded), the stream's setup and teardown on both ends, and on
//! the receiver a task spawned to serve it. A follower gets one such call per replication round
//! and per heartbeat, so on a lightly loaded cluster that fixed cost is most of a round's
//! network time. On a stream, a request is one DATA frame each way.
//!
//! openraft calls a client's `append_entries` one at a time (`&mut self`), so a stream has at
//! most one request unanswered and replies need no ids: the next reply answers the request
//! just sent. What breaks that pairing is a call dropped between its send and its reply
//! (openraft enforces its `hard_ttl` by dropping the future): the reply still comes and
//! would be read as the next request's. So a stream remembers that a reply is owed, and a call
//! that finds one owed drops the stream and opens a new one ([`AppendStream::usable`]). Any
//! failure on a stream drops it too; the next call opens another (one round trip).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::auth::AuthChannel;
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::{RaftReply, RaftRequest};

/// An open `AppendStream` call.
pub(super) struct AppendStream {
    /// Requests go out through this; dropping it ends the request stream.
    requests: mpsc::Sender<RaftRequest>,
    /// The callee's replies, one per request, in order.
    replies: Streaming<RaftReply>,
    /// A request was sent and its reply not read yet.
    owed: bool,
}

/// How a request on a stream failed; the stream is not used again after either.
#[derive(Debug)]
pub(super) enum StreamError {
    /// The call ended with this status (the callee refused a payload, or the transport failed).
    Status(tonic::Status),
    /// The stream ended without a status: `what` happened.
    Ended(&'static str),
}

impl AppendStream {
    /// Opens a stream on `client`. Fails with the callee's status, e.g. `UNIMPLEMENTED` from a
    /// build without `AppendStream`.
    pub(super) async fn open(
        client: &mut RaftServiceClient<AuthChannel>,
    ) -> Result<AppendStream, tonic::Status> {
        // One slot: a sender has at most one request unanswered.
        let (requests, outgoing) = mpsc::channel(1);
        let replies = client
            .append_stream(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        Ok(AppendStream {
            requests,
            replies,
            owed: false,
        })
    }

    /// Whether the next reply on this stream would answer the next request: false once a call
    /// was dropped between its request and its reply.
    pub(super) fn usable(&self) -> bool {
        !self.owed
    }

    /// Sends one request and reads its reply.
    pub(super) async fn call(&mut self, payload: Vec<u8>) -> Result<RaftReply, StreamError> {
        self.owed = true;
        self.requests
            .send(RaftRequest { payload })
            .await
            .map_err(|_| StreamError::Ended("the request stream is closed"))?;
        let reply = match self.replies.message().await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err(StreamError::Ended("the peer ended the stream")),
            Err(status) => return Err(StreamError::Status(status)),
        };
        self.owed = false;
        Ok(reply)
    }
}
