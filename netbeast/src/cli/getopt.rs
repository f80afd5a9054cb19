//! Option parsing for `iptables-save` and `iptables-restore` (and `netbeast
//! save` / `netbeast restore`, which take the same options): getopt_long as
//! those tools configure it. Short options cluster (`-nt`), take their
//! value attached or as the next word (`-Tfilter`, `-T filter`); long
//! options take `--opt=value` or `--opt value` and may be shortened to any
//! unambiguous prefix (`--coun`); operands may come anywhere, and `--` ends
//! the options. Anything else is refused with getopt's words, so a typo
//! such as `--tset` never goes unnoticed.

/// Whether an option takes a value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arg {
    None,
    Required,
    /// iptables' `-w [SECONDS]`: a value attached (`-w5`, `--wait=5`), or
    /// the next word when it is a number; otherwise none.
    OptionalNumber,
}

/// One option: its short letter (if any), long name and value.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    pub short: Option<char>,
    pub long: &'static str,
    pub arg: Arg,
}

impl Opt {
    pub const fn new(short: char, long: &'static str, arg: Arg) -> Self {
        Opt {
            short: Some(short),
            long,
            arg,
        }
    }
}

/// What the command line holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An option, by its long name, with its value.
    Opt(&'static str, Option<String>),
    /// A word that is not an option (a file name).
    Operand(String),
}

/// Why a command line was refused, in getopt's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GetoptError {
    #[error("unrecognized option '{option}'{hint}")]
    Unrecognized { option: String, hint: String },
    #[error("invalid option -- '{0}'")]
    Invalid(char),
    #[error("option requires an argument -- '{0}'")]
    ShortNeedsValue(char),
    #[error("option '--{0}' requires an argument")]
    LongNeedsValue(&'static str),
    #[error("option '--{0}' doesn't allow an argument")]
    LongTakesNoValue(&'static str),
    #[error("option '{option}' is ambiguous; possibilities: {candidates}")]
    Ambiguous { option: String, candidates: String },
}

/// Reads `args` (without the program name) against `spec`.
pub fn getopt(spec: &[Opt], args: &[String]) -> Result<Vec<Item>, GetoptError> {
    let mut items = Vec::new();
    let mut words = args.iter().peekable();
    while let Some(word) = words.next() {
        if word == "--" {
            items.extend(words.by_ref().map(|w| Item::Operand(w.clone())));
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            let opt = find_long(spec, name, word)?;
            let value = match (opt.arg, attached) {
                (Arg::None, Some(_)) => return Err(GetoptError::LongTakesNoValue(opt.long)),
                (Arg::None, None) => None,
                (Arg::Required, Some(v)) => Some(v),
                (Arg::Required, None) => Some(
                    words
                        .next()
                        .cloned()
                        .ok_or(GetoptError::LongNeedsValue(opt.long))?,
                ),
                (Arg::OptionalNumber, Some(v)) => Some(v),
                (Arg::OptionalNumber, None) => next_number(&mut words),
            };
            items.push(Item::Opt(opt.long, value));
        } else if let Some(cluster) = word.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (at, c) in cluster.char_indices() {
                let opt = spec
                    .iter()
                    .find(|o| o.short == Some(c))
                    .ok_or(GetoptError::Invalid(c))?;
                let rest = &cluster[at + c.len_utf8()..];
                match opt.arg {
                    Arg::None => items.push(Item::Opt(opt.long, None)),
                    Arg::Required => {
                        let value = if rest.is_empty() {
                            words
                                .next()
                                .cloned()
                                .ok_or(GetoptError::ShortNeedsValue(c))?
                        } else {
                            rest.to_string()
                        };
                        items.push(Item::Opt(opt.long, Some(value)));
                        break;
                    }
                    Arg::OptionalNumber => {
                        let value = if rest.is_empty() {
                            next_number(&mut words)
                        } else {
                            Some(rest.to_string())
                        };
                        items.push(Item::Opt(opt.long, value));
                        break;
                    }
                }
            }
        } else {
            items.push(Item::Operand(word.clone()));
        }
    }
    Ok(items)
}

