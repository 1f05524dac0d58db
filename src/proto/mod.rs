//! The wire protocol: every message that crosses the network, and their encoding.
//!
//! `proto/PROTOCOL.md` is the spec; `proto/golden/` holds encoded vectors that the
//! tests decode, so the format cannot drift by accident.

use crate::ids::{ChunkHash, ContentId};
use crate::relpath::RelPath;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

mod entry;
mod frame;
mod trust;
pub mod zchunk;

pub use crate::codec::{decode, encode, CodecError, FrameHead, MAX_FRAME};
pub use crate::ids::MAX_CHUNK;
pub use entry::{BlockRun, DeltaEntry, WireBlock, WireEntry, WireKind, WireMtime};
pub use frame::{
    read_frame, read_head, write_frame, write_frame_sized, Framed, MAX_CHUNK_REPLY, MAX_HAVE_FRAME, MAX_HELLO,
    MAX_JOIN_REPLY, MAX_JOIN_REQUEST, MAX_MEMBERS_FRAME, MAX_PEERS_FRAME, MAX_SMALL_CONTROL, MAX_STREAM_REQUEST,
};
pub use trust::{
    CertReply, CertWant, JoinRole, MembersNotice, RemovalNotice, WireMembers, MAX_SHARE_MEMBERS, MAX_TRUST_BLOB,
    MINOR_TRUST,
};

/// ALPN for mesh connections; the trailing number is the major protocol version.
pub const ALPN_MESH: &[u8] = b"meshsync/4";
/// ALPN for the one-off connection a joining node makes to its inviter.
pub const ALPN_JOIN: &[u8] = b"meshsync-join/1";
/// Minor protocol version carried in [`Hello`]; peers use the smaller of both.
pub const PROTOCOL_MINOR: u32 = MINOR_DELTA;
/// The first minor protocol version that takes [`ChunkReply::Zstd`].
pub const MINOR_ZSTD: u32 = MINOR_TRUST + 1;
/// Most peers in one [`Control::Peers`]; a longer list is sent in pieces, and a
/// longer one received is refused.
pub const MAX_GOSSIP_PEERS: usize = 256;
/// Most addresses kept of one gossiped peer.
pub const MAX_PEER_ADDRS: usize = 16;
/// Longest node name accepted, in bytes.
pub const MAX_NAME: usize = 128;

/// Most entries in one [`Control::Index`] batch.
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// A peer as gossiped: who it is and where it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// blake3 of the peer's public key.
    pub id: [u8; 32],
    /// Human name.
    pub name: String,
    /// Addresses it accepts connections on.
    pub addrs: Vec<SocketAddr>,
}

/// Where a node stands with one share, sent in [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareHello {
    /// Share name.
    pub name: String,
    /// Random id of the sender's index for this share; changes when the index is reset.
    pub index_id: u64,
    /// The sender's newest sequence number for this share.
    pub max_seq: u64,
    /// What the sender already holds of the receiver's index: (index id, sequence).
    pub have: Option<(u64, u64)>,
}

/// First message on the control stream, both ways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Minor protocol version.
    pub minor: u32,
    /// Sender's name.
    pub name: String,
    /// Addresses the sender listens on.
    pub addrs: Vec<SocketAddr>,
    /// Shares the sender takes part in.
    pub shares: Vec<ShareHello>,
}

