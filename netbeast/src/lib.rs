//! netbeast: iptables' jobs compiled into XDP and TC programs.
//!
//! Data flows one way: iptables text → [`rules`] (model) → [`compile`]
//! (classifier tables) → [`loader`] (BPF maps, pins, attach).

// `netbeast::` paths also from inside: the tests' shared frame reader
// (tests/support/frames.rs) is compiled into the unit tests too.
extern crate self as netbeast;

pub mod bench;
pub mod cli;
pub mod compile;
pub mod daemon;
pub mod fault;
pub mod lb;
pub mod loader;
pub mod local_routes;
pub mod log;
pub mod netns;
pub mod packet;
pub mod paths;
pub mod profile;
pub mod rawtext;
pub mod rules;
pub mod state;
pub mod trace;
