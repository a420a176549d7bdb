//! The sending side of coordinator-to-coordinator Raft RPC: openraft's network, over gRPC.
//!
//! openraft asks a [`RaftNetworkFactory`] for one client per peer and drives it through
//! [`RaftNetworkV2`]. Here the factory is [`Network`] and the per-peer client is
//! [`PeerClient`]; each RPC becomes a call to the peer's `testfleet.raft.v1.RaftService`
//! (`proto/raft.proto`), whose receiving side is [`super::service`]. That service is the
//! trusted cluster service: it is served on the same port as the client-facing
//! `testfleet.v1.Control` service, but only coordinators call it.
//!
//! # Wire format
//!
//! Protobuf is only the envelope. Every request and response is openraft's own type encoded with
//! bincode 2 (serde, standard configuration, the same encoding the log store uses) inside a
//! protobuf `bytes` field, see [`encode`] and [`decode`]. openraft's types thus cross the wire
//! unchanged and an openraft upgrade needs no schema work, while protobuf and gRPC supply a stable
//! envelope, HTTP/2 multiplexing, deadlines and client streaming. A reply separates a Raft-level
//! error (the peer's Raft has stopped) from a transport failure. bincode is positional, so both
//! ends must run the same openraft and Testfleet types.
//!
//! # Connections
//!
//! [`Network`] keeps one lazily connected [`Channel`] per peer address, shared by every client
//! openraft creates for that peer (replication, heartbeats, snapshots, elections): HTTP/2
//! multiplexes them on one TCP connection, so a snapshot in flight does not block heartbeats.
//! A channel connects on first use and reconnects after a failure by itself; HTTP/2 keepalive
//! pings drop a connection to a peer that vanished without closing it.
//!
//! [`Channel`]: tonic::transport::Channel
//!
//! # Replication on a stream
//!
//! AppendEntries (replication and heartbeats) goes over one long-lived `AppendStream` call per
//! client instead of one unary call each: a request and its reply are one HTTP/2 DATA frame
//! each way, with no stream setup, headers or trailers, and no task spawned on the receiver.
//! That took a quarter off the CPU of a consensus round and 0.15 ms off one writer's commit
//! (BENCHMARKS.md). openraft sends a client's requests one at a time, so the next reply answers
//! the last request; a call dropped before its reply leaves the stream unpaired, and the next
//! call opens a new one (the private `stream` module). A peer that answers `UNIMPLEMENTED` (a
//! build from before the stream) gets unary `AppendEntries` calls from that client on, so a
//! rolling upgrade keeps replicating.
//!
//! # Timeouts and errors
//!
//! Every unary RPC, and every request on the stream, is bounded by [`RPCOption::soft_ttl`]
//! (openraft derives it from its `hard_ttl`, which it may enforce by dropping the call;
//! `soft_ttl` ends the call first, with a meaningful error). A unary call's deadline also
//! travels to the peer as `grpc-timeout`. Errors map onto openraft's retry policy:
//!
//! * no connection, refused connection, a broken stream, an expired deadline, or a peer whose
//!   Raft has stopped → [`Unreachable`]: openraft backs off (by [`Config::backoff`], as
//!   [`PeerClient`] does not override [`RaftNetworkV2::backoff`]) before retrying;
//! * a payload that one end could not encode or decode → [`NetworkError`]: openraft retries at
//!   once, then backs off after repeated failures.
//!
//! A peer's Raft can only fail with `Fatal` (it has stopped); protocol refusals such as a higher
//! vote are ordinary responses. openraft's [`RPCError`] for these methods has no usable
//! `RemoteError` (its remote error type is `Infallible`) and [`StreamingError`] has none at all,
//! so a stopped peer is reported as [`Unreachable`].
//!
//! # Snapshots
//!
//! [`PeerClient::full_snapshot`] streams a snapshot as one header (vote, meta, size) and then
//! chunks of [`RPCOption::snapshot_chunk_size`] bytes (openraft's `snapshot_max_chunk_size`,
//! clamped to [`MIN_SNAPSHOT_CHUNK`]..=[`MAX_SNAPSHOT_CHUNK`]; [`DEFAULT_SNAPSHOT_CHUNK`] when
//! unset). The chunks go through a channel of two slots, so at most a few chunks beyond what
//! HTTP/2 flow control admits are in memory. Each chunk must be taken within `soft_ttl` (from
//! openraft's `install_snapshot_timeout`), and the peer must answer within `soft_ttl` after the
//! last chunk: its answer comes after it has installed the snapshot, so
//! `install_snapshot_timeout` has to cover a follower's install of the largest snapshot.
//!
//! [`Config::backoff`]: openraft::Config::backoff

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{
    Fatal, NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::auth::{AuthChannel, Credentials};

use super::TypeConfig;
use super::stages::{Stage, StageClock};
use super::state_machine::SnapshotData;
use crate::raft_proto::raft_reply::Outcome;
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::snapshot_chunk::Item;
use crate::raft_proto::{RaftReply, RaftRequest, SnapshotChunk, SnapshotHeader};
use stream::{AppendStream, StreamError};

mod stream;

/// The largest gRPC message either end of the Raft service accepts. AppendEntries batches of
/// large commands are the biggest unary messages; snapshot chunks are far smaller.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Snapshot chunk size when openraft does not say (it normally passes its
/// `snapshot_max_chunk_size`, 3 MiB by default).
pub const DEFAULT_SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// The smallest snapshot chunk sent; smaller ones would only add per-message overhead.
pub const MIN_SNAPSHOT_CHUNK: usize = 16 * 1024;

/// The largest snapshot chunk sent: well below [`MAX_MESSAGE_SIZE`], so that a chunk plus its
/// envelope always fits.
pub const MAX_SNAPSHOT_CHUNK: usize = 16 * 1024 * 1024;

/// How long establishing a TCP connection to a peer may take. A peer on the cluster network
/// answers in well under this; a dead one should not hold up an election.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// How often an HTTP/2 ping is sent on a peer connection, idle or not.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a ping may go unanswered before the connection is dropped and rebuilt.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many snapshot chunks may wait between the producer and the HTTP/2 stream.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 2;

/// Why a value could not be turned into wire bytes or back.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// bincode could not encode the value.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded, for the message.
        what: &'static str,
        /// bincode's reason.
        source: bincode::error::EncodeError,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded, for the message.
        what: &'static str,
        /// bincode's reason.
        source: bincode::error::DecodeError,
    },
    /// A value was decoded but bytes were left over: the two ends disagree on the type.
    #[error("cannot decode {what}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// What was being decoded, for the message.
        what: &'static str,
        /// How many bytes followed the value.
        extra: usize,
    },
}