/// Messages on the long-lived control stream after [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Index entries of the sender's share, in sequence order, up to `upto_seq`.
    Index {
        /// Share name.
        share: String,
        /// Sender's index id for the share.
        index_id: u64,
        /// Entries changed since the last batch.
        entries: Vec<WireEntry>,
        /// Highest sequence included; the receiver stores it to resume from.
        upto_seq: u64,
    },
    /// The peers the sender knows (gossip).
    Peers(Vec<PeerInfo>),
    /// The sender started taking part in a share after its Hello.
    ShareAdded(ShareHello),
    /// Which chunks of a file the sender holds while it downloads it.
    Have(HaveMap),
    /// `meshsync bench`: fetch this synthetic blob from the swarm and report back.
    BenchOffer {
        /// Bench run id.
        id: u64,
        /// The blob, as an entry named `blob` in the temporary share `bench:<id>`.
        entry: WireEntry,
    },
    /// `meshsync bench`: the sender has a verified copy of the blob (or gave up).
    BenchDone {
        /// Bench run id.
        id: u64,
        /// True if the copy is complete and verified.
        ok: bool,
    },
    /// `meshsync bench` is over: delete the blob.
    BenchEnd {
        /// Bench run id.
        id: u64,
    },
    /// Minor 1: [`Control::Index`], plus paths where the sender now holds exactly the
    /// version the receiver announced (a file it applied from the receiver): named
    /// by version instead of sent back whole.
    IndexBatch {
        /// Share name.
        share: String,
        /// Sender's index id for the share.
        index_id: u64,
        /// Entries changed since the last batch.
        entries: Vec<WireEntry>,
        /// Paths the sender holds at the receiver's own version.
        same: Vec<SameVersion>,
        /// Highest sequence included.
        upto_seq: u64,
    },
    /// Minor 2: the sender leaves the mesh (`meshsync leave`): forget it, its
    /// entries and its addresses, and do not dial it again. The receiver closes the
    /// connection once it has (the sender waits for that close).
    Leaving,
    /// Minor 2: the sender stopped taking part in a share (`meshsync share remove`).
    ShareRemoved {
        /// Share name.
        share: String,
    },
    /// Minor 3: a node removed from the mesh by an admin (sent on connect, and when
    /// a node first hears of it).
    Removed(RemovalNotice),
    /// Minor 3: who may take part in a share, set by an admin (sent on connect to
    /// the share's members and to admins, and when it changes).
    Members(MembersNotice),
    /// Minor 3: asks the receiver, if it is an admin, to sign a certificate.
    CertRequest {
        /// Picked by the asker; the reply carries it back.
        id: u64,
        /// What to sign.
        want: CertWant,
    },
    /// Minor 3: the answer to [`Control::CertRequest`] `id`.
    CertReply {
        /// The request's id.
        id: u64,
        /// The certificate, or why not.
        reply: CertReply,
    },
    /// Minor 5: [`Control::IndexBatch`], plus entries told as changes of a version
    /// the receiver holds.
    IndexDelta {
        /// Share name.
        share: String,
        /// Sender's index id for the share.
        index_id: u64,
        /// Entries changed since the last batch, whole.
        entries: Vec<WireEntry>,
        /// Paths the sender holds at the receiver's own version.
        same: Vec<SameVersion>,
        /// Entries changed since the last batch, as changes of a version.
        deltas: Vec<DeltaEntry>,
        /// Highest sequence included.
        upto_seq: u64,
    },
    /// Minor 5: the sender holds no longer the base of these paths'
    /// [`DeltaEntry`]s (it changed them meanwhile): it asks for them whole.
    EntriesWanted {
        /// Share name.
        share: String,
        /// The receiver's index id the deltas came under.
        index_id: u64,
        /// The paths, at most [`MAX_BATCH_ENTRIES`].
        paths: Vec<RelPath>,
    },
    /// Minor 5: the answer to [`Control::EntriesWanted`]: the entries as the sender
    /// holds them now.
    EntriesReply {
        /// Share name.
        share: String,
        /// Sender's index id for the share.
        index_id: u64,
        /// The entries, whole.
        entries: Vec<WireEntry>,
        /// Asked paths the sender has no entry of to tell.
        absent: Vec<RelPath>,
    },
}

/// The first minor protocol version with [`Control::IndexDelta`],
/// [`Control::EntriesWanted`] and [`Control::EntriesReply`].
pub const MINOR_DELTA: u32 = MINOR_ZSTD + 1;

/// Most blocks the entries of one batch may hold once its deltas are read: twice
/// what one frame of whole entries holds. A sender cuts a batch once its entries'
/// blocks pass a quarter frame ([`crate::index::BATCH_CUT`]), so its last entry,
/// itself at most a frame, can take it to 1.25 frames; more is a peer making this
/// node allocate for nothing.
pub const MAX_BATCH_BLOCKS: usize = 2 * MAX_FRAME / std::mem::size_of::<WireBlock>();

/// The first minor protocol version with [`Control::Leaving`] and [`Control::ShareRemoved`].
pub const MINOR_MEMBERSHIP: u32 = 2;

/// The application close code of a connection closed because its peer left the
/// mesh: the leaving node takes it as "heard".
pub const CLOSE_LEFT: u32 = 6;

