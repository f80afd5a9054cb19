//! `-m comment --comment TEXT` (libxt_comment): no effect on matching.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::MatchExt;
use crate::compile::PacketView;

/// Serialized as its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment(pub String);

/// xtables_save_string: bare when only `[A-Za-z0-9_-]`, otherwise in double
/// quotes with `"`, `\` and `'` escaped by a backslash.
pub fn quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

impl MatchExt for Comment {
    fn save(&self, out: &mut String) {
        let _ = write!(out, " -m comment --comment {}", quote(&self.0));
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let _ = write!(out, " /* {} */", self.0);
    }

    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }
}
