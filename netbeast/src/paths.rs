//! Which way each kind of frame leaves an interface netbeast is attached
//! to, and why: decided once at `attach` from the driver and the XDP mode,
//! kept in the interface's record, shown by `attach` and `status`, and
//! written to the kernel as `iface_path` bits.
//!
//! What the kernel does (Linux 6.x): a native XDP program's `XDP_TX` and
//! `XDP_REDIRECT` into a veth go straight to the other end's NAPI queue,
//! which exists only while that end runs XDP (or GRO): frames into a
//! container's bare veth are lost. Generic (skb) XDP sends both through the
//! device's ordinary transmit path, which always works; so does
//! `bpf_redirect` from TC, netbeast's hand-off.

use serde::{Deserialize, Serialize};

use netbeast_common::iface_path;

/// The driver name the kernel gives veths (`ethtool -i`).
pub const VETH_DRIVER: &str = "veth";

/// How the XDP program runs on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    Native,
    Skb,
}

/// What the user asked of the forwarding fast path (`--fast-path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FastPathChoice {
    /// Wherever it is correct, the best way there is.
    Auto,
    /// `XDP_REDIRECT` into the interface whatever its kind (the user knows
    /// that the other end of a veth runs XDP).
    On,
    Off,
}

/// How REJECT replies to frames that came in on the interface leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectPath {
    /// `XDP_TX`, straight back out.
    XdpTx,
    /// Handed to the TC ingress program, which sends it with `bpf_redirect`.
    TcRedirect,
}

/// How the forwarding fast path reaches the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardPath {
    XdpRedirect,
    /// Through the TC hand-off of the interface the frame came in on.
    TcRedirect,
    /// The kernel forwards what goes out there.
    Off,
}

/// The ways out of one interface, and what they were decided from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfacePaths {
    pub driver: Option<String>,
    pub xdp_mode: XdpMode,
    pub fast_path: FastPathChoice,
    pub reject: RejectPath,
    pub forward: ForwardPath,
}

impl IfacePaths {
    /// The ways for an interface of `driver` whose XDP program runs in
    /// `xdp_mode`, with the fast path the user chose.
    pub fn plan(driver: Option<&str>, xdp_mode: XdpMode, fast_path: FastPathChoice) -> Self {
        let veth = driver == Some(VETH_DRIVER);
        // `--fast-path on` says the peers run XDP: then XDP_TX reaches a
        // veth's other end as XDP_REDIRECT does (REJECT replies, SYN
        // cookies), without an skb per reply.
        let reject = if veth && xdp_mode == XdpMode::Native && fast_path != FastPathChoice::On {
            RejectPath::TcRedirect
        } else {
            RejectPath::XdpTx
        };
        let forward = match fast_path {
            FastPathChoice::Off => ForwardPath::Off,
            FastPathChoice::On => ForwardPath::XdpRedirect,
            // A device that runs XDP natively takes redirected frames
            // (ndo_xdp_xmit), a veth only when its other end runs XDP too,
            // which netbeast cannot know; the TC hand-off reaches any device.
            FastPathChoice::Auto if veth || xdp_mode == XdpMode::Skb => ForwardPath::TcRedirect,
            FastPathChoice::Auto => ForwardPath::XdpRedirect,
        };
        IfacePaths {
            driver: driver.map(str::to_string),
            xdp_mode,
            fast_path,
            reject,
            forward,
        }
    }

    /// The paths of an interface recorded by an earlier netbeast, which
    /// knew only whether the fast path was on (and answered with `XDP_TX`).
    pub fn legacy(fast_path: bool) -> Self {
        IfacePaths {
            driver: None,
            xdp_mode: XdpMode::Native,
            fast_path: if fast_path {
                FastPathChoice::On
            } else {
                FastPathChoice::Off
            },
            reject: RejectPath::XdpTx,
            forward: if fast_path {
                ForwardPath::XdpRedirect
            } else {
                ForwardPath::Off
            },
        }
    }

    /// The `iface_path` bits for the kernel; `tc_ingress`: netbeast's TC
    /// ingress program runs on the interface (without it nothing can be
    /// handed off there, and the XDP program keeps to its own ways).
    pub fn bits(&self, tc_ingress: bool) -> u32 {
        let mut bits = match self.forward {
            ForwardPath::XdpRedirect => iface_path::FORWARD_REDIRECT,
            ForwardPath::TcRedirect => iface_path::FORWARD_VIA_TC,
            ForwardPath::Off => 0,
        };
        if self.reject == RejectPath::TcRedirect {
            bits |= iface_path::REJECT_VIA_TC;
        }
        if tc_ingress {
            bits |= iface_path::TC_INGRESS;
        }
        bits
    }

