//! One module per iptables extension: each owns what netbeast knows about
//! it — its data, its `-S`/save and `-L` text, its meaning for the
//! reference classifier.
//!
//! (Being moved here extension by extension: see docs/ARCHITECTURE.md,
//! "How to add an extension".)

pub mod addrtype;
pub mod dscp;
pub mod iprange;
pub mod length;
pub mod pkttype;
pub mod tcp;
pub mod tos;
pub mod ttl;

/// `" !"` before a negated option in save text, as the extensions print it.
pub(crate) fn bang(negated: bool) -> &'static str {
    if negated { " !" } else { "" }
}
