use super::*;
use rustix::net::SocketFlags;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command};
use std::time::Instant;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A source no socket uses: the lookup then goes straight to listeners.
const FROM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9);

fn is_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("netlink: skipped, needs root");
    false
}

#[test]
fn finds_an_exact_listener_with_its_owner_cookie_and_inode() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = l.local_addr().unwrap();
    let info = tcp_listener(local, FROM).unwrap().expect("listener found");
    assert_eq!(info.uid, rustix::process::geteuid().as_raw());
    assert_eq!(
        info.cookie,
        rustix::net::sockopt::socket_cookie(&l).unwrap()
    );
    assert_eq!(u64::from(info.inode), rustix::fs::fstat(&l).unwrap().st_ino);
    assert_eq!(info.local, local);
    // Asked again (the cached socket), and from an IPv4-mapped address.
    let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 40000);
    assert_eq!(tcp_listener(local, mapped), Ok(Some(info)));
}

#[test]
fn finds_a_wildcard_listener_for_another_loopback_address() {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let to = SocketAddr::from(([127, 0, 0, 2], port));
    let info = tcp_listener(to, FROM).unwrap().expect("listener found");
    assert_eq!(info.local, SocketAddr::from(([0, 0, 0, 0], port)));
    assert_eq!(
        info.cookie,
        rustix::net::sockopt::socket_cookie(&l).unwrap()
    );
}

/// An IPv6 wildcard listener with IPV6_V6ONLY off.
fn dual_stack_listener() -> TcpListener {
    use rustix::net::{bind, listen, socket_with, sockopt, AddressFamily, SocketType};
    let fd = socket_with(
        AddressFamily::INET6,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    sockopt::set_ipv6_v6only(&fd, false).unwrap();
    bind(&fd, &SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).unwrap();
    listen(&fd, 16).unwrap();
    TcpListener::from(fd)
}

#[test]
fn finds_a_dual_stack_listener_for_ipv4_and_mapped_destinations() {
    let l = dual_stack_listener();
    let port = l.local_addr().unwrap().port();
    let cookie = rustix::net::sockopt::socket_cookie(&l).unwrap();
    let wildcard = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    for to in [
        loopback(port),
        SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), port),
    ] {
        let info = tcp_listener(to, FROM).unwrap().expect("listener found");
        assert_eq!((info.cookie, info.local), (cookie, wildcard), "to {to}");
    }
    let info = tcp_listener(
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        "[::1]:9".parse().unwrap(),
    );
    assert_eq!(info.unwrap().map(|i| i.cookie), Some(cookie));
}

#[test]
fn a_closed_port_has_no_listener() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(tcp_listener(loopback(port), FROM), Ok(None));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    assert_eq!(tcp_listener(v6, "[::1]:9".parse().unwrap()), Ok(None));
}

#[test]
fn an_established_four_tuple_is_not_a_listener() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, from) = l.accept().unwrap();
    assert_eq!(from, client.local_addr().unwrap());
    let to = server.local_addr().unwrap();
    // The kernel finds the accepted socket, as it would for a segment.
    let (state, info) = tcp_lookup(to, from).unwrap().expect("socket found");
    assert_eq!(state, 1, "TCP_ESTABLISHED");
    assert_eq!(
        info.cookie,
        rustix::net::sockopt::socket_cookie(&server).unwrap()
    );
    // tcp_listener asks again from port 0, which finds the listener.
    let again = tcp_listener(to, from).unwrap().expect("listener found");
    assert_eq!(
        again.cookie,
        rustix::net::sockopt::socket_cookie(&l).unwrap()
    );
    // Another source port reaches the listener.
    let listener = tcp_listener(to, FROM).unwrap().expect("listener found");
    assert_eq!(
        listener.cookie,
        rustix::net::sockopt::socket_cookie(&l).unwrap()
    );
}

/// A server that closed first leaves its side in TIME_WAIT: that
/// 4-tuple is found before the listener (as a SYN would find it).
#[test]
fn a_four_tuple_in_time_wait_is_not_a_listener() {
    use std::io::Read;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, from) = l.accept().unwrap();
    let to = server.local_addr().unwrap();
    drop(server);
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tcp_lookup(to, from).unwrap() {
            Some((6, _)) => break, // TCP_TIME_WAIT
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(tcp_listener(to, from).unwrap().is_some());
    assert!(tcp_listener(to, FROM).unwrap().is_some());
}