/// Encodes an openraft value for a protobuf `bytes` field of the Raft service.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|source| WireError::Encode { what, source })
}

/// The length of [`encode`]'s bytes for `value`, without making them.
pub fn encoded_len<T: Serialize>(what: &'static str, value: &T) -> Result<usize, WireError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard())
        .map_err(|source| WireError::Encode { what, source })?;
    Ok(size.bytes_written)
}

/// The most bytes one AppendEntries request may encode to: [`MAX_MESSAGE_SIZE`] less room for
/// the gRPC envelope. Replication batches stay far below it: the log store's reads stop after
/// about a megabyte (`log_store::LIMITED_READ_MAX_BYTES`, at least one entry), and one entry
/// is at most `state::limits::MAX_ENTRY_BYTES`.
pub const APPEND_BUDGET: usize = MAX_MESSAGE_SIZE - 1024 * 1024;

/// How much longer than openraft's deadline a request of `bytes` may take: 200 ms per MiB.
///
/// openraft gives every AppendEntries the heartbeat interval (100 ms here) as its deadline,
/// which an empty or small batch meets easily; a batch carrying a large job (up to
/// `state::limits::MAX_ENTRY_BYTES`) must also be encoded, sent, decoded and fsynced by the
/// follower before it answers. Measured: a 15 MB entry to a lagging follower missed the
/// deadline on a loaded 2-core machine every time, so that follower never caught up. The
/// allowance only delays noticing a peer that dies mid-transfer of a large batch; heartbeats,
/// which carry the leader's lease, are requests of their own on the same HTTP/2 connection
/// and go on meanwhile.
pub fn transfer_allowance(bytes: usize) -> Duration {
    const PER_MIB: Duration = Duration::from_millis(200);
    PER_MIB
        * u32::try_from(bytes / (1024 * 1024))
            .unwrap_or(u32::MAX / 1024)
            .min(1 << 16)
}