fn next_number<'a>(
    words: &mut std::iter::Peekable<impl Iterator<Item = &'a String>>,
) -> Option<String> {
    words
        .next_if(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .cloned()
}

/// The option `name` names: exactly, or as the only option it starts.
fn find_long<'s>(spec: &'s [Opt], name: &str, typed: &str) -> Result<&'s Opt, GetoptError> {
    if let Some(opt) = spec.iter().find(|o| o.long == name) {
        return Ok(opt);
    }
    let starts: Vec<&Opt> = if name.is_empty() {
        Vec::new()
    } else {
        spec.iter().filter(|o| o.long.starts_with(name)).collect()
    };
    match starts.as_slice() {
        [one] => Ok(one),
        [] => Err(GetoptError::Unrecognized {
            option: typed.split('=').next().unwrap_or(typed).to_string(),
            hint: spec
                .iter()
                .find(|o| edit_distance(o.long, name) <= 2)
                .map(|o| format!(" (did you mean --{}?)", o.long))
                .unwrap_or_default(),
        }),
        many => Err(GetoptError::Ambiguous {
            option: format!("--{name}"),
            candidates: many
                .iter()
                .map(|o| format!("'--{}'", o.long))
                .collect::<Vec<_>>()
                .join(" "),
        }),
    }
}

/// Levenshtein distance, for the "did you mean" of a mistyped option.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[Opt] = &[
        Opt::new('c', "counters", Arg::None),
        Opt::new('t', "test", Arg::None),
        Opt::new('T', "table", Arg::Required),
        Opt::new('w', "wait", Arg::OptionalNumber),
        Opt::new('W', "wait-interval", Arg::Required),
    ];

    fn run(line: &str) -> Result<Vec<Item>, GetoptError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        getopt(SPEC, &args)
    }

    fn opt(name: &'static str, value: Option<&str>) -> Item {
        Item::Opt(name, value.map(str::to_string))
    }

    #[test]
    fn forms_of_options_and_operands() {
        assert_eq!(
            run("-ct -Tnat f --table=filter --coun --table nat").unwrap(),
            vec![
                opt("counters", None),
                opt("test", None),
                opt("table", Some("nat")),
                Item::Operand("f".into()),
                opt("table", Some("filter")),
                opt("counters", None),
                opt("table", Some("nat")),
            ]
        );
        assert_eq!(
            run("-w 5 f -w g --wait=2 -- -c").unwrap(),
            vec![
                opt("wait", Some("5")),
                Item::Operand("f".into()),
                opt("wait", None),
                Item::Operand("g".into()),
                opt("wait", Some("2")),
                Item::Operand("-c".into()),
            ]
        );
        // A lone "-" is an operand (standard input, for some tools).
        assert_eq!(run("-").unwrap(), vec![Item::Operand("-".into())]);
    }

    #[test]
    fn refusals_in_getopts_words() {
        let err = |line| run(line).unwrap_err().to_string();
        assert_eq!(
            err("--tset f"),
            "unrecognized option '--tset' (did you mean --test?)"
        );
        assert_eq!(err("--bogus"), "unrecognized option '--bogus'");
        assert_eq!(err("-X"), "invalid option -- 'X'");
        assert_eq!(err("-cX"), "invalid option -- 'X'");
        assert_eq!(err("-T"), "option requires an argument -- 'T'");
        assert_eq!(err("--table"), "option '--table' requires an argument");
        assert_eq!(err("--test=1"), "option '--test' doesn't allow an argument");
        assert_eq!(
            err("--t"),
            "option '--t' is ambiguous; possibilities: '--test' '--table'"
        );
        assert_eq!(
            err("--wait-x=3"),
            "unrecognized option '--wait-x' (did you mean --wait?)"
        );
    }
}