/// The application close code of a connection closed because the peer answered
/// nothing, not even QUIC acknowledgements, while chunk requests to it missed their
/// deadlines: it is dialed again.
pub const CLOSE_STALLED: u32 = 7;

/// "My entry for this path is yours, at this version."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SameVersion {
    /// The path.
    pub path: RelPath,
    /// The receiver's version vector the sender now holds: (short node id, counter) pairs.
    pub version: Vec<(u64, u64)>,
}

/// Prefix of the temporary share a bench blob lives in; ':' keeps it apart from
/// every configurable share name.
pub const BENCH_SHARE_PREFIX: &str = "bench:";

/// Download progress of one file: the chunks the sender can already serve.
///
/// A bitmap rather than run-length ranges: rarest-first fetches chunks in random
/// order, so runs are short and a bitmap (one bit per block) is the smaller form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveMap {
    /// Share name.
    pub share: String,
    /// The file being downloaded.
    pub path: RelPath,
    /// Which version of it (the receiver ignores maps of other versions).
    pub content: ContentId,
    /// Number of blocks in that version.
    pub blocks: u32,
    /// Bit `i` (LSB first in byte `i / 8`) set: block `i` is held.
    pub bits: Vec<u8>,
}

impl HaveMap {
    /// True if block `i` is held; false past the end.
    pub fn has(&self, i: usize) -> bool {
        self.bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// True when the bitmap is as long as `blocks` says.
    pub fn is_well_formed(&self) -> bool {
        self.bits.len() == (self.blocks as usize).div_ceil(8)
    }

    /// Builds a map from held block indexes.
    pub fn from_held(share: String, path: RelPath, content: ContentId, blocks: u32, held: &[bool]) -> Self {
        let mut bits = vec![0u8; (blocks as usize).div_ceil(8)];
        for (i, h) in held.iter().enumerate().take(blocks as usize) {
            if *h {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        Self { share, path, content, blocks, bits }
    }
}

/// First frame of every request stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamRequest {
    /// A run of chunks (a piece); answered with one [`ChunkReply::Busy`], or with
    /// one [`ChunkReply`] per chunk, in request order.
    Chunk(ChunkRequest),
    /// `bytes` of filler, for `meshsync bench` to measure throughput; answered with raw bytes.
    Probe {
        /// How many bytes to send back (at most [`MAX_PROBE`]).
        bytes: u64,
    },
}

/// Largest throughput probe a peer answers.
pub const MAX_PROBE: u64 = 1 << 30;

/// One chunk named in a [`ChunkRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Its hash.
    pub hash: ChunkHash,
    /// Its expected length.
    pub len: u32,
}

/// Most chunks one request may name.
pub const MAX_REQUEST_CHUNKS: usize = 64;

/// What the requester knows of other holders of the chunks it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holders {
    /// Nobody else announced them: only this peer can send them now.
    OnlyYou,
    /// Other peers have them too: a busy uploader may refuse.
    Others,
}

impl Holders {
    /// From the number of peers known to hold the chunks, the asked one included.
    pub fn from_count(holders: u32) -> Self {
        if holders > 1 {
            Holders::Others
        } else {
            Holders::OnlyYou
        }
    }
}

/// A request for a run of chunks, first frame of a request stream.
///
/// One request per piece instead of one per chunk: a 1 GiB file of 64 KiB chunks
/// took 16k streams, blocking-pool handoffs and disk calls on each side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// Share the chunks belong to.
    pub share: String,
    /// The chunks, in the order their replies come back.
    pub chunks: Vec<ChunkRef>,
    /// Whether the requester could fetch them elsewhere.
    pub holders: Holders,
    /// Bytes of the file the requester still lacks: uploaders give a place sooner
    /// to a requester far behind the others, so a mesh finishes together.
    pub remaining: u64,
}