/// Of an SO_REUSEPORT group, the lookup names the member that the
/// connection from that exact source then reaches (almost always).
#[test]
fn picks_the_reuseport_member_a_connection_reaches() {
    use rustix::net::{bind, connect, listen, socket_with, sockopt, AddressFamily, SocketType};
    let mut port = 0;
    let members: Vec<TcpListener> = (0..4)
        .map(|_| {
            let fd = socket_with(
                AddressFamily::INET,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            sockopt::set_socket_reuseport(&fd, true).unwrap();
            bind(&fd, &loopback(port)).unwrap();
            listen(&fd, 64).unwrap();
            let l = TcpListener::from(fd);
            port = l.local_addr().unwrap().port();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let to = members[0].local_addr().unwrap();
    let cookies: Vec<u64> = members
        .iter()
        .map(|l| rustix::net::sockopt::socket_cookie(l).unwrap())
        .collect();
    let mut seen = Vec::new();
    let mut missed = Vec::new();
    for _ in 0..32 {
        let client = socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&client, &loopback(0)).unwrap();
        let from = TcpStream::from(client);
        let from_addr = from.local_addr().unwrap();
        let predicted = tcp_listener(to, from_addr)
            .unwrap()
            .expect("a member")
            .cookie;
        connect(&from, &to).unwrap();
        let reached: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].accept().is_ok())
            .collect();
        assert_eq!(reached.len(), 1);
        assert!(cookies.contains(&predicted), "from {from_addr}");
        if cookies[reached[0]] != predicted {
            missed.push(from_addr);
        }
        seen.push(reached[0]);
    }
    // The kernel's SYN now and then lands on another member than the
    // same lookup names (measured: 5 runs in 300, one connection each;
    // asked again, the lookup repeats its answer). Harmless to a
    // connector, which only needs some member of the group.
    assert!(missed.len() <= 2, "mispredicted for {missed:?}");
    seen.sort_unstable();
    seen.dedup();
    assert!(seen.len() > 1, "one member took every connection: {seen:?}");
}

#[test]
fn routes_of_local_addresses() {
    assert_eq!(
        route(Ipv4Addr::LOCALHOST.into()).unwrap().kind,
        RouteKind::Local
    );
    assert_eq!(
        route(Ipv6Addr::LOCALHOST.into()).unwrap().kind,
        RouteKind::Local
    );
    let lo = route(Ipv4Addr::new(127, 1, 2, 3).into()).unwrap();
    assert_eq!((lo.kind, lo.oif), (RouteKind::Local, 1));
    assert!(is_local(Ipv4Addr::LOCALHOST.into()));
    assert!(is_local(Ipv6Addr::LOCALHOST.into()));
    assert!(is_local(
        Ipv4Addr::new(127, 9, 9, 9).to_ipv6_mapped().into()
    ));
    assert!(is_local(Ipv4Addr::UNSPECIFIED.into()));
    assert!(is_local(Ipv6Addr::UNSPECIFIED.into()));

    // The host's own addresses (a lookup sends nothing).
    let out = Command::new("ip").args(["-o", "addr"]).output();
    let out = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let own: Vec<IpAddr> = out
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(2);
            let (_, cidr) = (words.next()?, words.next()?);
            cidr.split('/').next()?.parse().ok()
        })
        .filter(|ip: &IpAddr| !ip.is_loopback())
        .collect();
    for ip in &own {
        let r = route(*ip).unwrap();
        assert_eq!(r.kind, RouteKind::Local, "{ip}");
        assert!(is_local(*ip), "{ip}");
    }
    eprintln!("netlink: own addresses {own:?}");

    // Documentation addresses: never ours.
    for ip in ["192.0.2.1", "198.51.100.1", "2001:db8::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        if !own.contains(&ip) {
            assert!(!is_local(ip), "{ip} local? {:?}", route(ip));
        }
    }
}

#[test]
fn loopback_has_no_peer_namespace_and_ours_has_no_id() {
    assert_eq!(link_netnsid(1), Ok(None));
    assert_eq!(netnsid_of_pid(std::process::id()), Ok(None));
    assert_eq!(link_netnsid(0x7fff_fff0), Err(Errno::NODEV));
    assert_eq!(link_netnsid(u32::MAX), Err(Errno::NODEV));
    assert_eq!(netnsid_of_pid(i32::MAX as u32), Err(Errno::SRCH));
}

