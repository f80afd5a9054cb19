//! `-j LOG` (issue 15): the real XDP program with LOG rules, run with
//! `BPF_PROG_TEST_RUN` on every IPv4 and IPv6 frame of `tests/fixtures/kernel-log/`
//! (lines Linux 6.18's own LOG printed for those frames and options); each
//! event the program puts in the ring buffer is formatted by netbeast and
//! compared with the kernel's line byte for byte. Plus what LOG does to
//! the packet: nothing (the next rule decides, counters as iptables).
//!
//! Needs root; every test makes its own `nbt-` namespace.

use std::{collections::BTreeMap, net::Ipv4Addr};

use netbeast::{
    compile::Interface,
    loader::Dataplane,
    log::{decode, kernel_line},
    netns::{Netns, require_root},
    rules::{command, model::Ruleset, parse},
};
use netbeast_common::{LogEvent, stats};
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/kernel-log/ipv4.jsonl"
);
const FIXTURES6: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/kernel-log/ipv6.jsonl"
);
/// The IPv6 fixtures' server address.
const SERVER6: &str = "fd00:93::2";
/// The fixtures' server: the address and MAC the frames were sent to.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 2);
const SERVER_MAC: &str = "02:00:00:00:00:02";
const XDP_PASS: u32 = 2;
const XDP_DROP: u32 = 1;

struct Fixture {
    name: String,
    options: Vec<String>,
    frame: Option<Vec<u8>>,
    line: String,
}

fn fixtures() -> Vec<Fixture> {
    fixtures_of(FIXTURES)
}

fn fixtures_of(path: &str) -> Vec<Fixture> {
    let text = std::fs::read_to_string(path).expect("reading the kernel-log fixtures");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a fixture line is JSON");
            Fixture {
                name: v["name"].as_str().unwrap().to_string(),
                options: v["options"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap().to_string())
                    .collect(),
                frame: v["frame"].as_str().map(|h| {
                    (0..h.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                        .collect()
                }),
                line: v["line"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

fn ruleset(lines: &[String]) -> Ruleset {
    let mut rules = Ruleset::default();
    for line in lines {
        let args = split(line);
        let cmd = parse::parse_iptables_args(&args)
            .unwrap_or_else(|e| panic!("rule {line:?} does not parse: {e}"));
        command::apply(&mut rules, &cmd)
            .unwrap_or_else(|e| panic!("rule {line:?} cannot be applied: {e}"));
    }
    rules
}

/// Words, with double quotes keeping blanks.
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            _ => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// A namespace with an interface called eth0 (one end of a veth pair, with
/// the fixtures' server MAC), the data plane loaded privately in it.
fn lab<F>(tag: &str, body: F)
where
    F: FnOnce(&mut Dataplane, &[Interface], u32) + Send,
{
    require_root();
    let ns = Netns::new(&format!("log-{tag}")).expect("creating the test namespace");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "nbtv1",
    ])
    .expect("adding a veth pair");
    ns.ip(&["link", "set", "eth0", "address", SERVER_MAC])
        .expect("setting eth0's MAC");
    for iface in ["eth0", "nbtv1"] {
        ns.ip(&["link", "set", iface, "up"])
            .expect("bringing the veth up");
    }
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{SERVER6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("adding the IPv6 server address");
    let out = ns.ip(&["-o", "link", "show"]).expect("listing interfaces");
    let interfaces: Vec<Interface> = out
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ": ");
            let ifindex = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.split('@').next()?.to_string();
            Some(Interface { ifindex, name })
        })
        .collect();
    let eth0 = interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .expect("eth0 in the namespace")
        .ifindex;
    ns.in_netns(move || {
        let mut dp = Dataplane::load_private()
            .unwrap_or_else(|e| panic!("loading the XDP program failed: {e}"));
        dp.set_local_addresses(&[SERVER])
            .expect("setting the local addresses");
        body(&mut dp, &interfaces, eth0);
    })
    .expect("entering the test namespace");
}

fn names(ifindex: u32) -> Option<String> {
    netbeast::log::iface_name(ifindex)
}