impl ChunkRequest {
    /// Bytes the request asks for.
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len as u64).sum()
    }

    /// Why a server refuses this request, if it does: empty, more than
    /// [`MAX_REQUEST_CHUNKS`] chunks, or more than [`MAX_CHUNK`] bytes in all.
    pub fn refusal(&self) -> Option<String> {
        if self.chunks.is_empty() {
            Some("a chunk request names no chunk".into())
        } else if self.chunks.len() > MAX_REQUEST_CHUNKS {
            Some(format!("a chunk request names {} chunks (at most {MAX_REQUEST_CHUNKS})", self.chunks.len()))
        } else if self.bytes() > MAX_CHUNK as u64 {
            Some(format!("a chunk request asks for {} bytes (at most {MAX_CHUNK})", self.bytes()))
        } else {
            None
        }
    }
}

/// The answer header; `Data` is followed by `len` raw bytes on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The chunk follows.
    Data {
        /// Number of raw bytes after this header.
        len: u32,
    },
    /// The sender does not have it (any more).
    NotFound,
    /// The sender has it but just sent it to another peer and is short of upload:
    /// fetch it from that peer once it announces it.
    Busy,
    /// Minor 4, sent only to a requester of minor 4 or later: the chunk follows
    /// compressed, as one zstd frame that decompresses to exactly the requested
    /// chunk's length. Sent only when shorter than the chunk.
    Zstd {
        /// Number of compressed bytes after this header.
        len: u32,
    },
}

/// What a joining node sends to its inviter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Token id (selects the stored secret hash).
    pub token_id: [u8; 16],
    /// The token secret; the inviter compares its blake3 hash.
    pub secret: [u8; 32],
    /// Name of the new node.
    pub name: String,
    /// Addresses it will listen on.
    pub addrs: Vec<SocketAddr>,
    /// PKCS#10 request for its certificate (proves it holds the key).
    pub csr_der: Vec<u8>,
}

/// The inviter's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// Welcome: the signed certificate, the CA material and who to talk to.
    Accepted {
        /// The new node's certificate, signed by the mesh CA.
        node_cert_der: Vec<u8>,
        /// The mesh CA certificate.
        ca_cert_der: Vec<u8>,
        /// The CA private key (PKCS#8), only for a node invited with `--admin`.
        ca_key_der: Option<Vec<u8>>,
        /// The inviter itself.
        inviter: PeerInfo,
        /// Everyone else the inviter knows.
        peers: Vec<PeerInfo>,
    },
    /// Refused, with the reason shown to the user.
    Refused(String),
}

#[cfg(test)]
mod golden {
    //! Encoded messages pinned in `proto/golden/`: a format change fails here.
    //! Regenerate deliberately with `UPDATE_GOLDEN=1 cargo test golden`.
    use super::*;
    use crate::relpath::RelPath;

    fn entry() -> WireEntry {
        WireEntry {
            path: RelPath::parse("dir/file.txt").unwrap(),
            kind: WireKind::File,
            size: 5,
            mode: 0o644,
            mtime: WireMtime { secs: 1_700_000_000, nanos: 42 },
            version: vec![(7, 2), (9, 1)],
            modified_by: 7,
            deleted: false,
            blocks: vec![WireBlock { hash: ChunkHash::of(b"hello"), len: 5 }],
        }
    }

