// The three-way scenario macro shared by the network test files, pulled in
// with `include!`: it expects `NETBEAST` and `Firewall` in scope.

/// Runs a scenario with netbeast (default and skb mode) and with iptables.
macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn netbeast() {
                super::$name(Firewall::netbeast(NETBEAST));
            }

            #[test]
            fn netbeast_skb() {
                super::$name(Firewall::netbeast_with(NETBEAST, &["--mode", "skb"]));
            }

            #[test]
            fn iptables_oracle() {
                super::$name(Firewall::Iptables);
            }
        }
    };
}
