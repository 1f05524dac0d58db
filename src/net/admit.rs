//! Places for connections that have not proved anything yet: a stranger may hold
//! only a few, and only a few from one address, whatever it sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many places there are, in all and per source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// In all.
    pub total: usize,
    /// From one source (an IPv4 address, or an IPv6 /64: one host's share of addresses).
    pub per_source: usize,
}

/// Why a connection got no place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// Every place is taken.
    #[error("all {0} places are taken")]
    Total(usize),
    /// Its source holds its share of places already.
    #[error("its address holds {0} places already")]
    Source(usize),
}

#[derive(Debug, Default)]
struct Taken {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A set of places, shared by the tasks that admit connections.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    taken: Mutex<Taken>,
}

/// A place held; given back when dropped.
#[derive(Debug)]
pub struct Place {
    admission: Arc<Admission>,
    source: IpAddr,
}

/// The source a connection is counted under: an IPv4 address (an IPv4-mapped IPv6
/// one as IPv4), or the /64 of an IPv6 address.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Admission {
    /// Places as `caps` says.
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self { caps, taken: Mutex::new(Taken::default()) })
    }

    /// The caps.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.lock().total
    }

    /// True when no place is left for anyone.
    pub fn is_full(&self) -> bool {
        self.taken() >= self.caps.total
    }

    /// Takes a place for a connection from `ip`, if one is left for it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Place, Full> {
        let source = source_of(ip);
        let mut t = self.lock();
        if t.total >= self.caps.total {
            return Err(Full::Total(self.caps.total));
        }
        let mine = t.by_source.entry(source).or_default();
        if *mine >= self.caps.per_source {
            return Err(Full::Source(self.caps.per_source));
        }
        *mine += 1;
        t.total += 1;
        Ok(Place { admission: self.clone(), source })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut t = self.admission.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                t.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_then_total() {
        let a = Admission::new(Caps { total: 5, per_source: 2 });
        let x1 = a.admit(ip("192.0.2.1")).unwrap();
        let _x2 = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).unwrap_err(), Full::Source(2));
        // The same host by its IPv4-mapped IPv6 address is the same source.
        assert_eq!(a.admit(ip("::ffff:192.0.2.1")).unwrap_err(), Full::Source(2));
        let _y = [a.admit(ip("192.0.2.2")).unwrap(), a.admit(ip("192.0.2.2")).unwrap()];
        let _z = a.admit(ip("192.0.2.3")).unwrap();
        assert!(a.is_full());
        assert_eq!(a.admit(ip("192.0.2.4")).unwrap_err(), Full::Total(5));
        drop(x1);
        assert_eq!(a.taken(), 4);
        let _x3 = a.admit(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn an_ipv6_host_is_its_64() {
        let a = Admission::new(Caps { total: 10, per_source: 1 });
        let _p = a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(a.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(), Full::Source(1));
        let _q = a.admit(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(source_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }
}
