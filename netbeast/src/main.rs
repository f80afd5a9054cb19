fn main() -> std::process::ExitCode {
    netbeast::cli::main()
}