/// Every event waiting in the ring buffer.
fn events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<LogEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(decode(&item).expect("an event of LogEvent's size"));
    }
    out
}

/// The fixtures' frames through INPUT with a LOG rule carrying each
/// fixture's options: the line netbeast makes of the event must be the
/// kernel's, byte for byte. A later fragment never reaches INPUT alone
/// (the kernel reassembles before INPUT, so iptables' INPUT never logs one
/// either; netbeast leaves them to the reassembly): those lines are the
/// raw table's, which netbeast does not have. The locally sent one is
/// `output_uid_is_the_senders`'s (a live connection).
#[test]
fn lines_are_the_kernels_byte_for_byte() {
    let all = fixtures();
    assert_eq!(all.len(), 181, "the fixture file has 181 IPv4 lines");
    lab("lines", |dp, interfaces, eth0| {
        let mut ring = dp.take_log_events().expect("the log ring buffer");
        let mut by_options: BTreeMap<Vec<String>, Vec<&Fixture>> = BTreeMap::new();
        for f in all.iter().filter(|f| f.frame.is_some()) {
            by_options.entry(f.options.clone()).or_default().push(f);
        }
        let (mut matched, mut failures, mut unreached) = (0, Vec::new(), Vec::new());
        for (options, cases) in &by_options {
            let rule = format!(
                "-A INPUT -j LOG --log-prefix \"nbt: \" {}",
                options.join(" ")
            );
            dp.apply(&ruleset(std::slice::from_ref(&rule)), interfaces)
                .unwrap_or_else(|e| panic!("applying {rule}: {e}"));
            for f in cases {
                let frame = f.frame.as_ref().unwrap();
                let out = dp.test_run_xdp(frame, eth0).expect("BPF_PROG_TEST_RUN");
                assert_eq!(
                    out.action, XDP_PASS,
                    "{} {options:?}: LOG must let the packet go on to the policy",
                    f.name
                );
                let evs = events(&mut ring);
                match evs.as_slice() {
                    [] => unreached.push(format!("{} {options:?}", f.name)),
                    [ev] => {
                        let line = kernel_line(ev, &names);
                        let want = format!("nbt: {}", f.line);
                        if line == want {
                            matched += 1;
                        } else {
                            failures.push(format!(
                                "{} {options:?}\n   kernel:   {want:?}\n   netbeast: {line:?}",
                                f.name
                            ));
                        }
                    }
                    many => panic!("{}: {} events for one LOG rule", f.name, many.len()),
                }
            }
        }
        println!(
            "{matched} of {} lines byte-identical; {} not reaching INPUT: {unreached:?}",
            all.len(),
            unreached.len()
        );
        assert!(
            failures.is_empty(),
            "{} lines differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
        // Only the later fragments may miss INPUT (six option sets).
        assert!(
            unreached.iter().all(|u| u.starts_with("later-fragment ")),
            "frames that should reach INPUT did not: {unreached:?}"
        );
        assert_eq!(unreached.len(), 6);
        assert_eq!(matched, 180 - 6);
    });
}

/// The IPv6 fixtures' frames (extension headers, fragments, ICMPv6
/// errors, NDP, truncations) through ip6tables' INPUT with a LOG rule
/// carrying each fixture's options, on the real IPv6 program
/// (`netbeast_xdp6`): every line is the kernel's, byte for byte. Without
/// conntrack the kernel reassembles IPv6 after INPUT, so a later fragment
/// meets INPUT alone and is logged as the kernel logged it.
#[test]
fn ipv6_lines_are_the_kernels_byte_for_byte() {
    let all = fixtures_of(FIXTURES6);
    assert_eq!(all.len(), 132, "the fixture file has 132 IPv6 lines");
    lab("lines6", |dp, interfaces, eth0| {
        let mut ring = dp.take_log_events().expect("the log ring buffer");
        let mut by_options: BTreeMap<Vec<String>, Vec<&Fixture>> = BTreeMap::new();
        for f in &all {
            by_options.entry(f.options.clone()).or_default().push(f);
        }
        let (mut matched, mut failures, mut unreached) = (0, Vec::new(), Vec::new());
        for (options, cases) in &by_options {
            let rule = format!(
                "-A INPUT -j LOG --log-prefix \"nbt: \" {}",
                options.join(" ")
            );
            dp.apply(&ruleset6(std::slice::from_ref(&rule)), interfaces)
                .unwrap_or_else(|e| panic!("applying {rule}: {e}"));
            for f in cases {
                let frame = f.frame.as_ref().expect("an arriving frame");
                let out = dp.test_run_xdp(frame, eth0).expect("BPF_PROG_TEST_RUN");
                let evs = events(&mut ring);
                match evs.as_slice() {
                    [] => unreached.push(format!("{} {options:?}", f.name)),
                    [ev] => {
                        assert_eq!(
                            out.action, XDP_PASS,
                            "{} {options:?}: LOG must let the packet go on to the policy",
                            f.name
                        );
                        let line = kernel_line(ev, &names);
                        let want = format!("nbt: {}", f.line);
                        if line == want {
                            matched += 1;
                        } else {
                            failures.push(format!(
                                "{} {options:?}\n   kernel:   {want:?}\n   netbeast: {line:?}",
                                f.name
                            ));
                        }
                    }
                    many => panic!("{}: {} events for one LOG rule", f.name, many.len()),
                }
            }
        }
        println!(
            "{matched} of {} IPv6 lines byte-identical; not reaching INPUT: {unreached:?}",
            all.len()
        );
        assert!(
            failures.is_empty(),
            "{} lines differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(
            unreached.is_empty(),
            "frames that did not reach INPUT: {unreached:?}"
        );
        assert_eq!(matched, all.len());
    });
}

/// An IPv6 ruleset (ip6tables lines); the namespace's eth0 gets the
/// fixtures' server address, so the IPv6 program takes their frames to
/// INPUT.
fn ruleset6(lines: &[String]) -> Ruleset {
    let mut rules = Ruleset::default();
    for line in lines {
        let cmd = parse::parse_ip6tables_args(&split(line))
            .unwrap_or_else(|e| panic!("rule {line:?} does not parse: {e}"));
        command::apply(&mut rules, &cmd)
            .unwrap_or_else(|e| panic!("rule {line:?} cannot be applied: {e}"));
    }
    rules
}

/// LOG is non-terminating: the next rule decides, and both count the
/// packet (iptables' counters); a LOG rule that does not match logs
/// nothing; several LOG rules log in rule order.
#[test]
fn log_lets_the_next_rule_decide() {
    let frame = netbeast::packet::FrameBuilder::udp(Ipv4Addr::new(10, 93, 0, 1), 5353, SERVER, 53)
        .dst_mac([2, 0, 0, 0, 0, 2])
        .build();
    lab("verdict", |dp, interfaces, eth0| {
        let mut ring = dp.take_log_events().expect("the log ring buffer");
        let rules: Vec<String> = [
            "-A INPUT -p tcp -j LOG --log-prefix never:",
            "-A INPUT -p udp -j LOG --log-prefix first:",
            "-A INPUT -j LOG --log-prefix second: --log-level 7",
            "-A INPUT -p udp --dport 53 -j DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        dp.apply(&ruleset(&rules), interfaces).expect("applying");
        let before = dp.stats().expect("stats");
        let out = dp.test_run_xdp(&frame, eth0).expect("test run");
        assert_eq!(out.action, XDP_DROP, "the DROP after the LOG rules decides");
        let evs = events(&mut ring);
        let prefixes: Vec<String> = evs.iter().map(netbeast::log::prefix).collect();
        assert_eq!(prefixes, ["first:", "second:"]);
        assert_eq!(evs[1].target.level, 7);
        let (counters, policy) = dp.chain_counters(0, 4).expect("counters");
        let packets: Vec<u64> = counters.iter().map(|c| c.packets).collect();
        assert_eq!(packets, [0, 1, 1, 1], "LOG rules count the packet too");
        assert_eq!(policy.packets, 0);
        let after = dp.stats().expect("stats");
        let moved = |i: u32| after[i as usize] - before[i as usize];
        assert_eq!(moved(stats::LOG_EVENTS), 2);
        assert_eq!(moved(stats::LOG_LOST), 0);
        assert_eq!(moved(stats::DROPPED), 1);
        assert_eq!(moved(stats::UNKNOWN_TARGET), 0);
    });
}

/// The kernel side copies what the line reads, not a fixed 256 bytes: a
/// UDP or TCP packet's event is a short one (`LOG_SHORT_EVENT_BYTES` in
/// the ring) holding the frame through its L4 header; `--log-tcp-options`
/// and ICMP (whose errors quote a packet) keep the whole capture. The
/// lines are the same either way (`lines_are_the_kernels_byte_for_byte`).
#[test]
fn events_carry_the_headers_the_line_reads() {
    use netbeast_common::{LOG_CAPTURE_BYTES, LOG_SHORT_EVENT_BYTES};
    let from = Ipv4Addr::new(10, 93, 0, 1);
    let mac = [2, 0, 0, 0, 0, 2];
    let payload = vec![0x55u8; 400];
    let udp = netbeast::packet::FrameBuilder::udp(from, 5353, SERVER, 53)
        .dst_mac(mac)
        .payload(&payload)
        .build();
    let tcp = netbeast::packet::FrameBuilder::tcp(from, 40000, SERVER, 22)
        .dst_mac(mac)
        .payload(&payload)
        .build();
    let icmp = netbeast::packet::FrameBuilder::icmp_echo_request(from, SERVER, 7, 1)
        .dst_mac(mac)
        .payload(&payload)
        .build();
    // (frame, LOG options, record bytes in the ring, frame bytes copied)
    let cases: [(&str, &[u8], &str, usize, usize); 4] = [
        ("udp", &udp, "", LOG_SHORT_EVENT_BYTES, 14 + 20 + 8),
        ("tcp", &tcp, "", LOG_SHORT_EVENT_BYTES, 14 + 20 + 20),
        (
            "tcp options",
            &tcp,
            "--log-tcp-options",
            size_of::<LogEvent>(),
            LOG_CAPTURE_BYTES,
        ),
        ("icmp", &icmp, "", size_of::<LogEvent>(), LOG_CAPTURE_BYTES),
    ];
    lab("capture", |dp, interfaces, eth0| {
        let mut ring = dp.take_log_events().expect("the log ring buffer");
        for (what, frame, options, record, captured) in cases {
            dp.apply(
                &ruleset(&[format!("-A INPUT -j LOG {options}").trim_end().to_string()]),
                interfaces,
            )
            .expect("applying");
            dp.test_run_xdp(frame, eth0).expect("BPF_PROG_TEST_RUN");
            let item = ring.next().unwrap_or_else(|| panic!("{what}: no event"));
            assert_eq!(item.len(), record, "{what}: the event's size in the ring");
            let ev = decode(&item).expect("an event");
            drop(item);
            assert_eq!(ev.captured as usize, captured, "{what}: frame bytes copied");
            assert_eq!(
                &ev.frame[..captured],
                &frame[..captured],
                "{what}: the frame's first bytes"
            );
            assert!(ring.next().is_none(), "{what}: one event");
        }
    });
}

/// Nobody reads the ring buffer: once full, events are lost and counted,
/// and every packet still gets its verdict.
#[test]
fn a_full_ring_buffer_loses_events_not_packets() {
    let frame = netbeast::packet::FrameBuilder::udp(Ipv4Addr::new(10, 93, 0, 1), 5353, SERVER, 53)
        .dst_mac([2, 0, 0, 0, 0, 2])
        .build();
    lab("full", |dp, interfaces, eth0| {
        dp.apply(
            &ruleset(&[
                "-A INPUT -j LOG".to_string(),
                "-A INPUT -j DROP".to_string(),
            ]),
            interfaces,
        )
        .expect("applying");
        // An upper bound: these UDP events are short, and each also takes
        // the ring's 8-byte record header.
        let fits =
            netbeast_common::LOG_RING_BYTES as usize / netbeast_common::LOG_SHORT_EVENT_BYTES;
        let runs = fits as u32 + 1000;
        let _ = eth0;
        let (out, _) = dp
            .test_run_repeat(&frame, runs, false)
            .expect("repeated test run");
        assert_eq!(out, XDP_DROP);
        let s = dp.stats().expect("stats");
        let (events, lost) = (s[stats::LOG_EVENTS as usize], s[stats::LOG_LOST as usize]);
        assert_eq!(
            events + lost,
            runs as u64,
            "every hit is an event or a loss"
        );
        assert!(
            lost >= 1000,
            "{lost} lost of {runs}: the buffer holds about {fits}"
        );
        assert_eq!(
            s[stats::DROPPED as usize],
            runs as u64,
            "no packet lost its verdict"
        );
    });
}

// ---------------------------------------------------------------------------
// Network tier: generated frames, `netbeast log` and the daemon

mod support;

use std::{
    io::{BufRead, BufReader},
    time::Duration,
};

use netbeast::{
    bench::{
        generator::{Generator, GeneratorKind, Port},
        live::Traffic,
        planes::Ip,
    },
    netns::{CLIENT_ADDR, CLIENT_IFACE, ClientServer, SERVER_ADDR, SERVER_IFACE},
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// LOG hits the daemon test produces (the issue asks for at least 100,000).
const FLOOD_FRAMES: u32 = 150_000;
/// Frames per burst: a third of what the ring buffer holds, so a reader
/// that keeps up loses none.
const BURST: u32 = 4_000;

/// Sends `frames` UDP frames to the server's port 9 from the client, as
/// the benchmark's packet-socket generator (exact counts on every kernel:
/// the fan-out sends whole fan-outs of 64), in bursts with `pause` between
/// them.
fn send_frames(net: &ClientServer, frames: u32, pause: Duration) {
    let traffic = Traffic {
        src_mac: support::mac_of(&net.client, CLIENT_IFACE),
        dst_mac: support::mac_of(&net.server, SERVER_IFACE),
        first_source: CLIENT_ADDR,
        first_port: 40000,
        destination: SERVER_ADDR,
        dport: 9,
        flows: 1,
        size: 64,
        ip: Ip::V4,
    };
    let ifindex: u32 = net
        .client
        .ip(&["-o", "link", "show", "dev", CLIENT_IFACE])
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let port = Port::open(&net.client, CLIENT_IFACE, ifindex).expect("the client's veth");
    net.client
        .in_netns(move || {
            let mut generator =
                Generator::open(GeneratorKind::Packet, 0).expect("loading the generator");
            generator
                .configure(&traffic, &port)
                .expect("configuring it");
            let mut left = frames;
            while left > 0 {
                let n = left.min(BURST);
                generator.send(n).expect("sending frames");
                left -= n;
                std::thread::sleep(pause);
            }
        })
        .expect("entering the client namespace");
}

/// The packet counter of the server's INPUT rule number `n` (1-based),
/// from `netbeast save --counters`.
fn input_rule_packets(net: &ClientServer, n: usize) -> u64 {
    let saved = net.server.netbeast_ok(&["save", "--counters"]).unwrap();
    let line = saved
        .lines()
        .filter(|l| l.contains("-A INPUT"))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("no INPUT rule {n} in:\n{saved}"));
    line.trim_start_matches('[')
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn stat(net: &ClientServer, name: &str) -> u64 {
    support::stat(&net.server, name)
}

/// `netbeast log` prints the kernel's line after a syslog timestamp and the
/// host; `--json` one object per event with named fields; `--output`
/// appends to a file. Then the daemon drains a sustained flood of LOG hits
/// into a file and, on SIGTERM, writes what it had left: every event the
/// kernel handed over is in the file (written = hits − log_lost).
#[test]
fn netbeast_log_and_the_daemon_write_every_event() {
    require_root();
    let net = support::netbeast_server("logd", NETBEAST);
    net.server
        .netbeast_iptables_ok("-A INPUT -p udp --dport 9 -j LOG --log-prefix nbt-flood:")
        .unwrap();
    net.server
        .netbeast_iptables_ok("-A INPUT -p udp --dport 9 -j DROP")
        .unwrap();

    // A few events, read by `netbeast log` (text, then JSON).
    send_frames(&net, 3, Duration::ZERO);
    let dir = std::env::temp_dir().join(format!("nbt-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text_file = dir.join("text.log");
    net.server
        .netbeast_ok(&["log", "--output", text_file.to_str().unwrap()])
        .expect("netbeast log --output");
    let text = std::fs::read_to_string(&text_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let mac = |m: [u8; 6]| netbeast::packet::format_mac(&m);
    let want = format!(
        " kernel: nbt-flood:IN={SERVER_IFACE} OUT= MAC={}:{}:08:00 SRC={CLIENT_ADDR} \
         DST={SERVER_ADDR} LEN=50 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=UDP SPT=40000 DPT=9 \
         LEN=30 ",
        mac(support::mac_of(&net.server, SERVER_IFACE)),
        mac(support::mac_of(&net.client, CLIENT_IFACE)),
    );
    for l in &lines {
        // "Dec  5 14:02:03 HOST kernel: ..."
        assert!(l.ends_with(&want), "{l:?} does not end with {want:?}");
        assert_eq!(l.as_bytes()[3], b' ', "{l:?} starts with a syslog time");
    }
    send_frames(&net, 2, Duration::ZERO);
    let json = net.server.netbeast_ok(&["log", "--json"]).unwrap();
    let objects: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(objects.len(), 2, "{json}");
    for o in &objects {
        assert_eq!(o["prefix"], "nbt-flood:");
        assert_eq!(o["chain"], "INPUT");
        assert_eq!(o["src"], CLIENT_ADDR.to_string());
        assert_eq!(o["dpt"], 9);
        assert_eq!(o["in"], SERVER_IFACE);
    }

    // The flood, drained by the daemon.
    let flood_file = dir.join("flood.log");
    let hits_before = input_rule_packets(&net, 1);
    let lost_before = stat(&net, "log_lost");
    let (mut daemon, said) =
        support::start_daemon(&net.server, &["--log-output", flood_file.to_str().unwrap()]);
    send_frames(&net, FLOOD_FRAMES, Duration::from_millis(5));
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
    let hits = input_rule_packets(&net, 1) - hits_before;
    let lost = stat(&net, "log_lost") - lost_before;
    let written = BufReader::new(std::fs::File::open(&flood_file).unwrap())
        .lines()
        .map(|l| {
            let l = l.unwrap();
            assert!(l.contains(" kernel: nbt-flood:IN="), "{l:?}");
        })
        .count() as u64;
    let said: Vec<String> = said.try_iter().collect();
    println!("hits {hits}, lost {lost}, written {written}; daemon said {said:?}");
    assert_eq!(hits, FLOOD_FRAMES as u64, "every frame met the LOG rule");
    assert_eq!(
        written,
        hits - lost,
        "events written = rule hits - log_lost"
    );
    assert!(
        written > (netbeast_common::LOG_RING_BYTES as usize / size_of::<LogEvent>()) as u64,
        "the daemon drained continuously (more than one ring buffer's worth)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--log-uid` in OUTPUT, through the TC egress program and a real socket:
/// a TCP SYN sent by uid/gid 65534 (the fixture's `output-tcp-syn-uid`).
/// The line must be the kernel's with the values this connection chose
/// instead of the fixture's (addresses, interface, IP ID, source port).
#[test]
fn output_uid_is_the_senders() {
    require_root();
    let fixture = fixtures()
        .into_iter()
        .find(|f| f.name == "output-tcp-syn-uid")
        .expect("the fixture of the OUTPUT line");
    // The server sends (the client's veth runs an XDP program already).
    let net = support::netbeast_server("loguid", NETBEAST);
    net.server
        .netbeast_iptables_ok("-A OUTPUT -p tcp --dport 9 --syn -j LOG --log-uid")
        .unwrap();
    // Nothing listens on port 9: the SYN goes out, a RST comes back.
    let _ = net
        .server
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{CLIENT_ADDR}/9"),
        ])
        .output()
        .expect("running the connection as uid 65534");
    let json = net.server.netbeast_ok(&["log", "--json"]).unwrap();
    let events: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!events.is_empty(), "no LOG event for the SYN");
    let ev = &events[0];
    assert_eq!(ev["uid"], 65534, "{ev}");
    assert_eq!(ev["gid"], 65534, "{ev}");
    assert_eq!(ev["chain"], "OUTPUT");
    let want = fixture
        .line
        .replace("OUT=eth0", &format!("OUT={SERVER_IFACE}"))
        .replace("SRC=10.93.0.1", &format!("SRC={SERVER_ADDR}"))
        .replace("DST=10.93.0.2", &format!("DST={CLIENT_ADDR}"))
        .replace("ID=791", &format!("ID={}", ev["id"]))
        .replace("SPT=52188", &format!("SPT={}", ev["spt"]));
    assert_eq!(ev["line"].as_str().unwrap(), want);
}

/// `netbeast daemon --metrics`: the scrape parses with a Prometheus
/// text-format parser, and its per-rule, policy and stats values are the
/// ones `save --counters` and `stats` report.
#[test]
fn daemon_metrics_parse_and_match_the_counters() {
    require_root();
    let net = support::netbeast_server("logm", NETBEAST);
    net.server
        .netbeast_ok(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "9",
            "-m",
            "comment",
            "--comment",
            "discard port 9",
            "-j",
            "LOG",
        ])
        .unwrap();
    net.server
        .netbeast_iptables_ok("-A INPUT -p udp --dport 9 -j DROP")
        .unwrap();
    // A mangle rule without a target counts the same datagrams: every
    // table is scraped, not only filter and nat.
    net.server
        .netbeast_iptables_ok("-t mangle -A PREROUTING -p udp --dport 9")
        .unwrap();
    // One tracked connection, for the conntrack gauges.
    net.server
        .netbeast_iptables_ok("-A INPUT -p udp --dport 10 -m conntrack --ctstate NEW -j ACCEPT")
        .unwrap();
    send_frames(&net, 7, Duration::ZERO);
    netbeast::netns::udp_send(
        &net.client,
        std::net::SocketAddrV4::new(netbeast::netns::SERVER_ADDR, 10),
        b"tracked",
        3,
    )
    .unwrap();
    let addr = support::metrics_addr();
    let (mut daemon, _said) = support::start_daemon(&net.server, &["--metrics", &addr]);
    let scrape = support::scrape_metrics(&net.server, &addr);
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    let value = |name: &str, labels: &[(&str, &str)]| support::metric_value(&scrape, name, labels);
    let log_rule = [
        ("table", "filter"),
        ("chain", "INPUT"),
        ("rule", "1"),
        ("comment", "discard port 9"),
    ];
    assert_eq!(value("iptables_rule_packets_total", &log_rule), 7.0);
    assert_eq!(
        value(
            "iptables_rule_packets_total",
            &[("table", "mangle"), ("chain", "PREROUTING"), ("rule", "1")]
        ),
        7.0
    );
    assert_eq!(
        value(
            "iptables_rule_packets_total",
            &[("chain", "INPUT"), ("rule", "2")]
        ),
        input_rule_packets(&net, 2) as f64
    );
    assert_eq!(
        value("iptables_rule_bytes_total", &log_rule),
        7.0 * 50.0,
        "IPv4 bytes of 7 UDP frames of 64 bytes"
    );
    assert_eq!(
        value(
            "iptables_default_packets_total",
            &[("table", "filter"), ("chain", "INPUT")]
        ),
        0.0
    );
    assert_eq!(value("netbeast_log_events_total", &[]), 7.0);
    // The UDP flow to port 10 has no reply: one unreplied connection.
    let entries = |t| value("netbeast_conntrack_entries", &[("table", t)]);
    let limit = |t| value("netbeast_conntrack_entries_limit", &[("table", t)]);
    assert_eq!(entries("unreplied"), 1.0);
    assert_eq!(entries("established"), 0.0);
    assert_eq!(
        limit("unreplied"),
        f64::from(netbeast_common::CT_UNREPLIED_ENTRIES)
    );
    assert_eq!(
        limit("established"),
        f64::from(netbeast_common::CT_ESTABLISHED_ENTRIES)
    );
    assert_eq!(
        value("netbeast_log_lost_total", &[]),
        stat(&net, "log_lost") as f64
    );
}
