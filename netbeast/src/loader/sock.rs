//! The socket programs of `-t nat OUTPUT` (netbeast-ebpf `nat_sock.rs`):
//! loaded with the rest, attached to the root of the cgroup v2 hierarchy
//! with one bpf_link each, the links pinned beside the namespace's other
//! links. Attached there they run for every socket of the host; each data
//! plane acts only on the sockets of its own network namespace, whose
//! cookie it finds in `SOCK_NETNS`.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::{
    maps::{Array, MapData},
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};

use super::{Dataplane, LoaderError, links, map_err, pin_link};

/// Entry points of the socket programs and the names of their pinned
/// links: IPv4's four hooks (iptables' nat OUTPUT), then IPv6's
/// (ip6tables'). An attach of an older netbeast pinned the first four:
/// `attach` run again completes it.
pub const SOCK_PROGRAMS: [(&str, &str); 8] = [
    ("netbeast_connect4", "sock-connect4"),
    ("netbeast_sendmsg4", "sock-sendmsg4"),
    ("netbeast_recvmsg4", "sock-recvmsg4"),
    ("netbeast_getpeername4", "sock-getpeername4"),
    ("netbeast_connect6", "sock-connect6"),
    ("netbeast_sendmsg6", "sock-sendmsg6"),
    ("netbeast_recvmsg6", "sock-recvmsg6"),
    ("netbeast_getpeername6", "sock-getpeername6"),
];

/// `enum bpf_attach_type` values of the hooks, in `SOCK_PROGRAMS` order
/// (for `BPF_PROG_QUERY`).
pub const SOCK_ATTACH_TYPES: [u32; 8] = [
    10, // BPF_CGROUP_INET4_CONNECT
    14, // BPF_CGROUP_UDP4_SENDMSG
    19, // BPF_CGROUP_UDP4_RECVMSG
    29, // BPF_CGROUP_INET4_GETPEERNAME
    11, // BPF_CGROUP_INET6_CONNECT
    15, // BPF_CGROUP_UDP6_SENDMSG
    20, // BPF_CGROUP_UDP6_RECVMSG
    30, // BPF_CGROUP_INET6_GETPEERNAME
];

/// The most programs `cgroup_program_ids` reports per hook.
const MAX_QUERIED_PROGRAMS: usize = 1024;

fn cgroup_error(cgroup: &Path) -> impl Fn(aya::programs::ProgramError) -> LoaderError + '_ {
    move |source| LoaderError::Attach {
        iface: format!("the cgroup {}", cgroup.display()),
        source,
    }
}

impl Dataplane {
    /// A socket program, loaded into the kernel (verified) if needed.
    fn sock_program(&mut self, name: &'static str) -> Result<&mut CgroupSockAddr, LoaderError> {
        let prog: &mut CgroupSockAddr = self
            .program_mut(name)?
            .try_into()
            .map_err(LoaderError::Program)?;
        if prog.fd().is_err() {
            super::load_retrying(|| prog.load()).map_err(LoaderError::Program)?;
        }
        Ok(prog)
    }

    /// Loads the socket programs into the kernel (runs the verifier).
    pub fn load_sock_programs(&mut self) -> Result<(), LoaderError> {
        for (name, _) in SOCK_PROGRAMS {
            self.sock_program(name)?;
        }
        Ok(())
    }