/// Decodes a value written by [`encode`]; the bytes must hold exactly one value.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|source| WireError::Decode { what, source })?;
    if read != bytes.len() {
        return Err(WireError::TrailingBytes {
            what,
            extra: bytes.len() - read,
        });
    }
    Ok(value)
}

/// openraft's network factory: hands out a [`PeerClient`] per peer over a shared [`Channel`].
///
/// Cheap to clone; clones share the channels.
///
/// [`Channel`]: tonic::transport::Channel
#[derive(Clone)]
pub struct Network {
    /// This node's Raft id: openraft never asks for a client to it.
    local_id: u64,
    /// One channel per peer address.
    channels: PeerChannels,
    /// Whether each peer answered its last RPC, to log a change once.
    reachability: Reachability,
    /// Where entries sent to followers and their answers are timed (`--stage-clock`).
    stages: Arc<StageClock>,
}

impl Network {
    /// A network for the node `local_id` that presents `credentials` (its peer token and
    /// certificate) to every peer; it connects to nothing until an RPC is sent.
    pub fn new(local_id: u64, credentials: Credentials) -> Self {
        Network {
            local_id,
            channels: PeerChannels::new(credentials),
            reachability: Reachability::default(),
            stages: Arc::new(StageClock::new(false)),
        }
    }

    /// This network, timing the entries it sends on `clock`.
    pub fn with_stage_clock(mut self, clock: Arc<StageClock>) -> Self {
        self.stages = clock;
        self
    }

    /// A Raft service client for the peer at `addr`, on the shared channel.
    pub(crate) fn client(
        &self,
        addr: &str,
    ) -> Result<RaftServiceClient<AuthChannel>, tonic::transport::Error> {
        Ok(RaftServiceClient::new(self.channels.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }
}

/// Whether each peer answered its last RPC. openraft retries an unreachable peer many times a
/// second and logs each failure; this logs the change of state instead, once each way.
#[derive(Clone, Default)]
pub(crate) struct Reachability {
    unreachable: Arc<Mutex<HashMap<u64, bool>>>,
}

impl Reachability {
    /// Records the outcome of an RPC to `target` (`Some(why)` when it did not answer) and
    /// logs it when it differs from the last one. Returns whether it changed.
    pub(crate) fn note(&self, target: u64, addr: &str, unreachable: Option<&str>) -> bool {
        let now = unreachable.is_some();
        let before = self
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target, now)
            .unwrap_or(false);
        match unreachable {
            Some(why) if !before => {
                tracing::warn!("peer {target} at {addr} does not answer: {why}")
            }
            None if before => tracing::info!("peer {target} at {addr} answers again"),
            _ => return false,
        }
        true
    }
}

/// One lazily connected [`Channel`] per peer address (`host:port`), created on first use and
/// shared by every caller after (a channel reconnects by itself after a failure). Cheap to
/// clone; clones share the channels.
#[derive(Clone)]
pub(crate) struct PeerChannels {
    /// A `std::sync::Mutex`, not a Tokio one: held only to look up or insert, never across an
    /// `.await`.
    channels: Arc<Mutex<HashMap<String, AuthChannel>>>,
    /// What this node presents to its peers.
    credentials: Credentials,
}

impl PeerChannels {
    pub(crate) fn new(credentials: Credentials) -> PeerChannels {
        PeerChannels {
            channels: Default::default(),
            credentials,
        }
    }

