//! Builds the kernel programs (netbeast-ebpf) for the BPF target and leaves
//! the object in OUT_DIR, where `loader` embeds it.

use std::process::Command;

fn main() -> anyhow::Result<()> {
    // One line, then stop: everything else would be noise.
    match Command::new("bpf-linker").arg("--version").output() {
        Err(_) => {
            eprintln!("error: bpf-linker is not installed: run `cargo xtask setup` first");
            std::process::exit(1);
        }
        Ok(out) if !out.status.success() => {
            let why = String::from_utf8_lossy(&out.stderr);
            eprintln!(
                "error: bpf-linker is installed but does not run ({}): run `cargo xtask setup` to rebuild it",
                why.lines().next().unwrap_or("no message")
            );
            std::process::exit(1);
        }
        Ok(_) => {}
    }
    println!("cargo:rerun-if-changed=../netbeast-common/src");
    // The kernel crates need `-Z build-std=core` on the stable toolchain;
    // aya-build passes it when RUSTC_BOOTSTRAP is set (TOOLCHAIN.md §1).
    // SAFETY: the build script is single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netbeast-ebpf",
            root_dir: "../netbeast-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("stable"),
    )?;
    // The object's FNV-1a, which names the verified-program cache and
    // stamps the map-write record (`loader::object_hash`): computed here
    // once rather than in every process (a byte loop over ~4 MB cost
    // each call some 4 ms of CPU).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let object = std::fs::read(out.join("netbeast"))?;
    let hash = object.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::fs::write(out.join("object_hash.rs"), format!("0x{hash:016x}"))?;
    Ok(())
}
