//! QUIC transport: the endpoint, transport tuning, and the request/response streams.

pub mod addrs;
pub mod admit;
pub mod budget;
pub mod gate;
pub mod limit;
pub mod peers;
pub mod socket;
pub mod tls;

use crate::identity::Identity;
use crate::ids::MAX_CHUNK;
use crate::proto::{self, zchunk, ChunkReply, ChunkRequest, CodecError, StreamRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use peers::{PeerConn, Peers};
pub use tls::{alpn, peer_cert, peer_node_id, Removed, TlsError};

/// Network failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TLS material or config.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Socket bind or I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// QUIC connect refused locally (bad address, endpoint closed).
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream failed.
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// Malformed or oversized message.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Send priority of requests and control messages: above chunk data (priority 0).
pub const URGENT: i32 = 1;

/// Request streams an authenticated peer may have open toward this node at once:
/// twice the most the swarm tests needed on loopback (51), where the pipeline
/// (`sync::swarm`, bounded in bytes) holds the most requests; past it a requester's
/// `open_bi` waits. Each holds a request of at most `MAX_STREAM_REQUEST` (4 KiB).
pub const PEER_STREAMS: u32 = 128;
/// Connection receive window of an authenticated peer.
const PEER_WINDOW: u32 = 64 << 20;
/// Connection receive window before authentication: a join request and its prefix
/// fit, and a stranger cannot make the transport buffer more.
const STRANGER_WINDOW: u32 = 128 << 10;

/// Packets a peer may receive before it must acknowledge (it still acknowledges at
/// once when packets arrive out of order, and after its maximum ACK delay).
///
/// Every packet crosses two kernels and two QUIC stacks, so an ACK costs about as
/// much CPU as a data packet; QUIC's default, one ACK per two packets, was an eighth
/// of all packets. Bandwidth lab, N = 8 at 100 Mbit/s (9 daemons on 2 cores): 1.74M
/// packets and 12.7 CPU-s per GiB delivered at the default, 1.65M and 11.7 after
/// 10, 1.61M and 10.7-10.9 after 20; the time stayed at 25.7-25.9 s.
const ACK_AFTER_PACKETS: u32 = 20;

/// Largest UDP payload MTU discovery tries: a 1500-byte Ethernet MTU less the IPv4
/// and UDP headers. quinn stops at 1452 (room for IPv6's longer header); paths that
/// do not carry 1472 lose the probe and stay lower.
const MAX_UDP_PAYLOAD: u16 = 1472;

/// Transport parameters for bulk transfer, as used with authenticated peers.
///
/// quinn's default stream window (about 1.25 MB) caps one stream near window/RTT;
/// chunk streams are short but many run at once, so the connection window is what
/// bounds throughput: 64 MiB covers 1 Gbit/s at 500 ms RTT.
///
/// Send fairness is off: with it, every requested chunk is sent round-robin and all
/// finish late together; without it, streams finish in request order, so each
/// chunk arrives (and can be announced and re-served) as early as possible.
///
/// In request order, though, a small message (a request, an announcement) written
/// while chunks are queued on the connection would wait for all of them; those go
/// at priority [`URGENT`].
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.send_fairness(false);
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    t.receive_window(quinn::VarInt::from_u32(PEER_WINDOW));
    t.send_window(64 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(PEER_STREAMS));
    // Protocol 4 uses none.
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_AFTER_PACKETS));
    t.ack_frequency_config(Some(ack));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// The server side's parameters: anyone may connect, so a connection starts with
/// one stream and a small window; [`trust`] opens them once its certificate is
/// checked.
fn server_transport() -> quinn::TransportConfig {
    let mut t = transport();
    t.receive_window(quinn::VarInt::from_u32(STRANGER_WINDOW));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    t
}

/// Opens an accepted connection to an authenticated peer's stream limit and window.
pub fn trust(conn: &quinn::Connection) {
    conn.set_receive_window(quinn::VarInt::from_u32(PEER_WINDOW));
    conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(PEER_STREAMS));
}

