//! What an authenticated peer can make this node hold: every byte kept for one
//! peer's messages (the control frame being taken in, chunk data read for its
//! requests) is charged to that peer's budget, and to a node-wide pool per use, so
//! neither one peer nor all of them together can grow the daemon without bound.

use crate::codec::CodecError;
use crate::proto::{self, Framed};
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// KiB one peer's messages may hold in this node at once.
pub const PEER_MEMORY_KIB: u32 = 64 << 10;
/// KiB of control frames all peers together may hold at once.
pub const CONTROL_MEMORY_KIB: u32 = 128 << 10;

/// One peer's memory budget (one per connection).
#[derive(Clone)]
pub struct PeerBudget(Arc<Semaphore>);

impl Default for PeerBudget {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(PEER_MEMORY_KIB as usize)))
    }
}

/// Memory held for a peer, given back when dropped.
#[derive(Debug)]
pub struct Held {
    _peer: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

/// A node-wide pool that peers' budgets draw from as well (one per use).
pub fn pool(kib: u32) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(kib as usize))
}

impl PeerBudget {
    /// Waits until `bytes` fit both this peer's budget and `pool`, and holds them
    /// (more than a whole budget is charged as the whole; a pool must hold at least
    /// [`PEER_MEMORY_KIB`]). `None` once closed.
    pub async fn hold(&self, pool: &Arc<Semaphore>, bytes: u64) -> Option<Held> {
        let kib = bytes.div_ceil(1024).min(PEER_MEMORY_KIB as u64) as u32;
        // Always the peer first, then the pool: one order everywhere, no deadlock.
        let peer = self.0.clone().acquire_many_owned(kib).await.ok()?;
        let node = pool.clone().acquire_many_owned(kib).await.ok()?;
        Some(Held { _peer: peer, _node: node })
    }

    /// KiB of this budget free now (for tests and status).
    pub fn available_kib(&self) -> usize {
        self.0.available_permits()
    }
}

/// One message read from a peer, with the memory it was charged.
pub struct Inbound<T> {
    msg: T,
    charge: Charge,
    wire_len: usize,
}

/// What a message read from a peer holds: its memory, and the reader's turn (the
/// next message is read only once this is dropped).
pub struct Charge {
    _held: Held,
    _turn: OwnedSemaphorePermit,
}

impl<T> Inbound<T> {
    /// The message, and its charge: keep it until the message is dealt with.
    pub fn into_parts(self) -> (T, Charge) {
        (self.msg, self.charge)
    }

    /// The frame's size on the stream, its length prefix included.
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }
}

/// Reads frames of `T` from a peer's long-lived stream into `tx`, one at a time:
/// each is charged twice its length (the bytes, then the decoded message) to
/// `budget` and `pool` before its body is read, and the next is read only when the
/// receiver has dropped the previous. Ends after the stream's end or first error,
/// which it sends as the last item.
pub async fn read_frames<R: AsyncRead + Unpin, T: Framed>(
    mut recv: R,
    budget: PeerBudget,
    pool: Arc<Semaphore>,
    tx: mpsc::Sender<Result<Option<Inbound<T>>, CodecError>>,
) {
    let turn = Arc::new(Semaphore::new(1));
    loop {
        let Ok(my_turn) = turn.clone().acquire_owned().await else { return };
        let frame = async {
            let Some(head) = proto::read_head::<_, T>(&mut recv).await? else { return Ok(None) };
            let Some(held) = budget.hold(&pool, 2 * head.len() as u64).await else {
                return Err(CodecError::Io(std::io::ErrorKind::BrokenPipe.into()));
            };
            let wire_len = 4 + head.len();
            let msg = head.body(&mut recv).await?;
            Ok(Some(Inbound { msg, charge: Charge { _held: held, _turn: my_turn }, wire_len }))
        }
        .await;
        let last = !matches!(frame, Ok(Some(_)));
        if tx.send(frame).await.is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_holds_at_most_its_budget_and_the_pool_bounds_all_peers() {
        let pool = pool(96 << 10);
        let (a, b) = (PeerBudget::default(), PeerBudget::default());
        let first = a.hold(&pool, 40 << 20).await.unwrap();
        assert_eq!(a.available_kib(), 24 << 10);
        // More than a's remaining budget waits, although the pool has room.
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), a.hold(&pool, 40 << 20)).await;
        assert!(more.is_err(), "a peer past its budget waits");
        // Another peer draws from the same pool: 56 MiB are left of it.
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), b.hold(&pool, 60 << 20)).await;
        assert!(other.is_err(), "the pool bounds every peer together");
        let small = b.hold(&pool, 50 << 20).await.unwrap();
        drop(first);
        assert_eq!(a.available_kib(), 64 << 10);
        drop(small);
        // A charge over a whole budget is charged as the whole budget.
        let whole = a.hold(&pool, 1 << 30).await.unwrap();
        assert_eq!(a.available_kib(), 0);
        drop(whole);
    }
}
