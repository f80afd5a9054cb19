//! Driver statistics of a veth (what `ethtool -S` prints), read with the
//! ethtool ioctl so the benchmark can poll them between runs without
//! spawning a process. The socket is made inside the interface's network
//! namespace; the kernel resolves the name there, whichever thread asks.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
};

use crate::netns::Netns;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More than any veth reports (about 10 per queue): a bound for the buffers.
const MAX_STATS: usize = 4096;

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Names of the counters the benchmark reads (veth driver, Linux 5.9+).
pub mod counter {
    /// Frames the peer accepted from this end's `ndo_xdp_xmit` (what the
    /// generator's XDP_TX sent).
    pub const XDP_XMIT: &str = "tx_queue_0_xdp_xmit";
    /// Frames refused because the peer's ring was full.
    pub const XDP_XMIT_ERRORS: &str = "tx_queue_0_xdp_xmit_errors";
    /// Frames this end's NAPI took from its ring (with or without an XDP
    /// program): what the data plane under test received.
    pub const RX_XDP_PACKETS: &str = "rx_queue_0_xdp_packets";
    /// Frames an XDP program on this end dropped.
    pub const RX_XDP_DROPS: &str = "rx_queue_0_xdp_drops";
    /// Frames lost on receive (no memory for the skb, ...).
    pub const RX_DROPS: &str = "rx_queue_0_drops";
}

/// One interface's ethtool statistics.
pub struct VethStats {
    socket: UdpSocket,
    iface: String,
    names: Vec<String>,
}

fn ioctl(socket: &UdpSocket, iface: &str, data: *mut libc::c_void) -> io::Result<()> {
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data,
        _pad: [0; 16],
    };
    let len = iface.len().min(libc::IFNAMSIZ - 1);
    ifr.name[..len].copy_from_slice(&iface.as_bytes()[..len]);
    // SAFETY: ifr points to a live buffer of the size the command implies.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL as _, &raw mut ifr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl VethStats {
    /// Opens the statistics of `iface` in `ns`.
    pub fn open(ns: &Netns, iface: &str) -> io::Result<VethStats> {
        let socket = ns
            .in_netns(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
            .map_err(io::Error::other)??;
        // struct ethtool_sset_info { cmd, reserved, sset_mask, data[] }
        let mut info = [0u32; 5];
        info[0] = ETHTOOL_GSSET_INFO;
        info[2] = 1 << ETH_SS_STATS;
        ioctl(&socket, iface, info.as_mut_ptr().cast())?;
        let count = info[4] as usize;
        if count == 0 || count > MAX_STATS {
            return Err(io::Error::other(format!(
                "{iface} reports {count} ethtool statistics"
            )));
        }
        // struct ethtool_gstrings { cmd, string_set, len, data[] }
        let mut buf = vec![0u8; 12 + count * ETH_GSTRING_LEN];
        buf[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        buf[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
        buf[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
        ioctl(&socket, iface, buf.as_mut_ptr().cast())?;
        let names = buf[12..]
            .chunks(ETH_GSTRING_LEN)
            .map(|c| {
                let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
                String::from_utf8_lossy(&c[..end]).into_owned()
            })
            .collect();
        Ok(VethStats {
            socket,
            iface: iface.to_string(),
            names,
        })
    }

    /// Every counter, by name.
    pub fn read(&self) -> io::Result<HashMap<String, u64>> {
        let count = self.names.len();
        // struct ethtool_stats { cmd, n_stats, data[] } as u64 words.
        let mut buf = vec![0u64; 1 + count];
        buf[0] = ETHTOOL_GSTATS as u64 | (count as u64) << 32;
        if cfg!(target_endian = "big") {
            buf[0] = (ETHTOOL_GSTATS as u64) << 32 | count as u64;
        }
        ioctl(&self.socket, &self.iface, buf.as_mut_ptr().cast())?;
        Ok(self
            .names
            .iter()
            .cloned()
            .zip(buf[1..].iter().copied())
            .collect())
    }

    /// One counter; a missing name is an error naming it (an older veth
    /// driver than the benchmark knows).
    pub fn get(&self, name: &str) -> io::Result<u64> {
        self.read()?.get(name).copied().ok_or_else(|| {
            io::Error::other(format!(
                "{} has no ethtool counter {name} (the veth driver of Linux 5.9 or newer has it)",
                self.iface
            ))
        })
    }
}
