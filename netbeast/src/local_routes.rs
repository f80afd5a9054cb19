//! The routes of the kernel's local routing table (table 255), read with a
//! netlink `RTM_GETROUTE` dump: what `-m addrtype` classifies addresses by
//! (LOCAL for the host's addresses and `127.0.0.0/8`, BROADCAST for the
//! subnets' broadcast addresses, ...), and for ip6tables the IPv6 local and
//! main tables (`local_routes6`). Plain `libc` sockets: the dump is one
//! request and a few replies, not worth a netlink crate.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::rules::model::{Ipv4Net, Ipv6Net};
use netbeast_common::addr_type;

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// `struct rtmsg`.
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_NH_ID: u16 = 30;
const RT_TABLE_MAIN: u32 = 254;
const AF_INET6: u8 = 10;
const RTA_TABLE: u16 = 15;
const RT_TABLE_LOCAL: u32 = 255;
const AF_INET: u8 = 2;
/// Bytes read per `recv`: the kernel's dump messages fit (it sizes them
/// to a page at most, 32 KiB with large pages).
const RECV_BUFFER: usize = 64 * 1024;

/// The IPv4 routes of the local table as (destination, route value): the
/// type numbered as `addr_type::*` (the kernel's `RTN_*`) with the
/// route's interface (`addr_type::route_value`; `& addr_type::TYPE_MASK`
/// is the type).
pub fn local_routes() -> io::Result<Vec<(Ipv4Net, u32)>> {
    Ok(dump(AF_INET)?
        .into_iter()
        .filter(|r| r.table == RT_TABLE_LOCAL && r.dst_len <= 32)
        .map(|r| {
            let d = r.dst;
            (
                Ipv4Net::new(Ipv4Addr::new(d[0], d[1], d[2], d[3]), r.dst_len),
                addr_type::route_value(u32::from(r.kind), r.oif),
            )
        })
        .collect())
}

/// The IPv6 routes of the local and main tables as (destination, route
/// value), what xt_addrtype's IPv6 route lookup finds (`addr_type::key6`):
/// the local table's (`local`, `anycast`, `multicast`, ...) over the main
/// table's, whose `unreachable`, `blackhole` and `prohibit` routes make
/// UNREACHABLE, and whose on-link routes shorter than /127 make their
/// subnet-router address (the prefix itself) ANYCAST, as
/// `ipv6_anycast_destination` has it. An address no route covers is
/// UNREACHABLE. Policy rules and other tables are not read: the kernel's
/// lookup goes through them.
pub fn local_routes6() -> io::Result<Vec<(Ipv6Net, u32)>> {
    let routes = dump(AF_INET6)?;
    let mut out: Vec<(Ipv6Net, u32)> = Vec::new();
    let mut put = |net: Ipv6Net, value: u32, over: bool| match out
        .iter_mut()
        .find(|(n, _)| n.prefix_len == net.prefix_len && n.addr == net.addr)
    {
        Some(slot) if over => slot.1 = value,
        Some(_) => {}
        None => out.push((net, value)),
    };
    for r in routes
        .iter()
        .filter(|r| r.table == RT_TABLE_MAIN && r.dst_len <= 128)
    {
        let net = Ipv6Net::new(Ipv6Addr::from(r.dst), r.dst_len);
        put(net, addr_type::route_value(u32::from(r.kind), r.oif), false);
        if r.dst_len < 127 && !r.via_gateway && u32::from(r.kind) == addr_type::UNICAST {
            put(
                Ipv6Net::new(net.addr, 128),
                addr_type::route_value(addr_type::ANYCAST, r.oif),
                false,
            );
        }
    }
    for r in routes
        .iter()
        .filter(|r| r.table == RT_TABLE_LOCAL && r.dst_len <= 128)
    {
        let net = Ipv6Net::new(Ipv6Addr::from(r.dst), r.dst_len);
        put(net, addr_type::route_value(u32::from(r.kind), r.oif), true);
    }
    Ok(out)
}

