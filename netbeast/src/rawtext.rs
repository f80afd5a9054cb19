//! Text that may carry raw bytes. iptables takes its arguments and restore
//! files as bytes: a comment may be `$'\xff'`, and it prints those bytes
//! back as they came. netbeast's parser, rule model printing and outputs
//! work on Rust strings, so a byte that is not part of valid UTF-8 travels
//! through them as one reserved character, U+10FF80 + (byte - 0x80)
//! (the last 128 code points of Unicode's private use plane 16), and turns
//! back into the byte where it leaves: on standard output, in a file, in
//! a comment's bytes. A genuine character of that range in the input
//! would be mistaken for a byte, so input holding one is refused.
//!
//! Only comments may hold such bytes; an argument or restore line with
//! them anywhere else is refused with its position ([`check_args`]).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The character standing for byte 0x80; 0xFF is `RAW_BASE + 0x7F`.
const RAW_BASE: u32 = 0x10FF80;

/// Why input cannot be taken as text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "byte {at} holds U+{code:X}, a character netbeast reserves for raw bytes (U+10FF80 to \
     U+10FFFF); write it another way"
)]
pub struct ReservedChar {
    pub at: usize,
    pub code: u32,
}

fn is_raw(c: char) -> bool {
    (c as u32) >= RAW_BASE
}

/// Bytes as text: valid UTF-8 as it is, every other byte as its reserved
/// character.
pub fn from_bytes(mut bytes: &[u8]) -> Result<String, ReservedChar> {
    let mut text = String::with_capacity(bytes.len());
    let mut at = 0;
    loop {
        let (valid, rest) = match std::str::from_utf8(bytes) {
            Ok(all) => (all, &[][..]),
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // The first `valid_up_to` bytes are valid UTF-8 by definition.
                (std::str::from_utf8(valid).unwrap_or_default(), rest)
            }
        };
        if let Some((i, c)) = valid.char_indices().find(|(_, c)| is_raw(*c)) {
            return Err(ReservedChar {
                at: at + i,
                code: c as u32,
            });
        }
        text.push_str(valid);
        at += valid.len();
        let Some((&byte, rest)) = rest.split_first() else {
            return Ok(text);
        };
        // Every byte of an invalid sequence is 0x80 or above.
        text.push(char::from_u32(RAW_BASE + u32::from(byte - 0x80)).expect("in range"));
        at += 1;
        bytes = rest;
    }
}

/// An argument as text (see [`from_bytes`]).
pub fn from_os(arg: &OsStr) -> Result<String, ReservedChar> {
    from_bytes(arg.as_bytes())
}

/// Text back to bytes: reserved characters become their bytes again.
pub fn to_bytes(text: &str) -> Vec<u8> {
    if !has_raw(text) {
        return text.as_bytes().to_vec();
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if is_raw(c) {
            bytes.push((c as u32 - RAW_BASE) as u8 + 0x80);
        } else {
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    bytes
}

/// Whether `text` carries raw bytes.
pub fn has_raw(text: &str) -> bool {
    text.chars().any(is_raw)
}

/// `text` for a message: raw bytes as `\xFF`.
pub fn display(text: &str) -> String {
    if !has_raw(text) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if is_raw(c) {
                format!("\\x{:02X}", c as u32 - RAW_BASE + 0x80)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether `arg` is the comment option itself, written as iptables takes
/// it (`--comment`, or a prefix of it down to `--com`, as getopt_long
/// accepts), so the next argument may hold raw bytes.
fn is_comment_option(arg: &str) -> bool {
    arg.len() >= "--com".len() && "--comment".starts_with(arg)
}

/// The index of the first argument holding raw bytes that is not the value
/// of `--comment` (`--comment VALUE` or `--comment=VALUE`), if any.
pub fn check_args<S: AsRef<str>>(args: &[S]) -> Option<usize> {
    let mut previous = "";
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.as_ref();
        if has_raw(arg) {
            let attached = arg.split_once('=').is_some_and(|(option, value)| {
                is_comment_option(option) && !has_raw(option) && !value.is_empty()
            });
            if !is_comment_option(previous) && !attached {
                return Some(i);
            }
        }
        previous = arg;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        for bytes in [
            &b"plain"[..],
            b"a\xffb c",
            b"\x80\xff\xc3",
            b"\xc3\xa9t\xc3",
            b"",
        ] {
            let text = from_bytes(bytes).unwrap();
            assert_eq!(to_bytes(&text), bytes);
        }
        assert_eq!(from_bytes("été".as_bytes()).unwrap(), "été");
        assert_eq!(display(&from_bytes(b"a\xffb").unwrap()), "a\\xFFb");
    }

    #[test]
    fn reserved_characters_are_refused() {
        let input = "ab\u{10FFAA}".as_bytes();
        assert_eq!(
            from_bytes(input),
            Err(ReservedChar {
                at: 2,
                code: 0x10FFAA
            })
        );
        // Below the range: taken.
        assert!(from_bytes("\u{10FF7F}".as_bytes()).is_ok());
    }

    #[test]
    fn raw_bytes_only_in_comments() {
        let raw = from_bytes(b"\xff").unwrap();
        let args = |v: &[&str]| v.iter().map(|s| s.replace('R', &raw)).collect::<Vec<_>>();
        assert_eq!(check_args(&args(&["-A", "INPUT", "--comment", "aR"])), None);
        assert_eq!(check_args(&args(&["--comm", "R", "-j", "ACCEPT"])), None);
        assert_eq!(check_args(&args(&["--comment=R"])), None);
        assert_eq!(check_args(&args(&["-A", "INPUTR"])), Some(1));
        assert_eq!(check_args(&args(&["-i", "R", "--comment", "x"])), Some(1));
        assert_eq!(check_args(&args(&["--co", "R"])), Some(1));
    }
}

#[cfg(test)]
mod comment_tests {
    use crate::rules::model::Comment;

    /// Rule files store comments as strings: those written before comments
    /// were bytes read unchanged, and raw bytes survive a round trip.
    #[test]
    fn comments_in_rule_files() {
        let old: Comment = serde_json::from_str("\"allow ssh\"").unwrap();
        assert_eq!(old, Comment(b"allow ssh".to_vec()));
        let raw = Comment(b"a\xffb c".to_vec());
        let json = serde_json::to_string(&raw).unwrap();
        assert!(std::str::from_utf8(json.as_bytes()).is_ok());
        assert_eq!(serde_json::from_str::<Comment>(&json).unwrap(), raw);
    }
}
