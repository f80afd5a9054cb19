//! A temporary directory of links to the netbeast binary, each named like
//! the tool it stands in for (`iptables`, `ip6tables-restore`, `ipset`):
//! what a user's `ln -s netbeast /usr/local/sbin/iptables` gives, for the
//! multi-call tests. Included with `#[path = "support/links.rs"] mod links;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The directory; removed on drop.
pub struct Links(PathBuf);

impl Links {
    /// A fresh directory, its name made of `tag`, the test process and a
    /// count (tests of one binary run at once).
    pub fn new(tag: &str) -> Links {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nbt-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Links(dir)
    }

    /// The link named `name`, made on first use.
    pub fn path(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        if !path.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_netbeast"), &path).unwrap();
        }
        path
    }

    /// The directory, for the test's own files beside the links.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