fn quic_client(cfg: rustls::ClientConfig) -> Result<quinn::ClientConfig, NetError> {
    let q = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut c = quinn::ClientConfig::new(Arc::new(q));
    c.transport_config(Arc::new(transport()));
    Ok(c)
}

/// This node's QUIC endpoint: accepts mesh and join connections, dials peers.
#[derive(Clone)]
pub struct Net {
    endpoint: quinn::Endpoint,
    /// Replaced when this node's certificate is renewed.
    mesh_client: Arc<std::sync::RwLock<quinn::ClientConfig>>,
    removed: Removed,
}

fn server(ident: &Identity, removed: &Removed) -> Result<quinn::ServerConfig, NetError> {
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(ident, removed)?)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(server));
    sc.transport_config(Arc::new(server_transport()));
    Ok(sc)
}

impl Net {
    /// Binds the endpoint on `listen`.
    pub fn bind(ident: &Identity, listen: SocketAddr) -> Result<Self, NetError> {
        Self::bind_refusing(ident, listen, Removed::default())
    }

    /// Binds the endpoint on `listen`; handshakes with the nodes in `removed` (now
    /// or added later) fail, either way.
    pub fn bind_refusing(ident: &Identity, listen: SocketAddr, removed: Removed) -> Result<Self, NetError> {
        let sc = server(ident, &removed)?;
        let runtime = quinn::default_runtime().ok_or_else(|| NetError::Protocol("no async runtime".into()))?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(sc), socket::bind(listen)?, runtime)?;
        let mesh_client = quic_client(tls::mesh_client_config(ident, &removed)?)?;
        Ok(Self { endpoint, mesh_client: Arc::new(std::sync::RwLock::new(mesh_client)), removed })
    }

    /// Presents `ident`'s (renewed) certificate from now on, accepting and dialing;
    /// connections already open keep theirs.
    pub fn set_identity(&self, ident: &Identity) -> Result<(), NetError> {
        let client = quic_client(tls::mesh_client_config(ident, &self.removed)?)?;
        self.endpoint.set_server_config(Some(server(ident, &self.removed)?));
        *self.mesh_client.write().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(())
    }

    /// The endpoint (to accept connections).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Dials a mesh peer.
    pub async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
        let client = self.mesh_client.read().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(self.endpoint.connect_with(client, addr, tls::NODE_NAME)?.await?)
    }
}

/// Dials an inviter for a join, from a throwaway endpoint.
pub async fn connect_join(ca_fingerprint: [u8; 32], addr: SocketAddr) -> Result<quinn::Connection, NetError> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| NetError::Protocol("bad bind address".into()))?;
    connect_join_from(bind, ca_fingerprint, addr).await
}

/// Dials an inviter for a join from a throwaway endpoint bound to `bind`.
pub async fn connect_join_from(
    bind: SocketAddr,
    ca_fingerprint: [u8; 32],
    addr: SocketAddr,
) -> Result<quinn::Connection, NetError> {
    let ep = quinn::Endpoint::client(bind)?;
    let cfg = quic_client(tls::join_client_config(ca_fingerprint)?)?;
    Ok(ep.connect_with(cfg, addr, tls::NODE_NAME)?.await?)
}

/// A peer's answer to a chunk request.
#[derive(Debug)]
pub enum ChunkAnswer {
    /// The chunks the peer sent.
    Data {
        /// In request order: the bytes (decompressed, not verified yet), or `None`
        /// where the peer does not have that chunk.
        chunks: Vec<Option<Vec<u8>>>,
        /// Payload bytes as they crossed the wire (compressed ones compressed).
        wire_bytes: u64,
    },
    /// The peer has them but spends its upload on other chunks now.
    Busy,
}

/// A chunk as read off the stream.
enum Payload {
    Raw(Vec<u8>),
    /// Compressed; decompresses to this many bytes.
    Zstd(Vec<u8>, u32),
}

