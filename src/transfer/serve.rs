//! Serving peers' chunk requests: the upload policy decides (a short lock around the
//! pure `sync::upload` core), chunks are read from the share's files or from a running
//! download's temp file, under a memory bound and the configured upload cap.

use super::{ShareCtx, Verify};
use crate::ids::NodeId;
use crate::net::budget::PeerBudget;
use crate::net::limit::RateLimit;
use crate::proto::{self, ChunkRef, ChunkReply, ChunkRequest, StreamRequest, MAX_PROBE};
use crate::stats::Counters;
use crate::sync::compress::{Packed, Packer};
use crate::sync::upload::{Decision, ServedFrom, UploadPolicy};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, Instrument};

/// Chunk data (KiB) this node holds for peers' requests at once; the largest
/// request (16 MiB) always fits. One peer's share is bounded by its budget
/// ([`PeerBudget`], which its control frames draw from too).
pub const SERVE_MEMORY_KIB: u32 = 128 << 10;

/// Who asks: the peer, its protocol minor, and the budget its requests are charged to.
struct Asker {
    peer: NodeId,
    minor: u32,
    budget: PeerBudget,
}

/// What a peer may be served of a share.
pub enum ShareAccess {
    /// The share's transfer context.
    Serve(ShareCtx),
    /// This node does not hold the share.
    Unknown,
    /// The peer is not one of the share's members.
    Refused,
}

/// What the requesting peer may be served of a share, by name.
pub type ShareLookup = Arc<dyn Fn(&str) -> ShareAccess + Send + Sync>;

/// What this node spends on peers' requests, and the policy that spends it.
pub struct Server {
    /// Which uploads to refuse while upload is short.
    uploads: Mutex<UploadPolicy>,
    /// The configured upload cap.
    upload_limit: RateLimit,
    /// KiB of chunk data read for peers and not yet sent: bounds the memory that
    /// requests can pin, whatever peers ask for.
    memory: Arc<tokio::sync::Semaphore>,
    /// Start of the server's clock (the pure upload policy takes time as an offset).
    epoch: Instant,
    counters: Arc<Counters>,
}

impl Server {
    /// A server capped at `upload_limit_mbit` (none: no cap).
    pub fn new(upload_limit_mbit: Option<u64>, counters: Arc<Counters>) -> Self {
        Self {
            uploads: Mutex::new(Default::default()),
            upload_limit: RateLimit::new(upload_limit_mbit),
            memory: crate::net::budget::pool(SERVE_MEMORY_KIB),
            epoch: Instant::now(),
            counters,
        }
    }

    /// Changes the upload cap (a reload).
    pub fn set_upload_limit(&self, upload_limit_mbit: Option<u64>) {
        self.upload_limit.set(upload_limit_mbit);
    }

