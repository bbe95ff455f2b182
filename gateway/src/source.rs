//! Which source address the onward connection presents to the server
//! behind this gateway, and the connect that presents it.
//!
//! By default the gateway's own (the kernel's or the library's choice for
//! the destination: for one of this host's addresses, that address). With
//! `--original-source`, the remote client's, as ztunnel does
//! (`enable_original_source`): the `forwarded: for=` address the peer
//! gateway sent, if it is a usable unicast address other than the
//! destination, else the peer gateway's own address (the host the client
//! is on); the socket is bound to it with IP_TRANSPARENT (needs
//! CAP_NET_ADMIN; without it, the gateway's own address). Never a loopback
//! address: a server's `allow 127.0.0.1` must not admit a remote client.
//! (docs/design/gateway.md, "What a server behind a gateway sees".)

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::{TcpSocket, TcpStream};

/// The last `for=` of a `forwarded` header (RFC 7239): `for=IP`,
/// `for="IP:PORT"`, `for="[IPv6]:PORT"`; None if there is none or it is
/// not an address.
pub fn forwarded_for(header: &str) -> Option<IpAddr> {
    let last = header
        .split([',', ';'])
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.eq_ignore_ascii_case("for").then_some(v.trim())
        })
        .next_back()?;
    let v = last.trim_matches('"');
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
}

/// The address to present for a stream to `dest` from the peer gateway at
/// `link_peer` whose header says `forwarded`.
pub fn client_address(
    forwarded: Option<IpAddr>,
    link_peer: SocketAddr,
    dest: SocketAddr,
) -> IpAddr {
    let usable = |ip: IpAddr| {
        let ip = ip.to_canonical();
        !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
            && ip.is_ipv4() == dest.is_ipv4()
            && ip != dest.ip()
    };
    match forwarded.map(|ip| ip.to_canonical()) {
        Some(ip) if usable(ip) => ip,
        _ => link_peer.ip().to_canonical(),
    }
}

/// Connects to `dest`, from `source` if given and the kernel lets this
/// process bind it (IP_TRANSPARENT), else from the usual address.
pub async fn connect(dest: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = if dest.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = source.filter(|s| s.is_ipv4() == dest.is_ipv4()) {
        if transparent(&sock, dest.is_ipv4()).is_ok() {
            let _ = sock.bind(SocketAddr::new(src, 0));
        }
    }
    sock.connect(dest).await
}

fn transparent(sock: &TcpSocket, v4: bool) -> io::Result<()> {
    let (level, name) = if v4 {
        (libc::SOL_IP, libc::IP_TRANSPARENT)
    } else {
        (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_takes_the_last_address() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(forwarded_for(r#"for="127.1.2.3:4000""#), ip("127.1.2.3"));
        assert_eq!(forwarded_for("for=127.1.2.3"), ip("127.1.2.3"));
        assert_eq!(forwarded_for(r#"for="[fd00::1]:80""#), ip("fd00::1"));
        assert_eq!(
            forwarded_for(r#"for=127.0.0.5, for="127.0.0.6";proto=https"#),
            ip("127.0.0.6")
        );
        assert_eq!(forwarded_for("proto=https"), None);
        assert_eq!(forwarded_for("for=unknown"), None);
    }

    #[test]
    fn a_loopback_or_the_destination_is_never_presented() {
        let peer: SocketAddr = "10.211.0.1:40000".parse().unwrap();
        let dest: SocketAddr = "10.211.2.2:80".parse().unwrap();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let pick = |f: Option<IpAddr>| client_address(f, peer, dest);
        assert_eq!(pick(Some(a("10.211.9.9"))), a("10.211.9.9"));
        assert_eq!(pick(Some(a("127.0.0.1"))), a("10.211.0.1"));
        assert_eq!(pick(Some(a("::ffff:127.0.0.1"))), a("10.211.0.1"));
        assert_eq!(pick(Some(a("10.211.2.2"))), a("10.211.0.1"));
        assert_eq!(pick(Some(a("fd00::1"))), a("10.211.0.1"));
        assert_eq!(pick(None), a("10.211.0.1"));
    }
}
