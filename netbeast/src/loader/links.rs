//! What the kernel says about a pinned bpf_link: which program it runs and
//! where it is attached. A pin only proves the link object exists; a link
//! whose device was deleted stays pinned but reports ifindex 0 (the kernel
//! detached it), and a new device may meanwhile have taken the old ifindex.
//! So netbeast checks the link itself, never the pin's name alone.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;

/// `enum bpf_link_type` values netbeast pins.
pub const LINK_TYPE_CGROUP: u32 = 3;
pub const LINK_TYPE_XDP: u32 = 6;
pub const LINK_TYPE_TCX: u32 = 11;
/// `enum bpf_attach_type` of a tcx egress attachment.
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;

/// Room for `struct bpf_link_info` (the kernel fills what it knows and
/// checks that the rest is zero).
const LINK_INFO_SIZE: usize = 256;
/// The most programs [`tcx_egress_program_ids`] reports.
const MAX_QUERIED_PROGRAMS: usize = 64;

/// The parts of `struct bpf_link_info` netbeast reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub link_type: u32,
    pub link_id: u32,
    pub program_id: u32,
    /// XDP and tcx links: the device the link is attached to; 0 once the
    /// device is gone (the link is then defunct and runs nowhere).
    pub ifindex: u32,
    /// cgroup links: the cgroup's id; 0 once the cgroup is gone.
    pub cgroup_id: u64,
}

impl LinkState {
    /// Attached to the device `ifindex` with the expected kind of link.
    pub fn runs_on(&self, link_type: u32, ifindex: u32) -> bool {
        self.link_type == link_type && ifindex != 0 && self.ifindex == ifindex
    }
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialized prefix of `union
    // bpf_attr` for `cmd`, and every pointer it holds outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the object pinned at `path` (BPF_OBJ_GET).
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut attr = Attr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The link pinned at `path`, as the kernel sees it now. NotFound when
/// nothing is pinned there.
pub fn pinned_link_state(path: &Path) -> io::Result<LinkState> {
    let fd = obj_get(path)?;
    let mut info = [0u8; LINK_INFO_SIZE];
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: LINK_INFO_SIZE as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u32_at = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    let link_type = u32_at(0);
    // type, id, prog_id, then (8-aligned) the per-type union at 16.
    let (ifindex, cgroup_id) = match link_type {
        LINK_TYPE_XDP | LINK_TYPE_TCX => (u32_at(16), 0),
        LINK_TYPE_CGROUP => (
            0,
            u64::from_ne_bytes(info[16..24].try_into().expect("8 bytes")),
        ),
        _ => (0, 0),
    };
    Ok(LinkState {
        link_type,
        link_id: u32_at(4),
        program_id: u32_at(8),
        ifindex,
        cgroup_id,
    })
}

/// Ids of the programs the kernel runs on `ifindex`'s tcx egress hook
/// (BPF_PROG_QUERY), whoever attached them.
pub fn tcx_egress_program_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    tcx_program_ids(ifindex, BPF_TCX_EGRESS)
}

/// Ids of the programs the kernel runs on `ifindex`'s tcx ingress hook.
pub fn tcx_ingress_program_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    tcx_program_ids(ifindex, BPF_TCX_INGRESS)
}

fn tcx_program_ids(ifindex: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_ifindex: u32,
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
    let mut ids = vec![0u32; MAX_QUERIED_PROGRAMS];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// The id of the XDP program attached to `ifindex` (0: none), from the
/// kernel's own view of the device (rtnetlink `IFLA_XDP_PROG_ID`), so that
/// `status` reports what really runs, not what the pins claim.
pub fn xdp_program_id(ifindex: u32) -> io::Result<u32> {
    xdp_state(ifindex).map(|(id, _)| id)
}

/// `IFLA_XDP_ATTACHED`'s values: how the XDP program of a device runs.
pub const XDP_ATTACHED_DRV: u8 = 1;
pub const XDP_ATTACHED_SKB: u8 = 2;

/// The id of the XDP program attached to `ifindex` (0: none) and how it
/// runs (`XDP_ATTACHED_*`, 0: not attached), as rtnetlink reports them.
pub fn xdp_state(ifindex: u32) -> io::Result<(u32, u8)> {
    const IFLA_XDP_ATTACHED: u16 = 2;
    const RTM_GETLINK: u16 = 18;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const NLA_TYPE_MASK: u16 = 0x3fff;
    /// One RTM_NEWLINK answer for one device fits comfortably.
    const REPLY_SIZE: usize = 32 * 1024;
    #[repr(C)]
    struct Request {
        len: u32,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        // struct ifinfomsg
        family: u8,
        _pad: u8,
        dev_type: u16,
        index: i32,
        dev_flags: u32,
        change: u32,
    }
    // SAFETY: socket returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned here.
    let sock = unsafe { File::from_raw_fd(fd) };
    let req = Request {
        len: std::mem::size_of::<Request>() as u32,
        kind: RTM_GETLINK,
        flags: NLM_F_REQUEST,
        seq: 1,
        pid: 0,
        family: libc::AF_UNSPEC as u8,
        _pad: 0,
        dev_type: 0,
        index: ifindex as i32,
        dev_flags: 0,
        change: 0,
    };
    // SAFETY: sending the request struct's bytes on our socket.
    let sent = unsafe {
        libc::send(
            sock.as_raw_fd(),
            (&raw const req).cast(),
            std::mem::size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; REPLY_SIZE];
    // SAFETY: receiving into our buffer of the given size.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let buf = &buf[..n as usize];
    let u16_at = |b: &[u8], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed rtnetlink reply");
    if buf.len() < 16 {
        return Err(bad());
    }
    if u16_at(buf, 4) == NLMSG_ERROR {
        let errno = i32::from_ne_bytes(buf[16..20].try_into().map_err(|_| bad())?);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let msg_len =
        (u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize).min(buf.len());
    // nlmsghdr (16) + ifinfomsg (16), then attributes aligned to 4.
    let attrs_in = |b: &[u8], mut at: usize, end: usize, want: u16| -> Option<(usize, usize)> {
        while at + 4 <= end {
            let len = u16_at(b, at) as usize;
            if len < 4 || at + len > end {
                return None;
            }
            if u16_at(b, at + 2) & NLA_TYPE_MASK == want {
                return Some((at + 4, at + len));
            }
            at += (len + 3) & !3;
        }
        None
    };
    let Some((xdp_at, xdp_end)) = attrs_in(buf, 32, msg_len, IFLA_XDP) else {
        return Ok((0, 0));
    };
    let id = match attrs_in(buf, xdp_at, xdp_end, IFLA_XDP_PROG_ID) {
        Some((at, end)) if end - at >= 4 => {
            u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
        }
        _ => 0,
    };
    let mode = match attrs_in(buf, xdp_at, xdp_end, IFLA_XDP_ATTACHED) {
        Some((at, end)) if end > at => buf[at],
        _ => 0,
    };
    Ok((id, mode))
}