    /// Answers the requests of a peer (of protocol minor `minor`) on `conn`, each on
    /// its own stream, until it closes; the chunk data read for them is charged to
    /// the peer's `budget`.
    pub async fn serve_requests(
        self: Arc<Self>,
        conn: quinn::Connection,
        (peer, minor): (NodeId, u32),
        budget: PeerBudget,
        shares: ShareLookup,
    ) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let one = self.clone().serve_one(send, recv, Asker { peer, minor, budget: budget.clone() }, shares.clone());
            tokio::spawn(one.in_current_span());
        }
    }

    async fn serve_one(
        self: Arc<Self>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        asker: Asker,
        shares: ShareLookup,
    ) {
        let res = match proto::read_frame::<_, StreamRequest>(&mut recv).await {
            Ok(Some(StreamRequest::Chunk(req))) => match shares(&req.share) {
                ShareAccess::Serve(share) => self.serve_chunks(&mut send, req, asker, Some(share)).await,
                ShareAccess::Unknown => self.serve_chunks(&mut send, req, asker, None).await,
                // Answered as for a share this node does not hold: a non-member is not
                // told the share exists.
                ShareAccess::Refused => {
                    Counters::add(&self.counters.refused, 1);
                    debug!(share = %req.share, "refused a chunk request of a share the peer is not a member of");
                    not_found(&mut send, req.chunks.len().min(proto::MAX_REQUEST_CHUNKS)).await
                }
            },
            Ok(Some(StreamRequest::Probe { bytes })) => self.serve_probe(&mut send, bytes.min(MAX_PROBE)).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = res {
            debug!(error = %e, "reply failed");
        }
        let _ = send.finish();
    }

    async fn serve_chunks(
        &self,
        send: &mut quinn::SendStream,
        req: ChunkRequest,
        Asker { peer, minor, budget }: Asker,
        share: Option<ShareCtx>,
    ) -> Result<(), String> {
        if let Some(why) = req.refusal() {
            return Err(why);
        }
        // The policy tracks a request by its first chunk: requesters cut the same pieces.
        let key = req.chunks[0].hash;
        // A chunk of a running download is relayed; anything else comes from files.
        let from = if share.as_ref().is_some_and(|s| s.partial.contains(&key)) {
            ServedFrom::Download
        } else {
            ServedFrom::Files
        };
        let decision = self.uploads.lock().unwrap_or_else(|e| e.into_inner()).decide(
            key,
            peer,
            req.holders,
            from,
            req.remaining,
            self.epoch.elapsed(),
        );
        if decision != Decision::Serve {
            let c = if decision == Decision::Full { &self.counters.requests_full } else { &self.counters.chunks_busy };
            Counters::add(c, 1);
            return proto::write_frame(send, &ChunkReply::Busy).await.map_err(|e| e.to_string());
        }
        let res = async {
            let _memory = budget.hold(&self.memory, req.bytes()).await.ok_or("server closed")?;
            for (data, c) in find_chunks(share, req, from, minor).await {
                let Some(d) = data else {
                    proto::write_frame(send, &ChunkReply::NotFound).await.map_err(|e| e.to_string())?;
                    continue;
                };
                let wire = d.wire_len() as u64;
                self.upload_limit.acquire(wire).await;
                let (head, bytes) = match d {
                    Packed::Raw(b) => (ChunkReply::Data { len: wire as u32 }, b),
                    Packed::Zstd(b) => (ChunkReply::Zstd { len: wire as u32 }, b),
                };
                proto::write_frame(send, &head).await.map_err(|e| e.to_string())?;
                // Handed over, not copied: quinn keeps the buffer until it is acknowledged.
                send.write_chunk(bytes.into()).await.map_err(|e| e.to_string())?;
                Counters::add(&self.counters.chunk_bytes_sent, u64::from(c.len));
                Counters::add(&self.counters.chunk_wire_bytes_sent, wire);
                Counters::add(&self.counters.chunks_sent, 1);
            }
            // write_all returns once quinn has buffered the bytes; the upload (and the
            // Busy hold) really ends when the peer acknowledges them.
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(30), send.stopped()).await;
            Ok(())
        }
        .await;
        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).finished(key, &peer, self.epoch.elapsed());
        res
    }

    /// Sends `bytes` of filler for a throughput measurement, under the upload cap.
    async fn serve_probe(&self, send: &mut quinn::SendStream, bytes: u64) -> Result<(), String> {
        let block = vec![0x5au8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64);
            self.upload_limit.acquire(n).await;
            send.write_all(&block[..n as usize]).await.map_err(|e| e.to_string())?;
            left -= n;
        }
        Ok(())
    }
}

/// Answers `n` chunks as not held.
async fn not_found(send: &mut quinn::SendStream, n: usize) -> Result<(), String> {
    for _ in 0..n {
        proto::write_frame(send, &ChunkReply::NotFound).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reads the chunks of a request from where `from` says they are (a running
/// download's temp file, or the share's complete files), then from the other, and
/// packs them for a requester of protocol minor `minor` (compressed, where the
/// share's setting says so); `None` where this node has no verified copy.
async fn find_chunks(
    share: Option<ShareCtx>,
    req: ChunkRequest,
    from: ServedFrom,
    minor: u32,
) -> Vec<(Option<Packed>, ChunkRef)> {
    let unfound = |chunks: &[ChunkRef]| chunks.iter().map(|c| (None, *c)).collect();
    let Some(share) = share else { return unfound(&req.chunks) };
    let chunks = req.chunks.clone();
    // One trip to the blocking pool per request, not per chunk.
    tokio::task::spawn_blocking(move || {
        let ctx = &share;
        let mut packer = Packer::new(ctx.compression, minor);
        let mut local = ctx.local_chunks(Verify::IfChanged);
        let mut from_files = |c: &ChunkRef| local.read(&c.hash, c.len).ok().flatten();
        let from_download = |c: &ChunkRef| ctx.partial.read(&c.hash, c.len);
        req.chunks
            .iter()
            .map(|c| match from {
                // A relay reads its temp file first: looking in the index (and
                // opening files) for a chunk no complete file holds cost every
                // relayed request an index lookup.
                ServedFrom::Download => from_download(c).or_else(|| from_files(c)),
                ServedFrom::Files => from_files(c).or_else(|| from_download(c)),
            })
            .map(|d| d.map(|d| packer.pack(d)))
            .zip(req.chunks.iter().copied())
            .collect()
    })
    .await
    .unwrap_or_else(|_| unfound(&chunks))
}