    pub fn xdp_mode_name(&self) -> &'static str {
        match self.xdp_mode {
            XdpMode::Native => "native XDP",
            XdpMode::Skb => "generic (skb) XDP",
        }
    }

    pub fn reject_name(&self) -> &'static str {
        match self.reject {
            RejectPath::XdpTx => "XDP_TX",
            RejectPath::TcRedirect => "TC redirect",
        }
    }

    pub fn forward_name(&self) -> &'static str {
        match self.forward {
            ForwardPath::XdpRedirect => "XDP_REDIRECT",
            ForwardPath::TcRedirect => "TC redirect",
            ForwardPath::Off => "off",
        }
    }

    /// Why REJECT replies take their path.
    pub fn reject_why(&self) -> &'static str {
        match (self.reject, self.xdp_mode) {
            (RejectPath::TcRedirect, _) => {
                "native XDP on a veth: XDP_TX would reach the other end only if it ran XDP \
                 itself, so the reply is handed to TC ingress and sent with bpf_redirect"
            }
            (RejectPath::XdpTx, XdpMode::Skb) => {
                "generic XDP sends XDP_TX through the device's transmit path"
            }
            (RejectPath::XdpTx, XdpMode::Native) => "the driver transmits XDP_TX itself",
        }
    }

    /// Why the fast path into the interface takes its way.
    pub fn forward_why(&self) -> &'static str {
        match (self.forward, self.fast_path) {
            (ForwardPath::Off, _) => "--fast-path off: the kernel forwards",
            (ForwardPath::XdpRedirect, FastPathChoice::On) => {
                "--fast-path on: XDP_REDIRECT (on a veth, the other end must run XDP)"
            }
            (ForwardPath::XdpRedirect, _) => "the driver takes XDP_REDIRECTed frames",
            (ForwardPath::TcRedirect, _) if self.driver.as_deref() == Some(VETH_DRIVER) => {
                "a veth takes XDP_REDIRECTed frames only if its other end runs XDP; \
                 bpf_redirect from TC ingress reaches it always"
            }
            (ForwardPath::TcRedirect, _) => {
                "no native XDP here, so maybe no XDP transmit: bpf_redirect from TC ingress"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_veth_answers_and_is_reached_through_tc() {
        let p = IfacePaths::plan(Some("veth"), XdpMode::Native, FastPathChoice::Auto);
        assert_eq!(p.reject, RejectPath::TcRedirect);
        assert_eq!(p.forward, ForwardPath::TcRedirect);
        assert_eq!(
            p.bits(true),
            iface_path::REJECT_VIA_TC | iface_path::FORWARD_VIA_TC | iface_path::TC_INGRESS
        );
    }

    #[test]
    fn generic_xdp_transmits_replies_itself() {
        let p = IfacePaths::plan(Some("veth"), XdpMode::Skb, FastPathChoice::Auto);
        assert_eq!(p.reject, RejectPath::XdpTx);
        assert_eq!(p.forward, ForwardPath::TcRedirect);
    }

    #[test]
    fn a_native_nic_keeps_xdp_tx_and_redirect() {
        let p = IfacePaths::plan(Some("ixgbe"), XdpMode::Native, FastPathChoice::Auto);
        assert_eq!(p.reject, RejectPath::XdpTx);
        assert_eq!(p.forward, ForwardPath::XdpRedirect);
        assert_eq!(p.bits(false), iface_path::FORWARD_REDIRECT);
    }

    #[test]
    fn the_users_choice_wins_for_the_fast_path() {
        let on = IfacePaths::plan(Some("veth"), XdpMode::Native, FastPathChoice::On);
        assert_eq!(on.forward, ForwardPath::XdpRedirect);
        assert_eq!(on.reject, RejectPath::XdpTx);
        let off = IfacePaths::plan(Some("ixgbe"), XdpMode::Native, FastPathChoice::Off);
        assert_eq!(off.forward, ForwardPath::Off);
        assert_eq!(off.bits(true), iface_path::TC_INGRESS);
    }
}
