//! The download progress maps peers announced: which chunks of which file version
//! each peer can serve while it downloads it.

use crate::ids::{ContentId, NodeId};
use crate::proto::HaveMap;
use crate::relpath::RelPath;
use std::collections::HashMap;
use std::sync::Mutex;

/// Progress maps announced by peers, per path.
#[derive(Default)]
pub struct Announced {
    maps: Mutex<HashMap<RelPath, HashMap<NodeId, HaveMap>>>,
}

impl Announced {
    /// Stores a peer's newest map of a file; malformed maps are dropped (false).
    pub fn record(&self, peer: NodeId, map: HaveMap) -> bool {
        if !map.is_well_formed() {
            return false;
        }
        let mut m = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(map.path.clone()).or_default().insert(peer, map);
        true
    }

    /// Forgets everything a peer announced (it disconnected).
    pub fn forget_peer(&self, peer: &NodeId) {
        let mut m = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| {
            v.remove(peer);
            !v.is_empty()
        });
    }

    /// Maps announced for this version of a file.
    pub fn for_content(&self, path: &RelPath, content: &ContentId) -> Vec<(NodeId, HaveMap)> {
        let m = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        m.get(path)
            .map(|v| v.iter().filter(|(_, h)| h.content == *content).map(|(id, h)| (*id, h.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    #[test]
    fn malformed_maps_are_dropped_and_peers_forgotten() {
        let a = Announced::default();
        let path = RelPath::parse("f").unwrap();
        let c = ContentId([1; 32]);
        let bad = HaveMap { share: "s".into(), path: path.clone(), content: c, blocks: 20, bits: vec![0xff] };
        assert!(!a.record(id(1), bad));
        let good = HaveMap::from_held("s".into(), path.clone(), c, 3, &[true, false, true]);
        assert!(a.record(id(1), good.clone()));
        assert_eq!(a.for_content(&path, &c), vec![(id(1), good)]);
        assert!(a.for_content(&path, &ContentId([2; 32])).is_empty(), "other versions are ignored");
        a.forget_peer(&id(1));
        assert!(a.for_content(&path, &c).is_empty());
    }
}
