//! `-m comment --comment TEXT` (libxt_comment): no effect on matching.

use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing};
use crate::compile::PacketView;
use crate::rawtext;
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid};

/// The comment's bytes, as iptables keeps them: not necessarily UTF-8
/// (`--comment $'\xff'`). Serialized as a string, its raw bytes as
/// [`crate::rawtext`]'s reserved characters, so rule files written before
/// comments were bytes read unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Comment(pub Vec<u8>);

impl Comment {
    /// The comment as text for printing (raw bytes as reserved
    /// characters, which the output turns back into the bytes).
    pub fn text(&self) -> String {
        rawtext::from_bytes(&self.0).unwrap_or_else(|_| String::from_utf8_lossy(&self.0).into())
    }
}

impl From<String> for Comment {
    fn from(text: String) -> Self {
        Comment(rawtext::to_bytes(&text))
    }
}

impl From<Comment> for String {
    fn from(comment: Comment) -> Self {
        comment.text()
    }
}

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
        let _ = write!(out, " -m comment --comment {}", quote(&self.text()));
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let _ = write!(out, " /* {} */", self.text());
    }

    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::always()
    }
}

/// XT_MAX_COMMENT_LEN - 1: the longest comment the kernel stores.
pub const MAX_COMMENT_LEN: usize = 255;

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["comment"],
    value: Value::One("the comment text, quoted if it has spaces"),
    negatable: false,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "comment",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m comment --comment \"allow ssh\"",
    parser: || Box::<CommentParser>::default(),
    implicit_protocol: None,
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct CommentParser(Option<Comment>);

impl MatchParser for CommentParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        _negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let text = values[0];
        let bytes = rawtext::to_bytes(text);
        if bytes.len() > MAX_COMMENT_LEN {
            let start: String = text.chars().take(20).collect();
            return Err(invalid(
                "--comment",
                "comment",
                &format!("{start}..."),
                format!(
                    "comments are at most {MAX_COMMENT_LEN} bytes, this one has {}",
                    bytes.len()
                ),
            ));
        }
        if self.0.is_some() {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "; add another -m comment",
            });
        }
        self.0 = Some(Comment(bytes));
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Comment)
            .ok_or_else(|| missing(&MODULE, "--comment"))
    }
}

/// Any printable text with the palette's `wild` odds.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let text = if d.wild(s.palette) {
        d.text(30)
    } else {
        "a comment".to_string()
    };
    Some(Match::Comment(Comment::from(text)))
}
