//! Which addresses this node tells others to reach it at.
//!
//! A wildcard listen (`0.0.0.0:7700`, `[::]:7700`) is not an address anyone can
//! dial: the node advertises its interfaces' addresses instead (read again while it
//! runs, as DHCP or an admin changes them), unless `advertise` names them.

use std::net::{IpAddr, SocketAddr};

/// The addresses to advertise: the configured ones, else the listen address, else
/// (for a wildcard listen) this host's usable interface addresses.
pub fn advertised(listen: SocketAddr, configured: &[SocketAddr]) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let ips: Vec<IpAddr> = if_addrs::get_if_addrs().unwrap_or_default().iter().map(|i| i.ip()).collect();
    pick(listen, &ips)
}

/// True for an address a peer could dial: not a wildcard, not port 0, not
/// multicast or broadcast.
pub fn dialable(a: &SocketAddr) -> bool {
    let ip = a.ip();
    a.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// From this host's interface addresses, what a wildcard `listen` advertises: every
/// non-loopback address of a family the socket takes (an IPv6 wildcard takes IPv4
/// too), without link-local ones (an IPv6 link-local address needs an interface
/// scope that a peer cannot know); IPv4 first. Loopback only if there is nothing
/// else, so a lone host still reaches itself.
pub fn pick(listen: SocketAddr, ips: &[IpAddr]) -> Vec<SocketAddr> {
    let port = listen.port();
    let family_ok = |ip: &IpAddr| listen.is_ipv6() || ip.is_ipv4();
    let link_local = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.is_unicast_link_local(),
    };
    let mut out: Vec<SocketAddr> = ips
        .iter()
        .filter(|ip| family_ok(ip) && !ip.is_loopback() && !link_local(ip))
        .map(|ip| SocketAddr::new(*ip, port))
        .filter(dialable)
        .collect();
    if out.is_empty() {
        out = ips.iter().filter(|ip| family_ok(ip) && ip.is_loopback()).map(|ip| SocketAddr::new(*ip, port)).collect();
    }
    out.sort_by_key(|a| (a.is_ipv6(), *a));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_wildcard_advertises_the_interfaces_of_its_family() {
        let host = ips(&["127.0.0.1", "::1", "198.18.0.2", "fe80::1", "2001:db8::2", "10.0.0.5", "169.254.3.4"]);
        assert_eq!(pick("0.0.0.0:7700".parse().unwrap(), &host), addrs(&["10.0.0.5:7700", "198.18.0.2:7700"]));
        assert_eq!(
            pick("[::]:7700".parse().unwrap(), &host),
            addrs(&["10.0.0.5:7700", "198.18.0.2:7700", "[2001:db8::2]:7700"])
        );
    }

    #[test]
    fn loopback_only_when_nothing_else() {
        let host = ips(&["127.0.0.1", "::1"]);
        assert_eq!(pick("0.0.0.0:9".parse().unwrap(), &host), addrs(&["127.0.0.1:9"]));
        assert!(pick("0.0.0.0:9".parse().unwrap(), &[]).is_empty());
    }

    #[test]
    fn configured_or_specific_addresses_win() {
        let listen: SocketAddr = "198.18.0.2:7700".parse().unwrap();
        assert_eq!(advertised(listen, &[]), vec![listen]);
        let conf = addrs(&["203.0.113.7:7700"]);
        assert_eq!(advertised("0.0.0.0:7700".parse().unwrap(), &conf), conf);
    }

    #[test]
    fn wildcards_and_port_zero_are_not_dialable() {
        for bad in ["0.0.0.0:7700", "[::]:7700", "10.0.0.1:0", "224.0.0.1:7700", "255.255.255.255:7700"] {
            assert!(!dialable(&bad.parse().unwrap()), "{bad}");
        }
        assert!(dialable(&"10.0.0.1:7700".parse().unwrap()));
    }
}
