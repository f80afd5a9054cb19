// The three-way scenario macro shared by the network test files, and the
// check of connection outcomes, pulled in with `include!`: it expects
// `NETBEAST` and `Firewall` in scope.

/// Runs a scenario with netbeast (default and skb mode) and with iptables;
/// `scenario!(name, without skb)` leaves out the skb mode.
macro_rules! scenario {
    ($name:ident) => {
        scenario!(@modes $name, {
            #[test]
            fn netbeast_skb() {
                super::$name(Firewall::netbeast_with(NETBEAST, &["--mode", "skb"]));
            }
        });
    };
    ($name:ident, without skb) => {
        scenario!(@modes $name, {});
    };
    (@modes $name:ident, { $($skb:item)* }) => {
        mod $name {
            use super::*;

            #[test]
            fn netbeast() {
                super::$name(Firewall::netbeast(NETBEAST));
            }

            $($skb)*

            #[test]
            fn iptables_oracle() {
                super::$name(Firewall::Iptables);
            }
        }
    };
}

/// Checks connection outcomes against the expected ones: each wrong one is
/// named (`what` before its target: "port ", "tcp ", or nothing), and the
/// ruleset shown, when any is.
#[allow(dead_code)]
fn assert_outcomes<T: std::fmt::Display>(
    when: &str,
    what: &str,
    expected: &[(T, netbeast::netns::ConnectOutcome)],
    got: &[netbeast::netns::ConnectOutcome],
    ruleset: impl FnOnce() -> String,
) {
    let wrong: Vec<String> = expected
        .iter()
        .zip(got)
        .filter(|((_, want), got)| want != *got)
        .map(|((target, want), got)| format!("{what}{target}: expected {want}, got {got}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{when}:\n  {}\nruleset:\n{}",
        wrong.join("\n  "),
        ruleset()
    );
}