    /// The channel to `addr`, created (unconnected) on first use.
    pub(crate) fn get(&self, addr: &str) -> Result<AuthChannel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self
            .credentials
            .wrap(endpoint(&self.credentials, addr)?.connect_lazy());
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// The endpoint for a peer's `host:port` (an address with a scheme is taken as is).
fn endpoint(credentials: &Credentials, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(credentials
        .endpoint(addr)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        debug_assert_ne!(
            target, self.local_id,
            "openraft asked for a network client to the local node"
        );
        let client = self.client(&node.addr).map_err(|e| {
            Unreachable::from_string(format!(
                "node {target} has an unusable address {:?}: {e}",
                node.addr
            ))
        });
        PeerClient {
            target,
            addr: node.addr.clone(),
            client,
            reachability: self.reachability.clone(),
            stages: self.stages.clone(),
            stream: None,
            unary_only: false,
        }
    }
}

/// Sends Raft RPCs to one peer; created by [`Network`].
pub struct PeerClient {
    /// Shared by every client of this node: logs a peer going silent or answering again once.
    reachability: Reachability,
    /// The peer's Raft id.
    target: u64,
    /// The peer's address, for error messages.
    addr: String,
    /// The gRPC client on the shared channel, or why there is none (an address that is not a
    /// valid URI: every RPC then fails as unreachable).
    client: Result<RaftServiceClient<AuthChannel>, Unreachable<TypeConfig>>,
    /// The network's stage clock.
    stages: Arc<StageClock>,
    /// The `AppendStream` call replication uses, once opened (`stream`); `None` until the
    /// first AppendEntries and after any failure on it.
    stream: Option<AppendStream>,
    /// The peer answered `AppendStream` with `UNIMPLEMENTED` (an older build): this client
    /// sends unary `AppendEntries` calls instead.
    unary_only: bool,
}

/// The unary methods of the Raft service, to name them in one call path and in errors.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    AppendEntries,
    Vote,
    PreVote,
    TransferLeader,
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rpc::AppendEntries => "AppendEntries",
            Rpc::Vote => "Vote",
            Rpc::PreVote => "PreVote",
            Rpc::TransferLeader => "TransferLeader",
        })
    }
}

/// How sending a snapshot's chunks ended early.
enum FeedError {
    /// The stream took no chunk within the idle timeout.
    Stalled,
    /// The stream is gone: the call has ended, and its status says why.
    Closed,
}

impl PeerClient {
    /// A handle to the gRPC client (a cheap clone of the shared channel).
    fn client(&self) -> Result<RaftServiceClient<AuthChannel>, Unreachable<TypeConfig>> {
        self.client.clone()
    }