/// One route of a dump: what the address types are made of.
struct Route {
    table: u32,
    dst: [u8; 16],
    dst_len: u8,
    /// `RTN_*`.
    kind: u8,
    oif: u32,
    /// Through a gateway (or several, or a nexthop object): not on-link.
    via_gateway: bool,
}

/// Every route of `family` (all tables), read with one netlink dump.
fn dump(family: u8) -> io::Result<Vec<Route>> {
    // SAFETY: plain socket call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let mut request = [0u8; NLMSG_HDRLEN + RTMSG_LEN];
    request[0..4].copy_from_slice(&((NLMSG_HDRLEN + RTMSG_LEN) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request[8..12].copy_from_slice(&1u32.to_ne_bytes());
    request[NLMSG_HDRLEN] = family;
    // SAFETY: sends the request buffer; the kernel is the destination of
    // an unbound netlink socket.
    if unsafe { libc::send(fd, request.as_ptr().cast(), request.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut routes = Vec::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        // SAFETY: receives into the buffer, at most its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().expect("2 bytes"));
            if len < NLMSG_HDRLEN || len > msgs.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a truncated netlink message in the route dump",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(routes),
                NLMSG_ERROR => {
                    let errno = msgs
                        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                        .map_or(0, |e| i32::from_ne_bytes(e.try_into().expect("4 bytes")));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                RTM_NEWROUTE => routes.extend(route(family, &msgs[NLMSG_HDRLEN..len])),
                _ => {}
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// One route message of `family`.
fn route(family: u8, msg: &[u8]) -> Option<Route> {
    let rtm = msg.get(..RTMSG_LEN)?;
    let (dst_len, table, kind) = (rtm[1], rtm[4], rtm[7]);
    if rtm[0] != family {
        return None;
    }
    let mut r = Route {
        table: u32::from(table),
        dst: [0; 16],
        dst_len,
        kind,
        oif: 0,
        via_gateway: false,
    };
    let mut attrs = &msg[RTMSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match (kind, data.len()) {
            (RTA_DST, 4 | 16) => r.dst[..data.len()].copy_from_slice(data),
            (RTA_TABLE, 4) => r.table = u32::from_ne_bytes(data.try_into().expect("4 bytes")),
            (RTA_OIF, 4) => r.oif = u32::from_ne_bytes(data.try_into().expect("4 bytes")),
            (RTA_GATEWAY | RTA_MULTIPATH | RTA_NH_ID, _) => r.via_gateway = true,
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every namespace has its loopback address in the local table (when
    /// `lo` is up, as in the test's namespace and the host).
    #[test]
    fn the_local_table_has_the_loopback_address() {
        let routes = local_routes().expect("route dump");
        let lo = routes
            .iter()
            .find(|(net, _)| net.contains(Ipv4Addr::LOCALHOST));
        assert!(
            matches!(lo, Some((_, t)) if *t & addr_type::TYPE_MASK == addr_type::LOCAL),
            "{routes:?}"
        );
        // On `lo`, whose ifindex is 1 in every namespace.
        assert!(
            matches!(lo, Some((_, t)) if *t >> addr_type::ROUTE_IFINDEX_SHIFT == 1),
            "{routes:?}"
        );
    }
}

#[cfg(test)]
mod tests6 {
    use super::*;

    /// `::1` is a local route of `lo` in the local table (with `lo` up).
    #[test]
    fn the_ipv6_local_table_has_the_loopback_address() {
        let routes = local_routes6().expect("route dump");
        let lo = routes
            .iter()
            .find(|(net, _)| net.prefix_len == 128 && net.addr == Ipv6Addr::LOCALHOST);
        assert!(
            matches!(lo, Some((_, t)) if *t & addr_type::TYPE_MASK == addr_type::LOCAL),
            "{routes:?}"
        );
    }
}