#[test]
fn malformed_replies_are_eproto() {
    let mut msg = [0u8; 20];
    msg[..4].copy_from_slice(&20u32.to_ne_bytes());
    assert!(Messages(&msg).all(|m| m.is_ok()));
    for len in [0u32, 15, 21, u32::MAX] {
        msg[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(
            Messages(&msg).next().map(|m| m.err()),
            Some(Some(Errno::PROTO))
        );
    }
    assert!(Messages(&msg[..3]).next().is_some_and(|m| m.is_err()));
    // An unpadded last attribute is fine; a short or overlong one is not.
    assert_eq!(
        Attrs::new(&[5, 0, 1, 0, 7]).collect::<Result<Vec<_>, _>>(),
        Ok(vec![(1, &[7u8][..])])
    );
    for bad in [&[3u8, 0, 1, 0][..], &[9, 0, 1, 0, 7], &[4, 0]] {
        assert_eq!(Attrs::new(bad).last(), Some(Err(Errno::PROTO)));
    }
    assert_eq!(parse_diag(&[0; 71]), Err(Errno::PROTO));
    assert_eq!(parse_route(AF_INET, &[0; 7]), Err(Errno::PROTO));
    let unicast = [2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 8, 0, 7, 0, 1, 2, 3, 4];
    let prefsrc = Some(Ipv4Addr::new(1, 2, 3, 4).into());
    assert_eq!(
        parse_route(AF_INET, &unicast),
        Ok(Route {
            kind: RouteKind::Unicast,
            oif: 0,
            prefsrc
        })
    );
    assert_eq!(parse_route(AF_INET, &unicast[..19]), Err(Errno::PROTO));
    assert_eq!(parse_route(AF_INET6, &unicast), Err(Errno::PROTO));
}

/// Per-call cost on the cached sockets (`--release` for the real figure).
#[test]
fn timing() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    let n = 10_000u32;
    // The best of five batches: other tests share the machine.
    let time = |f: &dyn Fn()| {
        f();
        (0..5)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    f();
                }
                start.elapsed() / n
            })
            .min()
            .unwrap_or_default()
    };
    let diag = time(&|| assert!(tcp_listener(to, FROM).unwrap().is_some()));
    let none = time(&|| assert!(tcp_listener(loopback(1), FROM).unwrap().is_none()));
    let rt = time(&|| assert!(route(Ipv4Addr::new(127, 0, 0, 2).into()).is_ok()));
    let link = time(&|| assert!(link_netnsid(1).is_ok()));
    eprintln!(
        "netlink: tcp_listener {diag:?} (nothing listening {none:?}), route {rt:?}, link_netnsid {link:?} per call"
    );
}

#[test]
fn threads_share_the_socket_and_each_get_their_own_answers() {
    let ls: Vec<TcpListener> = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::thread::scope(|s| {
        for l in &ls {
            s.spawn(move || {
                let cookie = rustix::net::sockopt::socket_cookie(l).unwrap();
                let to = l.local_addr().unwrap();
                for _ in 0..2000 {
                    let info = tcp_listener(to, FROM).unwrap().unwrap();
                    assert_eq!(info.cookie, cookie);
                    assert_eq!(route(to.ip()).unwrap().kind, RouteKind::Local);
                }
            });
        }
    });
}

/// A forked child must not use its parent's socket: it gets answers on
/// one of its own.
#[test]
fn a_forked_child_opens_its_own_socket() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = l.local_addr().unwrap();
    let before = tcp_listener(to, FROM).unwrap();
    // Another test's thread may hold the socket a moment (then None).
    let fd_before = (0..1000)
        .find_map(|_| {
            let fd = cached_fd(&DIAG);
            if fd.is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            fd
        })
        .expect("the cached socket");
    let (r, w) = rustix::pipe::pipe().unwrap();
    // SAFETY: the child runs only this test's code and leaves with _exit.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        crate::platform::fork::advance();
        let ok = tcp_listener(to, FROM).ok() == Some(before) && cached_fd(&DIAG) != Some(fd_before);
        let _ = rustix::io::write(&w, &[u8::from(ok)]);
        // SAFETY: _exit skips the test harness's cleanup, as a child must.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(0)
        };
    }
    drop(w);
    let mut byte = [0u8];
    let _ = rustix::io::read(&r, &mut byte);
    let mut status = 0;
    // SAFETY: our own child.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(byte, [1], "the child's lookup");
}

/// The cached socket, by inode (an fd number may be reused by another
/// socket once a concurrent test's socket is closed); None also when
/// another thread (or, in a child, a thread of the parent) holds it.
fn cached_fd(ch: &Channel) -> Option<u64> {
    let guard = ch.cached.try_lock()?;
    let conn = guard.current.as_ref()?;
    rustix::fs::fstat(conn.fd.as_fd()).ok().map(|st| st.st_ino)
}