    fn check<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, v: &T) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/golden").join(format!("{name}.bin"));
        let bytes = encode(v).unwrap();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&decode::<T>(&golden).unwrap(), v, "{name}: golden bytes decode to a different value");
        assert_eq!(bytes, golden, "{name}: encoding changed; update PROTOCOL.md and the version first");
    }

    #[test]
    fn holders_counts_the_asked_peer() {
        assert_eq!(Holders::from_count(0), Holders::OnlyYou);
        assert_eq!(Holders::from_count(1), Holders::OnlyYou);
        assert_eq!(Holders::from_count(2), Holders::Others);
    }

    #[test]
    fn chunk_requests_out_of_bounds_are_refused() {
        let one = |len| ChunkRef { hash: ChunkHash::of(b"x"), len };
        let req =
            |chunks: Vec<ChunkRef>| ChunkRequest { share: "s".into(), chunks, holders: Holders::OnlyYou, remaining: 0 };
        assert_eq!(req(vec![one(5), one(7)]).refusal(), None);
        assert_eq!(req(vec![one(MAX_CHUNK)]).refusal(), None);
        assert!(req(vec![]).refusal().is_some_and(|r| r.contains("no chunk")));
        let many = req(vec![one(1); MAX_REQUEST_CHUNKS + 1]);
        assert!(many.refusal().is_some_and(|r| r.contains("65 chunks")), "{:?}", many.refusal());
        let big = req(vec![one(MAX_CHUNK), one(1)]);
        assert!(big.refusal().is_some_and(|r| r.contains("bytes")), "{:?}", big.refusal());
    }

    #[test]
    fn golden_vectors() {
        check(
            "hello",
            &Hello {
                minor: 0,
                name: "alpha".into(),
                addrs: vec!["127.0.0.1:7700".parse().unwrap()],
                shares: vec![ShareHello { name: "www".into(), index_id: 1, max_seq: 10, have: Some((2, 3)) }],
            },
        );
        check(
            "control_index",
            &Control::Index { share: "www".into(), index_id: 1, entries: vec![entry()], upto_seq: 4 },
        );
        check("control_peers", &Control::Peers(vec![PeerInfo { id: [3; 32], name: "b".into(), addrs: vec![] }]));
        check(
            "chunk_request",
            &StreamRequest::Chunk(ChunkRequest {
                share: "www".into(),
                chunks: vec![
                    ChunkRef { hash: ChunkHash::of(b"hello"), len: 5 },
                    ChunkRef { hash: ChunkHash::of(b"world"), len: 5 },
                ],
                holders: Holders::Others,
                remaining: 3 << 20,
            }),
        );
        check("probe_request", &StreamRequest::Probe { bytes: 1 << 20 });
        check("chunk_reply", &ChunkReply::Data { len: 5 });
        check("chunk_reply_busy", &ChunkReply::Busy);
        check("chunk_reply_zstd", &ChunkReply::Zstd { len: 5 });
        let e = entry();
        check("control_bench_offer", &Control::BenchOffer { id: 7, entry: entry() });
        check("control_bench_done", &Control::BenchDone { id: 7, ok: true });
        check("control_bench_end", &Control::BenchEnd { id: 7 });
        check(
            "control_index_batch",
            &Control::IndexBatch {
                share: "www".into(),
                index_id: 1,
                entries: vec![entry()],
                same: vec![SameVersion { path: RelPath::parse("a/b").unwrap(), version: vec![(7, 3)] }],
                upto_seq: 9,
            },
        );
        check(
            "control_have",
            &Control::Have(HaveMap::from_held(
                "www".into(),
                e.path.clone(),
                ContentId::of(e.size, e.blocks.iter().map(|b| (b.hash, b.len))),
                1,
                &[true],
            )),
        );
        check("join_refused", &JoinReply::Refused("expired".into()));
        check("control_leaving", &Control::Leaving);
        check("control_share_removed", &Control::ShareRemoved { share: "www".into() });
        check(
            "control_removed",
            &Control::Removed(RemovalNotice { node: [4; 32], name: "laptop".into(), issued: 9, signature: vec![1, 2] }),
        );
        check(
            "control_members",
            &Control::Members(MembersNotice {
                share: "www".into(),
                members: WireMembers::Only(vec![[5; 32]]),
                version: 2,
                issued: 9,
                signature: vec![3],
            }),
        );
        let want = CertWant::Join { name: "c".into(), role: JoinRole::NoInvite, csr_der: vec![6] };
        check("control_cert_request", &Control::CertRequest { id: 1, want });
        check("control_cert_renew", &Control::CertRequest { id: 2, want: CertWant::Renew });
        check("control_cert_reply", &Control::CertReply { id: 1, reply: CertReply::Refused("no".into()) });
        let runs = vec![BlockRun::Base { start: 0, len: 40 }, BlockRun::New(e.blocks.clone())];
        let delta = DeltaEntry { entry: WireEntry { blocks: Vec::new(), ..entry() }, base: ContentId([8; 32]), runs };
        check(
            "control_index_delta",
            &Control::IndexDelta {
                share: "www".into(),
                index_id: 1,
                entries: vec![entry()],
                same: vec![],
                deltas: vec![delta],
                upto_seq: 10,
            },
        );
        let paths = vec![e.path.clone()];
        check("control_entries_wanted", &Control::EntriesWanted { share: "www".into(), index_id: 2, paths });
        let absent = vec![RelPath::parse("gone").unwrap()];
        check(
            "control_entries_reply",
            &Control::EntriesReply { share: "www".into(), index_id: 1, entries: vec![entry()], absent },
        );
    }
}
