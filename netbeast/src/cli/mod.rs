//! The command line (being wired up; see /tmp/cli_mod.rs).
pub mod demo;

pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