    /// The network namespace whose sockets the programs translate, by its
    /// cookie (see [`netns_cookie`]); 0: none. A pinned data plane has its
    /// namespace's cookie here from its creation on: it is also the proof
    /// of which namespace owns the pins (inode numbers are reused).
    pub fn set_socket_netns(&mut self, cookie: u64) -> Result<(), LoaderError> {
        let mut map: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut("SOCK_NETNS")?).map_err(map_err("SOCK_NETNS"))?;
        map.set(0, cookie, 0).map_err(map_err("SOCK_NETNS"))
    }

    /// The cookie in `SOCK_NETNS` (0: none recorded).
    pub fn socket_netns(&self) -> Result<u64, LoaderError> {
        let map: Array<&MapData, u64> =
            Array::try_from(self.map("SOCK_NETNS")?).map_err(map_err("SOCK_NETNS"))?;
        map.get(&0, 0).map_err(map_err("SOCK_NETNS"))
    }

    /// Attaches the socket programs to the cgroup mounted at `cgroup` for
    /// the network namespace of the calling thread. With `links_dir`, each
    /// link is pinned there (`sock-*`) and outlives this process; without,
    /// the attachments last as long as this `Dataplane`. Links already
    /// pinned and attached are kept (a rerun completes an interrupted
    /// attach); on an error, the ones this call made are removed.
    pub fn attach_sock(
        &mut self,
        cgroup: &Path,
        links_dir: Option<&Path>,
    ) -> Result<(), LoaderError> {
        let cookie = netns_cookie().map_err(|source| LoaderError::Io {
            what: "SO_NETNS_COOKIE (Linux ≥ 5.14 needed)".to_string(),
            source,
        })?;
        self.set_socket_netns(cookie)?;
        let dir = File::open(cgroup).map_err(|source| LoaderError::Io {
            what: format!("the cgroup {}", cgroup.display()),
            source,
        })?;
        let mut pinned = Vec::new();
        for (name, pin) in SOCK_PROGRAMS {
            let pin = links_dir.map(|d| d.join(pin));
            if let Some(pin) = &pin {
                if sock_link_alive(pin) {
                    continue;
                }
                // Defunct or not a link: make room for a working one.
                Dataplane::detach(pin)?;
            }
            let result = self.attach_one(name, &dir, cgroup, pin);
            match result {
                Ok(Some(path)) => pinned.push(path),
                Ok(None) => {}
                Err(e) => {
                    // Leave nothing half-attached; the first error is the one to report.
                    for path in &pinned {
                        let _ = Dataplane::detach(path);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn attach_one(
        &mut self,
        name: &'static str,
        dir: &File,
        cgroup: &Path,
        pin: Option<std::path::PathBuf>,
    ) -> Result<Option<std::path::PathBuf>, LoaderError> {
        let prog = self.sock_program(name)?;
        // A bpf_link: the kernel runs it with every other program attached
        // there (links are always multi-attach; BPF_F_ALLOW_MULTI is for
        // the older attach call, not for links).
        let id = prog
            .attach(dir, CgroupAttachMode::Single)
            .map_err(cgroup_error(cgroup))?;
        let Some(pin) = pin else {
            return Ok(None);
        };
        let link = prog.take_link(id).map_err(cgroup_error(cgroup))?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| LoaderError::Pin {
                path: pin.clone(),
                message: format!(
                    "the kernel gave no bpf_link for the cgroup attachment (Linux ≥ 5.7 needed): {e}"
                ),
            })?;
        crate::fault::point("loader: cgroup link created");
        pin_link(fd_link, &pin)?;
        Ok(Some(pin))
    }

    /// Detaches the socket programs pinned in `links_dir`, if there.
    pub fn detach_sock(links_dir: &Path) -> Result<(), LoaderError> {
        for (_, pin) in SOCK_PROGRAMS {
            Dataplane::detach(&links_dir.join(pin))?;
        }
        Ok(())
    }

    /// Whether all the socket programs are attached for the namespace
    /// whose links are in `links_dir` (their links alive in the kernel).
    pub fn sock_attached(links_dir: &Path) -> bool {
        Self::sock_links_alive(links_dir) == SOCK_PROGRAMS.len()
    }

    /// How many of the socket programs' pinned links are alive.
    pub fn sock_links_alive(links_dir: &Path) -> usize {
        SOCK_PROGRAMS
            .iter()
            .filter(|(_, pin)| sock_link_alive(&links_dir.join(pin)))
            .count()
    }

    /// The program ids of the socket programs' live links.
    pub fn sock_program_ids(links_dir: &Path) -> Vec<u32> {
        SOCK_PROGRAMS
            .iter()
            .filter_map(|(_, pin)| links::pinned_link_state(&links_dir.join(pin)).ok())
            .filter(|l| l.link_type == links::LINK_TYPE_CGROUP && l.cgroup_id != 0)
            .map(|l| l.program_id)
            .collect()
    }

    /// How many socket program pins exist, alive or not.
    pub fn sock_pins(links_dir: &Path) -> usize {
        SOCK_PROGRAMS
            .iter()
            .filter(|(_, pin)| links_dir.join(pin).exists())
            .count()
    }
}

/// A cgroup link is pinned at `pin` and still attached to its cgroup.
fn sock_link_alive(pin: &Path) -> bool {
    links::pinned_link_state(pin)
        .is_ok_and(|l| l.link_type == links::LINK_TYPE_CGROUP && l.cgroup_id != 0)
}

/// The id of the program behind the link pinned at `pin`.
pub fn pinned_link_program(pin: &Path) -> Option<u32> {
    let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
    let id = link.info().ok()?.program_id();
    // Dropping the fd leaves the pin, and so the attachment, in place.
    Some(id)
}

/// The cookie of the calling thread's network namespace, as
/// `bpf_get_netns_cookie` gives it to the programs.
pub fn netns_cookie() -> io::Result<u64> {
    // SAFETY: socket returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned here.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Ids of the programs attached to the cgroup mounted at `cgroup` for the
/// hook `attach_type` (one of [`SOCK_ATTACH_TYPES`]), by `BPF_PROG_QUERY`.
pub fn cgroup_program_ids(cgroup: &Path, attach_type: u32) -> io::Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    /// The leading fields of `union bpf_attr` for BPF_PROG_QUERY.
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let dir = File::open(cgroup)?;
    let mut ids = vec![0u32; MAX_QUERIED_PROGRAMS];
    let mut attr = QueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; prog_ids points at prog_cnt
    // writable u32s that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            std::mem::size_of::<QueryAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
        time::Duration,
    };

    use netbeast_common::{
        ACTIVE_NAT, ACTIVE_TRACKING, NatTarget, chain, nat_flags, nat_target_index, stats, target,
    };

    use super::*;
    use crate::{
        compile::{self, Interface},
        netns::{Netns, banner, tcp_server, udp_echo_server, veth_pair},
        rules::{command, model::Ruleset, parse},
        state,
    };

    const TIMEOUT: Duration = Duration::from_secs(2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
    const LOOPBACK_80: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);

    fn require_root() {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test loads and attaches BPF programs: run it as root"
        );
    }

    /// Installs a nat OUTPUT chain by hand, until the compiler builds nat
    /// chains: the filter OUTPUT rules given are compiled, moved to the nat
    /// OUTPUT slot, and their ACCEPT turned into `target` with translation
    /// 0 = `to`.
    fn install_nat_output(dp: &mut Dataplane, lines: &[&str], target: u32, to: NatTarget) {
        let mut ruleset = Ruleset::default();
        for line in lines {
            let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let cmd = parse::parse_iptables_args(&args).expect(line);
            command::apply(&mut ruleset, &cmd).expect(line);
        }
        let lo = Interface {
            ifindex: 1,
            name: "lo".to_string(),
        };
        let next = 1 - dp.active_generation().unwrap();
        let mut compiled = compile::compile(&ruleset, &[lo], next).unwrap();
        compiled
            .chains
            .swap(chain::OUTPUT as usize, chain::NAT_OUTPUT as usize);
        for action in &mut compiled.chains[chain::NAT_OUTPUT as usize].rules {
            assert_eq!(action.target, netbeast_common::target::ACCEPT);
            action.target = target;
            action.arg = 0;
        }
        super::super::tables::write(dp, &compiled).unwrap();
        let capacity = dp.capacity();
        let mut targets: Array<&mut MapData, NatTarget> =
            Array::try_from(dp.map_mut("NAT_TARGETS").unwrap()).unwrap();
        targets
            .set(nat_target_index(capacity, next, 0), to, 0)
            .unwrap();
        let mut active: Array<&mut MapData, u32> =
            Array::try_from(dp.map_mut("ACTIVE").unwrap()).unwrap();
        active
            .set(0, next | ACTIVE_NAT | ACTIVE_TRACKING, 0)
            .unwrap();
    }

    #[test]
    fn sock_programs_pass_the_verifier() {
        require_root();
        let mut dp = Dataplane::load_private().unwrap();
        dp.load_sock_programs()
            .expect("the verifier accepts the socket programs");
    }

    fn read_banner(mut stream: TcpStream) -> String {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    /// The article's `-t nat -I OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80
    /// -j DNAT --to 192.168.0.4:80` (and the same for UDP), with the chain
    /// written by hand: a client of the router namespace reaches the server
    /// namespace through 127.0.0.1:80 and sees 127.0.0.1:80 as its peer; a
    /// third namespace's 127.0.0.1:80 is its own.
    #[test]
    fn dnat_of_local_sockets_in_its_namespace_only() {
        require_root();
        let router = Netns::new("sock-rtr").unwrap();
        let server = Netns::new("sock-srv").unwrap();
        let other = Netns::new("sock-oth").unwrap();
        veth_pair(
            &router,
            "nbt-r",
            "192.168.0.1/24",
            &server,
            "nbt-s",
            "192.168.0.4/24",
        )
        .unwrap();
        let tcp = tcp_server(&server, 80).unwrap();
        let _udp = udp_echo_server(&server, 80).unwrap();
        let own = tcp_server(&other, 80).unwrap();

        let mut dp = Dataplane::load_private().unwrap();
        install_nat_output(
            &mut dp,
            &[
                "-A OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j ACCEPT",
                "-A OUTPUT -o lo -p udp -s 127.0.0.1 --dport 80 -j ACCEPT",
            ],
            target::DNAT,
            NatTarget {
                addr_first: u32::from(SERVER),
                addr_last: u32::from(SERVER),
                port_first: 80,
                port_last: 80,
                flags: nat_flags::ADDR | nat_flags::PORTS,
                ..Default::default()
            },
        );
        let cgroup = state::cgroup2_root().unwrap();
        router
            .in_netns(|| dp.attach_sock(&cgroup, None))
            .unwrap()
            .unwrap();

        // TCP: served by the server namespace, the peer as asked for.
        let (text, peer) = router
            .in_netns(|| {
                let s = TcpStream::connect_timeout(&LOOPBACK_80.into(), TIMEOUT)
                    .expect("connecting to 127.0.0.1:80 in the router namespace");
                let peer = s.peer_addr().unwrap();
                (read_banner(s), peer)
            })
            .unwrap();
        assert_eq!(text, banner(80));
        assert_eq!(peer, SocketAddr::V4(LOOPBACK_80));
        assert_eq!(tcp.served_within(1, TIMEOUT), 1);

        // Another port: no rule, nothing listens.
        let refused = router
            .in_netns(|| TcpStream::connect_timeout(&"127.0.0.1:81".parse().unwrap(), TIMEOUT))
            .unwrap();
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::ConnectionRefused)
        );

        // UDP, unconnected: sendto translated, recvfrom shows 127.0.0.1:80.
        let (echo, from) = router
            .in_netns(|| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.send_to(b"ping", LOOPBACK_80).unwrap();
                let mut buf = [0u8; 16];
                let (n, from) = s.recv_from(&mut buf).expect("the echo of the datagram");
                (buf[..n].to_vec(), from)
            })
            .unwrap();
        assert_eq!(echo, b"ping");
        assert_eq!(from, SocketAddr::V4(LOOPBACK_80));

        // UDP, connected: connect translated, peer and source as asked for.
        let (echo, from, peer) = router
            .in_netns(|| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.connect(LOOPBACK_80).unwrap();
                s.send(b"pong").unwrap();
                let mut buf = [0u8; 16];
                let (n, from) = s.recv_from(&mut buf).expect("the echo of the datagram");
                (buf[..n].to_vec(), from, s.peer_addr().unwrap())
            })
            .unwrap();
        assert_eq!(echo, b"pong");
        assert_eq!(from, SocketAddr::V4(LOOPBACK_80));
        assert_eq!(peer, SocketAddr::V4(LOOPBACK_80));

        // The third namespace: its own server answers.
        let text = other
            .in_netns(|| {
                read_banner(
                    TcpStream::connect_timeout(&LOOPBACK_80.into(), TIMEOUT)
                        .expect("connecting to 127.0.0.1:80 in the other namespace"),
                )
            })
            .unwrap();
        assert_eq!(text, banner(80));
        assert_eq!(own.served_within(1, TIMEOUT), 1);
        assert_eq!(tcp.served(), 1, "the other namespace was translated");

        let translated = dp.stats().unwrap()[stats::NAT_SOCKET as usize];
        assert_eq!(translated, 3, "connect tcp, sendto, connect udp");
        let (rules, policy) = dp.chain_counters(chain::NAT_OUTPUT, 2).unwrap();
        assert_eq!((rules[0].packets, rules[1].packets), (1, 2));
        // The refused connection to port 81 is the policy's only socket.
        assert_eq!(policy.packets, 1);
    }
}
