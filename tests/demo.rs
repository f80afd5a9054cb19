//! `netbeast demo`: every section of the article runs on real traffic and
//! ends as the article says (the demo exits 1 and says DIFFERENT for a
//! section where netbeast did not), leaving no namespace behind.
//!
//! Needs root. Run: `cargo test -p netbeast --test demo`.

use std::process::Command;

use netbeast::netns::require_root;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const SECTIONS: [&str; 7] = [
    "firewall", "router", "nat", "portfwd", "lb", "antidos", "logger",
];

#[test]
fn every_section_goes_as_the_article_says() {
    require_root();
    let out = Command::new(NETBEAST).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "netbeast demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for section in SECTIONS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(section) && l.ends_with("as the article says")),
            "no summary line for {section}:\n{stdout}"
        );
    }
    // Tests run in parallel: only the demo makes `nbt-demo-` namespaces,
    // and the two demo tests check at their own end, so look for this
    // run's (its pid is in each name).
    let pid = format!("-{}-", out_pid(&stdout));
    let left: Vec<String> = {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("nbt-demo-") && n.contains(&pid))
            .map(str::to_string)
            .collect()
    };
    assert!(left.is_empty(), "the demo left namespaces: {left:?}");
}

#[test]
fn one_section_runs_alone() {
    require_root();
    let out = Command::new(NETBEAST)
        .args(["demo", "router"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "netbeast demo router:\n{stdout}");
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with("as the article says"))
        .collect();
    assert_eq!(summary.len(), 1, "only the router section runs:\n{stdout}");
    assert!(summary[0].starts_with("router"));
}

/// The demo's pid, from a namespace name it printed (`nbt-<tag>-<pid>-<n>`).
fn out_pid(stdout: &str) -> String {
    stdout
        .split("(namespace ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .and_then(|name| name.rsplit('-').nth(1))
        .expect("the demo names its namespaces")
        .to_string()
}
