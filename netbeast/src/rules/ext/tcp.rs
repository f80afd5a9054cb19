//! The `tcp` match's flag tests: `--tcp-flags MASK COMP` and `--syn`
//! (`FIN,SYN,RST,ACK SYN`), as libxt_tcp names and prints them.

use serde::{Deserialize, Serialize};

use crate::rules::parse::{ParseError, invalid};

/// Flag names in the order iptables prints them; `ALL` and `NONE` are
/// taken on input only.
pub const FLAG_NAMES: &[(&str, u8)] = &[
    ("FIN", 0x01),
    ("SYN", 0x02),
    ("RST", 0x04),
    ("PSH", 0x08),
    ("ACK", 0x10),
    ("URG", 0x20),
    ("ALL", 0x3f),
    ("NONE", 0x00),
];

/// `--syn`'s flags.
pub const SYN: TcpFlags = TcpFlags {
    mask: 0x17,
    comp: 0x02,
};

/// `(flags & mask) == comp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpFlags {
    pub mask: u8,
    pub comp: u8,
}

/// `FIN,SYN,RST,ACK`: the names of a flag set, `NONE` for none.
pub fn flags_text(mut flags: u8) -> String {
    let mut names = Vec::new();
    while flags != 0 {
        let Some((name, bit)) = FLAG_NAMES[..6].iter().find(|(_, bit)| flags & bit != 0) else {
            break;
        };
        names.push(*name);
        flags &= !bit;
    }
    if names.is_empty() {
        "NONE".to_string()
    } else {
        names.join(",")
    }
}

impl TcpFlags {
    pub fn matches(&self, flags: u8) -> bool {
        flags & self.mask == self.comp
    }
}

/// `SYN,ACK` (any case), `ALL` or `NONE` as a flag set.
pub fn parse_flags(text: &str) -> Result<u8, ParseError> {
    let mut flags = 0;
    for name in text.split(',') {
        let Some((_, bit)) = FLAG_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err(invalid(
                "--tcp-flags",
                "TCP flag",
                name,
                "use FIN, SYN, RST, PSH, ACK, URG, ALL or NONE, separated by commas",
            ));
        };
        flags |= bit;
    }
    Ok(flags)
}