/// Asks a peer for a run of chunks. The bytes are not verified here; compressed
/// ones are decompressed, each to exactly its requested length or the answer is
/// a protocol error.
pub async fn request_chunks(conn: &quinn::Connection, req: &ChunkRequest) -> Result<ChunkAnswer, NetError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    // Ahead of the chunks this node is sending on the same connection (see `transport`).
    let _ = send.set_priority(URGENT);
    proto::write_frame(&mut send, &StreamRequest::Chunk(req.clone())).await?;
    let _ = send.finish();
    let mut got = Vec::with_capacity(req.chunks.len());
    let mut wire_bytes = 0u64;
    for (i, want) in req.chunks.iter().enumerate() {
        let reply: ChunkReply = proto::read_frame(&mut recv)
            .await?
            .ok_or_else(|| NetError::Protocol("stream closed before the chunk reply".into()))?;
        match reply {
            ChunkReply::Busy if i == 0 => return Ok(ChunkAnswer::Busy),
            ChunkReply::Busy => return Err(NetError::Protocol("Busy after the first chunk reply".into())),
            ChunkReply::NotFound => got.push(None),
            ChunkReply::Data { len } if len != want.len || len > MAX_CHUNK => {
                return Err(NetError::Protocol(format!("asked for {} bytes, peer announced {len}", want.len)));
            }
            ChunkReply::Data { len } => {
                got.push(Some(Payload::Raw(read_exact_vec(&mut recv, len as usize).await?)));
                wire_bytes += u64::from(len);
            }
            ChunkReply::Zstd { len } => {
                // Checked before reading: at most the chunk's own length is read.
                zchunk::check_header(len, want.len).map_err(|e| NetError::Protocol(e.to_string()))?;
                got.push(Some(Payload::Zstd(read_exact_vec(&mut recv, len as usize).await?, want.len)));
                wire_bytes += u64::from(len);
            }
        }
    }
    let compressed = got.iter().any(|p| matches!(p, Some(Payload::Zstd(..))));
    let unpack_all = move || got.into_iter().map(|p| p.map(unpack).transpose()).collect::<Result<Vec<_>, _>>();
    let chunks = if compressed {
        // Off the async threads: a request decompresses up to MAX_CHUNK bytes.
        tokio::task::spawn_blocking(unpack_all).await.map_err(|e| NetError::Protocol(format!("decompressing: {e}")))?
    } else {
        unpack_all()
    };
    let chunks = chunks.map_err(|e| NetError::Protocol(e.to_string()))?;
    Ok(ChunkAnswer::Data { chunks, wire_bytes })
}

fn unpack(p: Payload) -> Result<Vec<u8>, zchunk::ZstdError> {
    match p {
        Payload::Raw(b) => Ok(b),
        Payload::Zstd(z, raw) => zchunk::decompress(&z, raw),
    }
}

/// Reads exactly `len` bytes into a new buffer, copied once from quinn's receive
/// buffers: `read_exact` would need the buffer zeroed first (1.3 % of a 1 GiB
/// loopback transfer's CPU went to that memset).
async fn read_exact_vec(recv: &mut quinn::RecvStream, len: usize) -> Result<Vec<u8>, NetError> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) => return Err(NetError::Protocol(format!("short chunk: {} of {len} bytes", buf.len()))),
            Err(e) => return Err(NetError::Protocol(format!("short chunk: {e}"))),
        }
    }
    Ok(buf)
}

/// Downloads `bytes` of filler from a peer; returns how many arrived.
pub async fn probe(conn: &quinn::Connection, bytes: u64) -> Result<u64, NetError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    proto::write_frame(&mut send, &StreamRequest::Probe { bytes }).await?;
    let _ = send.finish();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while let Some(n) = recv.read(&mut buf).await.map_err(|e| NetError::Protocol(format!("probe: {e}")))? {
        got += n as u64;
    }
    Ok(got)
}