    fn unreachable(&self, what: impl fmt::Display) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!("node {} at {}: {what}", self.target, self.addr))
    }

    fn network_error(&self, e: &WireError) -> NetworkError<TypeConfig> {
        NetworkError::from_string(format!("node {} at {}: {e}", self.target, self.addr))
    }

    /// Maps a failed gRPC call: the peer refusing the payload is a [`NetworkError`], anything
    /// else (no connection, broken stream, deadline, shutdown) makes the peer unreachable.
    fn status_error(&self, call: impl fmt::Display, status: tonic::Status) -> RPCError<TypeConfig> {
        let message = format!(
            "node {} at {}: {call} failed: {:?}: {}",
            self.target,
            self.addr,
            status.code(),
            status.message()
        );
        match status.code() {
            tonic::Code::InvalidArgument => RPCError::Network(NetworkError::from_string(message)),
            _ => RPCError::Unreachable(Unreachable::from_string(message)),
        }
    }

    /// Turns a reply into the openraft response `T`.
    fn read_reply<T: DeserializeOwned>(
        &self,
        what: &'static str,
        reply: RaftReply,
    ) -> Result<T, RPCError<TypeConfig>> {
        match reply.outcome {
            Some(Outcome::Ok(bytes)) => {
                decode(what, &bytes).map_err(|e| RPCError::Network(self.network_error(&e)))
            }
            Some(Outcome::RaftError(bytes)) => {
                let fatal: Fatal<TypeConfig> = decode("remote Raft error", &bytes)
                    .map_err(|e| RPCError::Network(self.network_error(&e)))?;
                Err(RPCError::Unreachable(
                    self.unreachable(format_args!("its Raft has stopped: {fatal}")),
                ))
            }
            None => Err(RPCError::Network(NetworkError::from_string(format!(
                "node {} at {}: {what}: the reply holds neither a response nor an error",
                self.target, self.addr
            )))),
        }
    }

    /// Sends one unary RPC and decodes its response, all within `option.soft_ttl()`.
    async fn unary<Req, Resp>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        response: &'static str,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let mut client = self.client()?;
        let payload = encode("Raft request", request)
            .map_err(|e| RPCError::Network(self.network_error(&e)))?;
        let ttl = option.soft_ttl() + transfer_allowance(payload.len());
        let mut request = tonic::Request::new(RaftRequest { payload });
        request.set_timeout(ttl);
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::PreVote => client.pre_vote(request).await,
                Rpc::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let result = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(reply)) => self.read_reply(response, reply.into_inner()),
            Ok(Err(status)) => Err(self.status_error(rpc, status)),
            Err(_) => Err(RPCError::Unreachable(
                self.unreachable(format_args!("{rpc} got no answer within {ttl:?}")),
            )),
        };
        self.note_outcome(&result);
        result
    }

    /// Notes whether the peer answered (see [`Reachability`]).
    fn note_outcome<T>(&self, result: &Result<T, RPCError<TypeConfig>>) {
        let unreachable = match result {
            Err(RPCError::Unreachable(e)) => Some(e.to_string()),
            _ => None,
        };
        self.reachability
            .note(self.target, &self.addr, unreachable.as_deref());
    }

    /// Sends an AppendEntries request on this client's `AppendStream` (opened first if there
    /// is none, or if the last call was dropped before its reply: see `stream`) and decodes
    /// the response, all within `option.soft_ttl()`. A peer without `AppendStream` gets unary
    /// calls from then on.
    async fn append(
        &mut self,
        request: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        const RESPONSE: &str = "AppendEntriesResponse";
        if self.unary_only {
            return self
                .unary(Rpc::AppendEntries, request, RESPONSE, option)
                .await;
        }
        let payload = encode("Raft request", request)
            .map_err(|e| RPCError::Network(self.network_error(&e)))?;
        let ttl = option.soft_ttl() + transfer_allowance(payload.len());
        let outcome = match tokio::time::timeout(ttl, self.call_on_stream(payload)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RPCError::Unreachable(self.unreachable(format_args!(
                "AppendStream got no answer within {ttl:?}"
            )))),
        };
        let result = match outcome {
            Ok(reply) => self.read_reply(RESPONSE, reply),
            Err(e) => {
                self.stream = None;
                if self.unary_only {
                    return self
                        .unary(Rpc::AppendEntries, request, RESPONSE, option)
                        .await;
                }
                Err(e)
            }
        };
        self.note_outcome(&result);
        result
    }

    /// One request and its reply on the stream, opening it when needed.
    async fn call_on_stream(
        &mut self,
        payload: Vec<u8>,
    ) -> Result<RaftReply, RPCError<TypeConfig>> {
        let open = match self.stream.take().filter(AppendStream::usable) {
            Some(open) => open,
            None => {
                let mut client = self.client()?;
                match AppendStream::open(&mut client).await {
                    Ok(opened) => opened,
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        tracing::info!(
                            "peer {} at {} has no AppendStream (an older build): replicating to it \
                         with unary calls",
                            self.target,
                            self.addr
                        );
                        self.unary_only = true;
                        return Err(self.status_error("AppendStream", status));
                    }
                    Err(status) => return Err(self.status_error("AppendStream", status)),
                }
            }
        };
        let stream = self.stream.insert(open);
        stream.call(payload).await.map_err(|e| match e {
            StreamError::Status(status) => self.status_error("AppendStream", status),
            StreamError::Ended(what) => {
                RPCError::Unreachable(self.unreachable(format_args!("AppendStream: {what}")))
            }
        })
    }

    /// Streams `header` and then `data` in chunks to the peer and waits for its answer.
    async fn send_snapshot(
        &self,
        header: SnapshotHeader,
        data: SnapshotData,
        chunk_size: usize,
        idle: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let call = client.install_snapshot(ReceiverStream::new(rx));
        tokio::pin!(call);
        let feed = feed_snapshot(tx, header, data, chunk_size, idle);
        tokio::pin!(feed);

        let answer = tokio::select! {
            // The peer answers before the last chunk only to refuse the stream.
            answer = &mut call => answer,
            fed = &mut feed => match fed {
                Err(FeedError::Stalled) => {
                    return Err(self
                        .unreachable(format_args!(
                            "InstallSnapshot: the stream took no chunk for {idle:?}"
                        ))
                        .into());
                }
                // Either every chunk is out, or the call has ended early: its answer says how.
                Ok(()) | Err(FeedError::Closed) => match tokio::time::timeout(idle, &mut call).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Err(self
                            .unreachable(format_args!(
                                "InstallSnapshot: no answer within {idle:?} after the last chunk"
                            ))
                            .into());
                    }
                },
            },
        };
        let reply = answer
            .map_err(|status| self.status_error("InstallSnapshot", status))?
            .into_inner();
        Ok(self.read_reply("SnapshotResponse", reply)?)
    }
}

