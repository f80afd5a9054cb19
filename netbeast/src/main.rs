/// mimalloc rather than glibc's malloc: the compile of a large ruleset
/// makes and frees millions of small vectors (docs/BENCHMARKS.md,
/// "kube-proxy's sync and restore, session 18").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    netbeast::cli::main()
}
