//! `netbeast daemon`: runs in a namespace, stops cleanly on SIGTERM, and
//! its systemd units pass `systemd-analyze verify`.
//!
//! Needs root. Run: `cargo test -p netbeast --test daemon`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use netbeast::{
    daemon::SHUTDOWN_GRACE,
    netns::{Netns, require_root},
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

/// Spawns `netbeast --netns NS daemon ARGS`, waits until it says it runs,
/// and returns the child with the lines it printed so far on stderr.
pub fn start_daemon(ns: &Netns, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(NETBEAST)
        .args(["--netns", ns.name(), "daemon"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netbeast daemon");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the daemon did not say it runs within 20 s");
        if line.contains("SIGTERM stops it") {
            return (child, rx);
        }
    }
}

#[test]
fn stops_cleanly_on_sigterm() {
    require_root();
    let ns = Netns::new("daemon").unwrap().with_netbeast(NETBEAST);
    let (mut child, lines) = start_daemon(&ns, &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited by itself"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop within {SHUTDOWN_GRACE:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "daemon exit status {status}");
    let said: Vec<String> = lines.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("stopping")),
        "no stop message: {said:?}"
    );
}

/// The shipped units are valid for systemd (with the binary path pointed at
/// the one under test, as a package would install it).
#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: `cargo xtask setup` installs it (package systemd)");
    }
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let dir = std::env::temp_dir().join(format!("nbt-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut verified = 0;
    for entry in std::fs::read_dir(&dist).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/netbeast", NETBEAST);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        // A template is verified through an instance of it.
        let unit = dir.join(name.replace("@.service", "@nbt-x.service"));
        std::fs::write(&dir.join(&name), &text).unwrap();
        let target = if name.contains('@') {
            &unit
        } else {
            &dir.join(&name)
        };
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(target)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: systemd-analyze verify failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        verified += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        verified >= 2,
        "expected the daemon units in dist/, found {verified}"
    );
}
