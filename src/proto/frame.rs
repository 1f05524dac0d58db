//! How large each message's frame may be (PROTOCOL.md §10), and the reads and
//! writes that hold every message to its limit. A reader refuses a longer prefix
//! before reading the body; a writer refuses to send what its receiver would refuse.

use super::{ChunkReply, Control, Hello, JoinReply, JoinRequest, StreamRequest};
use crate::codec::{self, CodecError, FrameHead, MAX_FRAME};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest `Hello` (a few hundred shares and addresses fit many times over).
pub const MAX_HELLO: usize = 256 << 10;
/// Largest `JoinRequest`: the only message a stranger can send.
pub const MAX_JOIN_REQUEST: usize = 64 << 10;
/// Largest `JoinReply`: certificates and the inviter's peer list (about 500 bytes a peer).
pub const MAX_JOIN_REPLY: usize = 4 << 20;
/// Largest `StreamRequest` (a `ChunkRequest` of 64 chunks takes about 2.4 KiB).
pub const MAX_STREAM_REQUEST: usize = 4 << 10;
/// Largest `ChunkReply` header (8 bytes today).
pub const MAX_CHUNK_REPLY: usize = 64;
/// Largest `Control::Peers`: [`super::MAX_GOSSIP_PEERS`] peers of at most
/// [`super::MAX_NAME`] bytes of name and [`super::MAX_PEER_ADDRS`] addresses take 135 KB.
pub const MAX_PEERS_FRAME: usize = 256 << 10;
/// Largest `Control::Have`: a map has a bit per block, and an entry that fits in a
/// frame has at most 932 000 blocks (117 KB of map).
pub const MAX_HAVE_FRAME: usize = 256 << 10;
/// Largest `Control::Members`: [`super::MAX_SHARE_MEMBERS`] ids of 32 bytes take 128 KiB.
pub const MAX_MEMBERS_FRAME: usize = 256 << 10;
/// Largest frame of every other small control message (`ShareAdded`, `BenchDone`,
/// `BenchEnd`, and variants newer than this table).
pub const MAX_SMALL_CONTROL: usize = 64 << 10;

/// A message that travels in length-prefixed frames, with the largest frame it may take.
pub trait Framed: Serialize + DeserializeOwned {
    /// Largest body of any frame of this message.
    const MAX: usize;
    /// Largest body of a frame of this message whose first four bytes, read as a
    /// little-endian `u32`, are `tag` (for an enum, its variant index; §3).
    fn max_frame(tag: u32) -> usize;
}

/// Messages with one limit whatever they start with.
macro_rules! fixed_limit {
    ($($t:ty => $max:expr),* $(,)?) => {$(
        impl Framed for $t {
            const MAX: usize = $max;
            fn max_frame(_: u32) -> usize {
                $max
            }
        }
    )*};
}

fixed_limit!(
    Hello => MAX_HELLO,
    StreamRequest => MAX_STREAM_REQUEST,
    ChunkReply => MAX_CHUNK_REPLY,
    JoinRequest => MAX_JOIN_REQUEST,
    JoinReply => MAX_JOIN_REPLY,
);

impl Framed for Control {
    const MAX: usize = MAX_FRAME;
    fn max_frame(tag: u32) -> usize {
        match tag {
            // Index, BenchOffer (an entry), IndexBatch, IndexDelta, EntriesWanted,
            // EntriesReply: entries of any file.
            0 | 4 | 7 | 14..=16 => MAX_FRAME,
            1 => MAX_PEERS_FRAME,
            3 => MAX_HAVE_FRAME,
            11 => MAX_MEMBERS_FRAME,
            _ => MAX_SMALL_CONTROL,
        }
    }
}

/// Reads one frame of `T`, held to `T`'s limit; `Ok(None)` on a clean end of stream.
/// Not cancel-safe (see [`codec::read_frame`]).
pub async fn read_frame<R: AsyncRead + Unpin, T: Framed>(r: &mut R) -> Result<Option<T>, CodecError> {
    codec::read_frame_by(r, T::MAX, T::max_frame).await
}