/// Namespaces (and the veth between them) deleted on drop, a sleeper
/// killed.
struct Namespaces {
    names: Vec<String>,
    sleeper: Option<Child>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Some(mut s) = self.sleeper.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const VETH_ENV: &str = "SHMNET_NETLINK_VETH_TEST";

/// Namespace b reaches 10.211.77.1 through a veth whose peer lives in
/// namespace a: the route leaves through that link, and the link's peer
/// namespace id is the id of namespace a's process.
#[test]
fn a_veth_leads_to_the_peer_namespace() {
    if !is_root() {
        return;
    }
    let pid = std::process::id();
    let (a, b) = (format!("shmnet-nl-a-{pid}"), format!("shmnet-nl-b-{pid}"));
    let mut ns = Namespaces {
        names: Vec::new(),
        sleeper: None,
    };
    for n in [&a, &b] {
        let ok = Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("netlink: skipped, cannot create network namespaces");
            return;
        }
        ns.names.push(n.clone());
    }
    ip(&[
        "-n", &a, "link", "add", "nla", "type", "veth", "peer", "name", "nlb", "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", "10.211.77.1/24", "dev", "nla"]);
    ip(&["-n", &b, "addr", "add", "10.211.77.2/24", "dev", "nlb"]);
    for (n, dev) in [(&a, "nla"), (&b, "nlb"), (&a, "lo"), (&b, "lo")] {
        ip(&["-n", n, "link", "set", dev, "up"]);
    }
    let sleeper = Command::new("ip")
        .args(["netns", "exec", &a, "sleep", "60"])
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id();
    ns.sleeper = Some(sleeper);
    // `ip netns exec` enters the namespace before it execs sleep.
    let want = std::fs::metadata(format!("/run/netns/{a}")).unwrap().ino();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(format!("/proc/{sleeper_pid}/ns/net"))
        .map(|m| m.ino())
        .ok()
        != Some(want)
    {
        assert!(Instant::now() < deadline, "sleeper never entered {a}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = Command::new("ip")
        .args(["-n", &b, "-o", "link", "show", "dev", "nlb"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let ifindex: u32 = line
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .expect("ifindex of nlb");
    eprintln!(
        "netlink: from the host namespace, {a} has id {:?}",
        netnsid_of_pid(sleeper_pid)
    );

    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &b])
        .arg(exe)
        .args([
            "--exact",
            "platform::netlink::tests::veth_check_inside_namespace",
            "--nocapture",
            "--ignored",
        ])
        .env(VETH_ENV, format!("{sleeper_pid} {ifindex}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{stderr}"
    );
}

/// Run by [`a_veth_leads_to_the_peer_namespace`] inside namespace b.
#[test]
#[ignore = "run inside a namespace by a_veth_leads_to_the_peer_namespace"]
fn veth_check_inside_namespace() {
    let Ok(env) = std::env::var(VETH_ENV) else {
        return;
    };
    let mut words = env.split(' ').map(|w| w.parse::<u32>().unwrap());
    let (sleeper, ifindex) = (words.next().unwrap(), words.next().unwrap());
    let first = netnsid_of_pid(sleeper);
    let r = route(Ipv4Addr::new(10, 211, 77, 1).into()).unwrap();
    assert_eq!(r.kind, RouteKind::Unicast);
    assert_eq!(r.oif, ifindex);
    assert_eq!(r.prefsrc, Some(Ipv4Addr::new(10, 211, 77, 2).into()));
    let link = link_netnsid(r.oif).unwrap();
    let id = netnsid_of_pid(sleeper).unwrap();
    eprintln!(
        "netlink: inside b: peer id before the link query {first:?}; link {link:?}, pid {id:?}"
    );
    assert!(link.is_some());
    assert_eq!(link, id);
    assert!(is_local(Ipv4Addr::new(10, 211, 77, 2).into()));
    assert!(!is_local(Ipv4Addr::new(10, 211, 77, 1).into()));
    assert_eq!(link_netnsid(1), Ok(None));
    assert_eq!(netnsid_of_pid(std::process::id()), Ok(None));
    // Nothing unreachable is routed: no default route in b.
    assert_eq!(
        route(Ipv4Addr::new(10, 211, 78, 1).into()).err(),
        Some(Errno::NETUNREACH)
    );
}

#[test]
fn finds_a_udp_receivers_buffer_as_the_kernel_would_deliver() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&rx, 300_000).unwrap();
    let stored = rustix::net::sockopt::socket_recv_buffer_size(&rx).unwrap() as u32;
    let to = rx.local_addr().unwrap();
    assert_eq!(udp_receive_buffer(to, FROM), Ok(Some(stored)));
    // A wildcard receiver, reached at another loopback address; nobody.
    let any = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = any.local_addr().unwrap().port();
    let got = udp_receive_buffer(SocketAddr::from(([127, 0, 0, 2], port)), FROM);
    let stored = rustix::net::sockopt::socket_recv_buffer_size(&any).unwrap() as u32;
    assert_eq!(got, Ok(Some(stored)));
    drop(rx);
    assert_eq!(udp_receive_buffer(to, FROM), Ok(None));
    // IPv6, from ::1.
    let rx6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let stored = rustix::net::sockopt::socket_recv_buffer_size(&rx6).unwrap() as u32;
    let from6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
    let got = udp_receive_buffer(rx6.local_addr().unwrap(), from6);
    assert_eq!(got, Ok(Some(stored)));
}
