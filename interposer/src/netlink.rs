//! STUB (the real module lands from main).
#![allow(dead_code)]
#![deny(unsafe_code)]
use rustix::io::Errno;
use std::net::{IpAddr, SocketAddr};
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpListenerInfo {
    pub uid: u32,
    pub cookie: u64,
    pub inode: u32,
    pub local: SocketAddr,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Local,
    Unicast,
    Other,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub kind: RouteKind,
    pub oif: u32,
    pub prefsrc: Option<IpAddr>,
}
pub(crate) fn tcp_listener(
    _to: SocketAddr,
    _from: SocketAddr,
) -> Result<Option<TcpListenerInfo>, Errno> {
    Err(Errno::NOSYS)
}
pub(crate) fn route(_dest: IpAddr) -> Result<Route, Errno> {
    Err(Errno::NOSYS)
}
pub(crate) fn link_netnsid(_ifindex: u32) -> Result<Option<i32>, Errno> {
    Ok(None)
}
pub(crate) fn netnsid_of_pid(_pid: u32) -> Result<Option<i32>, Errno> {
    Ok(None)
}
pub(crate) fn is_local(ip: IpAddr) -> bool {
    crate::rendezvous::is_loopback(ip)
}