/// The first message of an `InstallSnapshot` stream.
fn snapshot_header(
    vote: &VoteOf<TypeConfig>,
    snapshot: &SnapshotOf<TypeConfig, SnapshotData>,
) -> Result<SnapshotHeader, WireError> {
    Ok(SnapshotHeader {
        vote: encode("snapshot vote", vote)?,
        meta: encode("snapshot meta", &snapshot.meta)?,
        size: snapshot.snapshot.len() as u64,
    })
}

/// Puts the header and then the data chunks of a snapshot on the stream of an
/// `InstallSnapshot` call; the stream ends when `tx` is dropped on return.
async fn feed_snapshot(
    tx: mpsc::Sender<SnapshotChunk>,
    header: SnapshotHeader,
    data: SnapshotData,
    chunk_size: usize,
    idle: Duration,
) -> Result<(), FeedError> {
    let header = std::iter::once(Item::Header(header));
    let chunks = data
        .chunks(chunk_size)
        .map(|piece| Item::Data(piece.to_vec()));
    for item in header.chain(chunks) {
        let chunk = SnapshotChunk { item: Some(item) };
        match tokio::time::timeout(idle, tx.send(chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(FeedError::Closed),
            Err(_) => return Err(FeedError::Stalled),
        }
    }
    Ok(())
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        use openraft::entry::RaftEntry;
        let span = rpc
            .entries
            .first()
            .zip(rpc.entries.last())
            .map(|(first, last)| (first.index(), last.index()));
        if let Some((first, last)) = span {
            self.stages.record(first, last, Stage::Sent);
        }
        let answer = self.append(&rpc, &option).await;
        let acked = match (&answer, span) {
            (Ok(AppendEntriesResponse::Success), Some(span)) => Some(span),
            (Ok(AppendEntriesResponse::PartialSuccess(Some(matched))), Some((first, last))) => {
                Some((first, matched.index.min(last)))
            }
            _ => None,
        };
        if let Some((first, last)) = acked {
            self.stages.record(first, last, Stage::Acked);
        }
        answer
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::Vote, &rpc, "VoteResponse", &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::PreVote, &rpc, "VoteResponse", &option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = snapshot_header(&vote, &snapshot).map_err(|e| self.network_error(&e))?;
        let chunk_size = option
            .snapshot_chunk_size()
            .unwrap_or(DEFAULT_SNAPSHOT_CHUNK)
            .clamp(MIN_SNAPSHOT_CHUNK, MAX_SNAPSHOT_CHUNK);
        let send = self.send_snapshot(header, snapshot.snapshot, chunk_size, option.soft_ttl());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = send => answer,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::TransferLeader, &req, "TransferLeaderResponse", &option)
            .await
    }
}

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    type Vote = VoteOf<TypeConfig>;

    #[test]
    fn small_requests_keep_openrafts_deadline_and_large_ones_get_time_to_transfer() {
        assert_eq!(transfer_allowance(0), Duration::ZERO);
        assert_eq!(transfer_allowance(512 * 1024), Duration::ZERO);
        assert_eq!(
            transfer_allowance(16 * 1024 * 1024),
            Duration::from_millis(3200)
        );
        assert_eq!(
            transfer_allowance(usize::MAX),
            Duration::from_millis(200 * 65536)
        );
    }

    #[test]
    fn the_codec_round_trips_and_refuses_leftovers() {
        let vote = Vote::new(7, 3);
        let bytes = encode("vote", &vote).unwrap();
        assert_eq!(decode::<Vote>("vote", &bytes).unwrap(), vote);

        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Vote>("vote", &longer),
            Err(WireError::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(
            decode::<VoteRequest<TypeConfig>>("vote request", &[]),
            Err(WireError::Decode { .. })
        ));
    }

    #[test]
    fn a_peer_going_silent_or_answering_again_is_noted_once_each_way() {
        let reachability = Reachability::default();
        assert!(
            !reachability.note(2, "a", None),
            "answering from the start is no change"
        );
        assert!(reachability.note(2, "a", Some("refused")));
        for _ in 0..10 {
            assert!(!reachability.note(2, "a", Some("refused")), "logged once");
        }
        assert!(!reachability.note(3, "b", None), "peers are apart");
        assert!(reachability.note(2, "a", None));
        assert!(!reachability.note(2, "a", None));
    }

    fn peer() -> PeerClient {
        PeerClient {
            reachability: Reachability::default(),
            target: 2,
            addr: "127.0.0.1:1".to_owned(),
            client: Err(Unreachable::from_string("not used")),
            stages: Arc::new(StageClock::new(false)),
            stream: None,
            unary_only: false,
        }
    }

    #[test]
    fn a_refused_payload_is_a_network_error_anything_else_makes_the_peer_unreachable() {
        let refused = peer().status_error(Rpc::Vote, tonic::Status::invalid_argument("bad"));
        assert!(matches!(refused, RPCError::Network(_)), "{refused}");
        for status in [
            tonic::Status::unavailable("tcp connect error"),
            tonic::Status::cancelled("Timeout expired"),
            tonic::Status::deadline_exceeded("late"),
            tonic::Status::unimplemented("no RaftService here"),
            tonic::Status::internal("h2 protocol error"),
        ] {
            let error = peer().status_error(Rpc::AppendEntries, status);
            assert!(matches!(error, RPCError::Unreachable(_)), "{error}");
        }
    }

    #[test]
    fn a_stopped_remote_raft_makes_the_peer_unreachable() {
        let fatal = encode("fatal", &Fatal::<TypeConfig>::Stopped).unwrap();
        let reply = RaftReply {
            outcome: Some(Outcome::RaftError(fatal)),
        };
        let error = peer().read_reply::<Vote>("vote", reply).unwrap_err();
        assert!(matches!(error, RPCError::Unreachable(_)), "{error}");

        let empty = RaftReply { outcome: None };
        let error = peer().read_reply::<Vote>("vote", empty).unwrap_err();
        assert!(matches!(error, RPCError::Network(_)), "{error}");
    }

    #[tokio::test]
    async fn a_snapshot_goes_out_as_a_header_then_bounded_chunks() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let header = SnapshotHeader {
            vote: vec![1],
            meta: vec![2],
            size: data.len() as u64,
        };
        let (tx, mut rx) = mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let feed = tokio::spawn(feed_snapshot(
            tx,
            header.clone(),
            data.clone(),
            1000,
            Duration::from_secs(60),
        ));

        let mut received = Vec::new();
        while let Some(chunk) = rx.recv().await {
            received.push(chunk.item.unwrap());
        }
        assert!(feed.await.unwrap().is_ok());

        let mut items = received.into_iter();
        assert_eq!(items.next(), Some(Item::Header(header)));
        let sizes: Vec<usize> = items
            .clone()
            .map(|item| match item {
                Item::Data(bytes) => bytes.len(),
                Item::Header(_) => panic!("a second header"),
            })
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let joined: Vec<u8> = items
            .flat_map(|item| match item {
                Item::Data(bytes) => bytes,
                Item::Header(_) => Vec::new(),
            })
            .collect();
        assert_eq!(joined, data);
    }
}
