//! The routes of the kernel's local routing table (table 255), read with a
//! netlink `RTM_GETROUTE` dump: what `-m addrtype` classifies addresses by
//! (LOCAL for the host's addresses and `127.0.0.0/8`, BROADCAST for the
//! subnets' broadcast addresses, ...). Plain `libc` sockets: the dump is
//! one request and a few replies, not worth a netlink crate.

use std::io;
use std::net::Ipv4Addr;

use crate::rules::model::Ipv4Net;

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
    request[NLMSG_HDRLEN] = AF_INET;
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
                RTM_NEWROUTE => routes.extend(local_route(&msgs[NLMSG_HDRLEN..len])),
                _ => {}
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// One route message's destination and type, if it is an IPv4 route of
/// the local table.
fn local_route(msg: &[u8]) -> Option<(Ipv4Net, u32)> {
    let rtm = msg.get(..RTMSG_LEN)?;
    let (family, dst_len, table, kind) = (rtm[0], rtm[1], rtm[4], rtm[7]);
    if family != AF_INET || dst_len > 32 {
        return None;
    }
    let mut table = u32::from(table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = 0;
    let mut attrs = &msg[RTMSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match (kind, data.len()) {
            (RTA_DST, 4) => dst = Ipv4Addr::new(data[0], data[1], data[2], data[3]),
            (RTA_TABLE, 4) => table = u32::from_ne_bytes(data.try_into().expect("4 bytes")),
            (RTA_OIF, 4) => oif = u32::from_ne_bytes(data.try_into().expect("4 bytes")),
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    (table == RT_TABLE_LOCAL).then(|| {
        (
            Ipv4Net::new(dst, dst_len),
            netbeast_common::addr_type::route_value(u32::from(kind), oif),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbeast_common::addr_type;

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