/// Reads the head of one frame of `T` (its length checked against `T`'s limit);
/// [`FrameHead::body`] reads the rest.
pub async fn read_head<R: AsyncRead + Unpin, T: Framed>(r: &mut R) -> Result<Option<FrameHead>, CodecError> {
    codec::read_head(r, T::MAX, T::max_frame).await
}

/// Writes one frame of `T`; a body over `T`'s limit is refused unsent, as the
/// receiver would refuse it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Framed>(w: &mut W, v: &T) -> Result<(), CodecError> {
    write_frame_sized(w, v).await.map(drop)
}

/// Like [`write_frame`]; returns the bytes it put on the stream (the length prefix included).
pub async fn write_frame_sized<W: AsyncWrite + Unpin, T: Framed>(w: &mut W, v: &T) -> Result<usize, CodecError> {
    let body = codec::encode(v)?;
    let max = tag_of(&body).map_or(MAX_FRAME, T::max_frame);
    if body.len() > max {
        return Err(CodecError::TooLarge { len: body.len(), max });
    }
    codec::write_body(w, &body).await?;
    Ok(4 + body.len())
}

fn tag_of(body: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(body.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::ids::ChunkHash;

    fn entry() -> WireEntry {
        WireEntry {
            path: crate::relpath::RelPath::parse("a").unwrap(),
            kind: WireKind::File,
            size: 1,
            mode: 0o644,
            mtime: WireMtime { secs: 0, nanos: 0 },
            version: vec![(1, 1)],
            modified_by: 1,
            deleted: false,
            blocks: vec![WireBlock { hash: ChunkHash::of(b"x"), len: 1 }],
        }
    }

    /// The limit of each variant, by value: the tags in `Control::max_frame` must
    /// name the same variants (an exhaustive match, so a new variant is placed).
    fn limit_of(c: &Control) -> usize {
        match c {
            Control::Index { .. }
            | Control::IndexBatch { .. }
            | Control::BenchOffer { .. }
            | Control::IndexDelta { .. }
            | Control::EntriesWanted { .. }
            | Control::EntriesReply { .. } => MAX_FRAME,
            Control::Peers(_) => MAX_PEERS_FRAME,
            Control::Have(_) => MAX_HAVE_FRAME,
            Control::ShareAdded(_)
            | Control::BenchDone { .. }
            | Control::BenchEnd { .. }
            | Control::Leaving
            | Control::ShareRemoved { .. }
            | Control::Removed(_)
            | Control::CertRequest { .. }
            | Control::CertReply { .. } => MAX_SMALL_CONTROL,
            Control::Members(_) => MAX_MEMBERS_FRAME,
        }
    }

    #[test]
    fn control_limits_follow_the_variant() {
        let sh = ShareHello { name: "s".into(), index_id: 1, max_seq: 2, have: None };
        let path = crate::relpath::RelPath::parse("a").unwrap();
        let all = [
            Control::Index { share: "s".into(), index_id: 1, entries: vec![entry()], upto_seq: 1 },
            Control::Peers(vec![]),
            Control::ShareAdded(sh),
            Control::Have(HaveMap::from_held("s".into(), path, crate::ids::ContentId([0; 32]), 1, &[true])),
            Control::BenchOffer { id: 1, entry: entry() },
            Control::BenchDone { id: 1, ok: true },
            Control::BenchEnd { id: 1 },
            Control::IndexBatch { share: "s".into(), index_id: 1, entries: vec![], same: vec![], upto_seq: 1 },
            Control::Leaving,
            Control::ShareRemoved { share: "s".into() },
            Control::Removed(RemovalNotice { node: [1; 32], name: "n".into(), issued: 1, signature: vec![2] }),
            Control::Members(full_members()),
            Control::CertRequest { id: 1, want: CertWant::Renew },
            Control::CertReply { id: 1, reply: CertReply::NotAdmin },
            Control::IndexDelta {
                share: "s".into(),
                index_id: 1,
                entries: vec![],
                same: vec![],
                deltas: vec![],
                upto_seq: 1,
            },
            Control::EntriesWanted { share: "s".into(), index_id: 1, paths: vec![] },
            Control::EntriesReply { share: "s".into(), index_id: 1, entries: vec![], absent: vec![] },
        ];
        for c in &all {
            let tag = tag_of(&encode(c).unwrap()).unwrap();
            assert_eq!(Control::max_frame(tag), limit_of(c), "{c:?}");
        }
    }

    /// A membership record naming as many nodes as a record may.
    fn full_members() -> MembersNotice {
        MembersNotice {
            share: "s".repeat(255),
            members: WireMembers::Only(vec![[0xff; 32]; MAX_SHARE_MEMBERS]),
            version: u64::MAX,
            issued: u64::MAX,
            signature: vec![0xff; 72],
        }
    }

    /// The largest membership record fits the frame its receiver accepts.
    #[test]
    fn a_full_membership_record_fits_its_frame() {
        let body = encode(&Control::Members(full_members())).unwrap();
        assert!(body.len() <= MAX_MEMBERS_FRAME, "{} bytes", body.len());
    }

    /// The largest peer list a node sends fits the frame its receiver accepts.
    #[test]
    fn a_full_peer_list_fits_its_frame() {
        let v6: std::net::SocketAddr = "[2001:db8::1]:7700".parse().unwrap();
        let p = PeerInfo { id: [0xff; 32], name: "n".repeat(MAX_NAME), addrs: vec![v6; MAX_PEER_ADDRS] };
        let body = encode(&Control::Peers(vec![p; MAX_GOSSIP_PEERS])).unwrap();
        assert!(body.len() <= MAX_PEERS_FRAME, "{} bytes", body.len());
    }

    #[tokio::test]
    async fn an_oversize_frame_is_refused_before_its_body() {
        // A StreamRequest prefix announcing 5 KiB, and nothing more: refused at once.
        let mut wire: &[u8] = &[0, 0, 0x14, 0];
        let e = read_frame::<_, StreamRequest>(&mut wire).await.unwrap_err();
        assert!(matches!(e, CodecError::TooLarge { len: 5120, max: MAX_STREAM_REQUEST }), "{e}");
        // Peers over its limit, though far under MAX_FRAME.
        let mut wire: &[u8] = &[0, 4, 0, 1, 1, 0, 0, 0];
        let e = read_frame::<_, Control>(&mut wire).await.unwrap_err();
        assert!(matches!(e, CodecError::TooLarge { max: MAX_PEERS_FRAME, .. }), "{e}");
        // Index batches may be large.
        let mut wire: &[u8] = &[0, 4, 0, 1, 0, 0, 0, 0];
        let e = read_frame::<_, Control>(&mut wire).await.unwrap_err();
        assert!(matches!(e, CodecError::Io(_)), "a large batch is read until the stream ends: {e}");
    }

    #[tokio::test]
    async fn a_writer_refuses_what_its_receiver_would() {
        let big = Control::ShareAdded(ShareHello { name: "x".repeat(70_000), index_id: 0, max_seq: 0, have: None });
        let mut out = Vec::new();
        let e = write_frame(&mut out, &big).await.unwrap_err();
        assert!(matches!(e, CodecError::TooLarge { max: MAX_SMALL_CONTROL, .. }), "{e}");
        assert!(out.is_empty(), "nothing sent");
        let ok = Control::BenchEnd { id: 3 };
        write_frame(&mut out, &ok).await.unwrap();
        assert_eq!(read_frame::<_, Control>(&mut out.as_slice()).await.unwrap(), Some(ok));
    }
}
