//! The UDP socket under the QUIC endpoint.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use tracing::warn;

/// Socket buffer size asked for, each way. The kernel's default (about 208 KiB)
/// holds 17 ms at 100 Mbit/s: a daemon that is off the CPU a little longer drops
/// packets, and QUIC reads each drop as congestion. 8 MiB holds 80 ms at 1 Gbit/s.
pub const WANT_BUFFER: usize = 8 << 20;

/// Binds the endpoint's socket with large send and receive buffers.
///
/// Asks with `SO_RCVBUF`/`SO_SNDBUF` (capped by `net.core.rmem_max`/`wmem_max`),
/// then, if that fell short, with the `FORCE` variants that a privileged daemon may
/// use; warns once, with the sysctl to raise, if the receive buffer stays small.
pub fn bind(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen)?;
    for (opt, force, sysctl) in [
        (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, "net.core.rmem_max"),
        (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, "net.core.wmem_max"),
    ] {
        let size = raise(&socket, opt, force);
        if size < WANT_BUFFER / 2 {
            warn!(
                kib = size >> 10,
                want_kib = WANT_BUFFER >> 10,
                "small UDP socket buffer: fast links may drop packets; raise it with `sysctl -w {sysctl}={WANT_BUFFER}`"
            );
        }
    }
    Ok(socket)
}

/// Sets one buffer, forced if the plain request was capped; returns what the
/// kernel reports (it doubles the request for bookkeeping, so halve it back).
fn raise(socket: &UdpSocket, opt: libc::c_int, force: libc::c_int) -> usize {
    let fd = socket.as_raw_fd();
    let want = WANT_BUFFER as libc::c_int;
    let set = |o: libc::c_int| {
        // SAFETY: a valid descriptor, a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                o,
                &want as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    let get = || {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor, a pointer to a live c_int and its size.
        let r = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, opt, &mut v as *mut libc::c_int as *mut libc::c_void, &mut len)
        };
        if r == 0 {
            v.max(0) as usize / 2
        } else {
            0
        }
    };
    set(opt);
    if get() < WANT_BUFFER {
        // Needs CAP_NET_ADMIN; failing is fine, the plain size stays.
        set(force);
    }
    get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_raised_as_far_as_the_kernel_allows() {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let rcv = raise(&s, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE);
        // At least what an unprivileged request gets; more where forcing is allowed.
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        assert!(rcv >= WANT_BUFFER.min(cap), "receive buffer {rcv}, rmem_max {cap}");
        if rcv < WANT_BUFFER {
            println!("SO_RCVBUFFORCE not permitted here (no CAP_NET_ADMIN): got {rcv} bytes");
        }
    }
}
