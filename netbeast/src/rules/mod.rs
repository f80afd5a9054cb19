//! The iptables language: rule model, parser, save/restore format, listings.

pub mod command;
pub mod ext;
pub mod generate;
pub mod journal;
pub mod list;
pub mod model;
pub mod names;
pub mod parse;
pub mod save;
pub mod target;

#[cfg(test)]
mod compat_tests;
