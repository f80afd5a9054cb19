//! Types and constants shared by the kernel programs and the userspace
//! compiler. Everything here is `#[repr(C)]` without implicit padding so both
//! sides agree on the bytes; the layout tests at the bottom pin the sizes.
#![no_std]

/// Fields one chain may constrain: the kernel's search keeps one class per
/// used field (`SearchState::classes`) and ANDs them word by word in an
/// unrolled loop, whose size the verifier pays for. An IPv4 chain can use
/// 16 fields, an IPv6 one fewer (its address takes eight, but it has no
/// IPv4 header fields); the compiler refuses a chain using more
/// (`CompileError::TooManyFields`).
pub const MAX_SEARCH_FIELDS: usize = 16;

/// IPv6 extension headers the parser walks (hop-by-hop, routing, fragment,
/// destination options, AH) before the upper-layer header; a longer chain
/// is dropped and counted (`stats::IPV6_EXT_TOO_DEEP`).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Rule slots one chain can hold. One bit per slot in every class vector.
/// Two levels of summary cover them (see [`ClassHeader`]): the header's
/// `blocks` word names the blocks of 64 words that hold a set bit, each
/// such block's summary names its non-zero words. 262,144 is as many as
/// one `blocks` word can name (64 blocks of 64 words of 64 slots): room
/// for kube-proxy's 10,000 services of three endpoints, which every
/// chain that jumps to its services chain holds inlined (150,000 slots).
pub const MAX_RULES_PER_CHAIN: usize = 262_144;
/// 64-bit words in a class vector.
pub const RULE_WORDS: usize = MAX_RULES_PER_CHAIN / 64;
/// Blocks of 64 words of a class vector, one bit each in
/// `ClassHeader::blocks`; a block with a non-zero word has a summary
/// word (bit `w`: word `64 * block + w` is non-zero).
pub const SUMMARY_WORDS: usize = RULE_WORDS / 64;
/// Rule slots of every chain of one ruleset together (each generation has
/// this many `RULES` entries, dealt to its chains in order:
/// `ChainConfig::rule_base`). Twice the chain limit: a table of
/// `MAX_RULES_PER_CHAIN` slots leaves as many to the others (kube-proxy's
/// services are inlined into nat PREROUTING and nat OUTPUT alike).
pub const MAX_RULESET_SLOTS: u32 = 2 * MAX_RULES_PER_CHAIN as u32;
/// Counters of one ruleset: one per rule of every chain, built-in or
/// user-defined, of every table, plus one per built-in chain's policy
/// (each generation has this many `COUNTERS` entries, laid out by
/// [`counter_layout`]). A user-defined chain's rules count once however
/// many chains inline them, so fewer are needed than slots: a chain full
/// of its own rules, and a quarter of that more for the others (per CPU:
/// each costs every CPU 16 bytes).
pub const MAX_RULESET_COUNTERS: u32 = MAX_RULES_PER_CHAIN as u32 + MAX_RULES_PER_CHAIN as u32 / 4;
/// Distinct match classes (deduplicated bit vectors) one ruleset may use,
/// across all its chains and fields: a rule naming its own address or
/// port makes one, so about as many as the rules (the slots of inlined
/// chains share their rules' classes).
pub const MAX_CLASSES: u32 = 262_144;
/// The ruleset arrays' capacity: the share of its largest size (the
/// `MAX_*` constants: [`MAX_RULESET_SLOTS`], [`MAX_RULESET_COUNTERS`],
/// [`MAX_CLASSES`], [`MAX_CLASS_WORDS`], [`MAX_GUARDS`],
/// [`MAX_NAT_TARGETS`]) that each generation of `RULES`, `COUNTERS`,
/// `CLASS_HEADERS`, `CLASS_WORDS`, `GUARDS` (and `GUARD_MEMO`),
/// `NAT_TARGETS`, `NAT6_ADDRS` and `KEY_CLASSES` holds, all alike, and
/// of `HASHLIMIT`'s sets. A data plane's is chosen when its maps are made
/// (`attach --ruleset-memory`, by default from the machine's memory) and
/// kept for its life; the kernel object gets it as a load-time constant,
/// so the programs find each generation's region where userspace wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Each array holds its largest size `>> shift`: 0
    /// ([`Capacity::FULL`]) to `log2(CAPACITY_SHRINK_MAX)`. A shift, not
    /// a count, so that the kernel's index of a generation's region is a
    /// shift and a multiply.
    pub shift: u32,
}

/// How far [`Capacity`] may shrink the ruleset arrays: to
/// `1/CAPACITY_SHRINK_MAX` of their largest size (8,192 rule slots).
pub const CAPACITY_SHRINK_MAX: u32 = 64;

impl Capacity {
    /// Every array at its largest.
    pub const FULL: Capacity = Capacity { shift: 0 };
    /// Every array at its smallest.
    pub const SMALLEST: Capacity = Capacity {
        shift: CAPACITY_SHRINK_MAX.trailing_zeros(),
    };

    /// The capacity of `slots` rule slots, if it is one (a power of two
    /// between [`Capacity::SMALLEST`]'s and [`Capacity::FULL`]'s).
    pub const fn of_slots(slots: u32) -> Option<Capacity> {
        if slots.is_power_of_two()
            && slots >= Capacity::SMALLEST.slots()
            && slots <= MAX_RULESET_SLOTS
        {
            Some(Capacity {
                shift: (MAX_RULESET_SLOTS / slots).trailing_zeros(),
            })
        } else {
            None
        }
    }

    /// Rule slots of one generation.
    pub const fn slots(self) -> u32 {
        self.rules()
    }

    /// This capacity's share of an array whose largest size is `full`.
    #[inline(always)]
    pub const fn share(self, full: u32) -> u32 {
        full >> self.shift
    }
    /// `RULES` entries of one generation.
    #[inline(always)]
    pub const fn rules(self) -> u32 {
        self.share(MAX_RULESET_SLOTS)
    }
    /// `COUNTERS` entries of one generation.
    #[inline(always)]
    pub const fn counters(self) -> u32 {
        self.share(MAX_RULESET_COUNTERS)
    }
    /// Class ids (`CLASS_HEADERS` entries) of one generation.
    #[inline(always)]
    pub const fn classes(self) -> u32 {
        self.share(MAX_CLASSES)
    }
    /// `CLASS_WORDS` words of one generation.
    #[inline(always)]
    pub const fn class_words(self) -> u32 {
        self.share(MAX_CLASS_WORDS)
    }
    /// Guards (`GUARDS` entries) of one generation; `GUARD_MEMO` holds one
    /// generation's.
    #[inline(always)]
    pub const fn guards(self) -> u32 {
        self.share(MAX_GUARDS)
    }
    /// Translations (`NAT_TARGETS`, `NAT6_ADDRS` entries) of one generation.
    #[inline(always)]
    pub const fn nat_targets(self) -> u32 {
        self.share(MAX_NAT_TARGETS)
    }
    /// `KEY_CLASSES` chunks of one generation.
    #[inline(always)]
    pub const fn key_chunks(self) -> u32 {
        self.share(MAX_KEY_CHUNKS)
    }
    /// `HASHLIMIT` sets: the buckets of every `-m hashlimit` table, kept
    /// across ruleset changes (not per generation); a key's set is its
    /// [`hashlimit_set`] masked to them.
    #[inline(always)]
    pub const fn hashlimit_sets(self) -> u32 {
        self.share(HASHLIMIT_SETS)
    }
}

/// Rules without a terminating target (no `-j`, later LOG) one chain may
/// hold: the kernel's search acts on at most this many per packet, and the
/// compiler refuses chains with more.
pub const MAX_NONTERMINATING_RULES: usize = 64;
/// Two copies of every ruleset table: the kernel reads the active one while
/// userspace writes the other, then one write to `ACTIVE` switches.
pub const GENERATIONS: usize = 2;
/// Bit of the `ACTIVE` word (bit 0: the generation) that turns connection
/// tracking on: set when a rule of the active ruleset uses connection states
/// or the nat table has rules.
pub const ACTIVE_TRACKING: u32 = 2;
/// Bit of the `ACTIVE` word set when the nat table has rules: new
/// connections are classified by the nat chains, and TC egress looks up
/// forwarded packets to apply their source translation.
pub const ACTIVE_NAT: u32 = 4;
/// Bit of the `ACTIVE` word set while translated connections may exist:
/// with `ACTIVE_NAT`, and kept after the nat rules go (as netfilter keeps
/// translating the connections it translated) until conntrack is flushed.
/// Their packets are translated whenever tracking is on.
pub const ACTIVE_TRANSLATIONS: u32 = 8;
/// Bit of the `ACTIVE` word set when a rule of the active ruleset tests
/// TCP flags (`--syn`, `--tcp-flags`): a TCP packet whose header is cut
/// before its flags (a tiny first fragment, RFC 1858) cannot be judged on
/// them, and is dropped ([`TCP_FLAGS_CUT`], `stats::TCP_CUT`).
pub const ACTIVE_TCP_FLAGS: u32 = 16;
/// Bit of the `ACTIVE` word set while the IPv6 ruleset (`ip6tables`) is
/// not pristine: IPv6 packets are parsed and run through the IPv6 chains.
/// Without it they pass untouched, as before netbeast had IPv6.
pub const ACTIVE_IPV6: u32 = 256;
/// Bit of the `ACTIVE` word set while `netbeast lb` has services (with
/// `ACTIVE_TRACKING` and `ACTIVE_TRANSLATIONS`): a new connection's first
/// packet looks its destination up in `LB_SERVICES`.
pub const ACTIVE_LB: u32 = 32;
/// Bit of the `ACTIVE` word set while `netbeast trace` runs: each packet
/// gets a trace id and every chain it runs reports the slots it acted on
/// (`TRACE_EVENTS`). Clear, the data plane pays one test of a bit of the
/// word it reads anyway. Kept across ruleset changes, like `ACTIVE_LB`.
pub const ACTIVE_TRACE: u32 = 64;
/// Bit of the `ACTIVE` word set when a rule of the active ruleset tests TCP
/// options (`--tcp-option`): the pipeline then walks a TCP packet's options
/// into its per-CPU slot (a cost no other ruleset pays).
pub const ACTIVE_TCP_OPTIONS: u32 = 128;
/// Bit of the `ACTIVE` word set while the raw table has a rule or a DROP
/// policy: packets run raw PREROUTING (XDP ingress) or raw OUTPUT (TC
/// egress) before conntrack. Clear, they pay one test of the word.
pub const ACTIVE_RAW: u32 = 512;
/// Bit of the `ACTIVE` word set while an IPv6 rule tests extension headers
/// (`-m ipv6header`, `-m rt`, `-m frag`): only then does the IPv6 program
/// make the header facts from its walk (a call per packet no other
/// ruleset pays).
pub const ACTIVE_IPV6_HEADERS: u32 = 1024;
/// Bit of the `ACTIVE` word set when a rule tests SCTP chunks (`-m sctp
/// --chunk-types`): the pipeline then walks an SCTP packet's chunks into
/// its per-CPU slot (a cost no other ruleset pays).
pub const ACTIVE_SCTP_CHUNKS: u32 = 2048;
/// Bit of the `ACTIVE` word set when a rule tests DCCP packet types or
/// options (`-m dccp --dccp-types`, `--dccp-option`): the pipeline then
/// reads a DCCP packet's header and walks its options into its per-CPU
/// slot ([`dccp::DccpFacts`]), a cost no other ruleset pays.
pub const ACTIVE_DCCP: u32 = 1 << 14;
/// Bit of the `ACTIVE` word set while the mangle table's built-in chains
/// have a rule or a DROP policy: packets then run them at the kernel's
/// mangle hooks (`chain::MANGLE_*`). Clear, they pay one test of the word
/// at each hook.
pub const ACTIVE_MANGLE: u32 = 8192;
/// Non-zero words of class vectors (`CLASS_WORDS`) one generation may hold,
/// with the block summaries of the classes that are not dense: a class
/// stores only the words its summary marks. 8 MiB per generation. Class
/// ids of generation `g` are `g * Capacity::classes() + n`: a class id is
/// the index of its header in `CLASS_HEADERS`.
pub const MAX_CLASS_WORDS: u32 = 1 << 20;
/// Words per entry of the `CLASS_WORDS` array (fewer, larger writes).
pub const CLASS_WORD_CHUNK: usize = 32;

/// Chains the classifier knows, as indexes into the per-chain tables.
pub mod chain {
    pub const INPUT: u32 = 0;
    pub const FORWARD: u32 = 1;
    pub const OUTPUT: u32 = 2;
    /// `-t nat PREROUTING`: DNAT/REDIRECT of a new connection's first packet.
    pub const NAT_PREROUTING: u32 = 3;
    /// `-t nat POSTROUTING`: SNAT/MASQUERADE of a new connection.
    pub const NAT_POSTROUTING: u32 = 4;
    /// `-t nat OUTPUT`: DNAT of local sockets (cgroup sock_addr programs).
    pub const NAT_OUTPUT: u32 = 5;
    /// The IPv6 filter table's chains (`ip6tables`).
    pub const INPUT6: u32 = 6;
    pub const FORWARD6: u32 = 7;
    pub const OUTPUT6: u32 = 8;
    /// `-t raw PREROUTING`: every arriving packet, before conntrack and
    /// nat PREROUTING (`-j CT --notrack`, early drops).
    pub const RAW_PREROUTING: u32 = 9;
    /// `-t raw OUTPUT`: the host's packets, before conntrack.
    pub const RAW_OUTPUT: u32 = 10;
    /// The mangle table's chains (IPv4), each run where the kernel's
    /// mangle hook is (priority -150: after conntrack, before nat and
    /// filter): PREROUTING for every arriving packet before nat
    /// PREROUTING, INPUT/FORWARD before filter's, OUTPUT (TC egress)
    /// before filter OUTPUT, POSTROUTING before nat POSTROUTING.
    pub const MANGLE_PREROUTING: u32 = 11;
    pub const MANGLE_INPUT: u32 = 12;
    pub const MANGLE_FORWARD: u32 = 13;
    pub const MANGLE_OUTPUT: u32 = 14;
    pub const MANGLE_POSTROUTING: u32 = 15;
    /// The IPv6 nat table's chains (`ip6tables -t nat`), run where the
    /// IPv4 ones are: PREROUTING at XDP ingress for a new connection's
    /// first packet, POSTROUTING after FORWARD (XDP) or filter OUTPUT (TC
    /// egress). OUTPUT (DNAT of local sockets) has no rules yet: the
    /// compiler refuses them (`Nat6OutputNotRunYet`).
    pub const NAT6_PREROUTING: u32 = 16;
    pub const NAT6_POSTROUTING: u32 = 17;
    pub const NAT6_OUTPUT: u32 = 18;
    /// The IPv6 mangle table's chains (`ip6tables -t mangle`), run at the
    /// same hooks of the IPv6 programs as the IPv4 ones in theirs, in the
    /// same order (`MANGLE6_x - MANGLE6_PREROUTING == MANGLE_x -
    /// MANGLE_PREROUTING`).
    pub const MANGLE6_PREROUTING: u32 = 21;
    pub const MANGLE6_INPUT: u32 = 22;
    pub const MANGLE6_FORWARD: u32 = 23;
    pub const MANGLE6_OUTPUT: u32 = 24;
    pub const MANGLE6_POSTROUTING: u32 = 25;
    /// The IPv6 family's mangle chain of IPv4 mangle chain `c`.
    pub const fn mangle6(c: u32) -> u32 {
        c - MANGLE_PREROUTING + MANGLE6_PREROUTING
    }
    /// True for a chain of the IPv6 ruleset (`ip6tables`): its packets'
    /// connections are in the IPv6 tracker.
    pub const fn ipv6(c: u32) -> bool {
        (c >= INPUT6 && c <= OUTPUT6) || (c >= NAT6_PREROUTING && c <= MANGLE6_POSTROUTING)
    }
    /// The IPv6 raw table's chains (`ip6tables -t raw`), run where the
    /// IPv4 ones run: PREROUTING at XDP ingress before conntrack, OUTPUT
    /// at TC egress before conntrack.
    pub const RAW6_PREROUTING: u32 = 19;
    pub const RAW6_OUTPUT: u32 = 20;
    /// The filter table's chains are `0..FILTER_COUNT`.
    pub const FILTER_COUNT: usize = 3;
    /// The IPv4 filter and nat chains are `0..IPV4_COUNT`, the IPv6
    /// filter ones after them, then the raw table's and the mangle
    /// table's, then IPv6's raw (each numbered after the last so that the
    /// others keep their numbers).
    pub const IPV4_COUNT: usize = 6;
    pub const COUNT: usize = 26;
}

/// The dimensions a rule can constrain. Each one maps a packet value to a
/// class id; the class vector holds one bit per rule satisfied by that value.
///
/// Every field is declared once here, with its [`field::Kind`]: the
/// compiler, the loader, the kernel's lookup and the reference classifier
/// all iterate over [`field::KINDS`]. Adding a field of a kind that exists
/// is one entry here (plus the key the parser writes into the packet).
pub mod field {
    pub const SRC: usize = 0;
    pub const DST: usize = 1;
    pub const PROTO: usize = 2;
    /// TCP/UDP source port, ICMP type, or one of the `L4_*` keys below.
    pub const L4A: usize = 3;
    /// TCP/UDP destination port, ICMP code, or one of the `L4_*` keys below.
    pub const L4B: usize = 4;
    pub const IN_IFACE: usize = 5;
    pub const OUT_IFACE: usize = 6;
    pub const MAC_SOURCE: usize = 7;
    /// Connection tracking state of the packet (`ct_state::*`).
    pub const CT_STATE: usize = 8;
    /// The TCP flags byte (CWR..FIN), or [`super::TCP_FLAGS_NONE`] when the
    /// packet has no whole TCP header (`-p tcp --syn`, `--tcp-flags`).
    pub const TCP_FLAGS: usize = 9;
    /// The IPv4 total length (`-m length`).
    pub const LENGTH: usize = 10;
    /// The IPv4 TTL (`-m ttl`).
    pub const TTL: usize = 11;
    /// The IPv4 TOS byte (`-m tos`, `-m dscp`: DSCP is its top six bits).
    pub const TOS: usize = 12;
    /// The link-layer packet type (`pkttype::*`, `-m pkttype`).
    pub const PKTTYPE: usize = 13;
    /// The type of the source / destination address as the kernel's local
    /// routing table says (`addr_type::*`, `-m addrtype`).
    pub const SRC_TYPE: usize = 14;
    pub const DST_TYPE: usize = 15;
    /// Words 1 to 3 of an IPv6 source / destination address (network
    /// order, most significant first); word 0 is `SRC` / `DST`. An IPv6
    /// prefix is the conjunction of a 32-bit prefix per word it reaches
    /// (docs/ARCHITECTURE.md, "IPv6"); IPv4 chains never use these.
    pub const SRC6_1: usize = 16;
    pub const DST6_1: usize = 17;
    pub const SRC6_2: usize = 18;
    pub const DST6_2: usize = 19;
    pub const SRC6_3: usize = 20;
    pub const DST6_3: usize = 21;
    pub const COUNT: usize = 22;

    /// The address (`Kind::Prefix`) fields, in `addr_slot` order: sources
    /// at even slots, destinations at odd ones, by word.
    pub const ADDR_FIELDS: [usize; 8] = [SRC, DST, SRC6_1, DST6_1, SRC6_2, DST6_2, SRC6_3, DST6_3];

    /// Where address field `f` sits in [`ADDR_FIELDS`] (and in
    /// `ChainConfig::addr_lengths`).
    #[inline(always)]
    pub const fn addr_slot(f: usize) -> usize {
        if f < 2 { f } else { f - 14 }
    }

    /// Which word of the address (0 to 3) address field `f` holds.
    #[inline(always)]
    pub const fn addr_word(f: usize) -> usize {
        addr_slot(f) / 2
    }

    /// True for a source address field (any word).
    #[inline(always)]
    pub const fn is_source(f: usize) -> bool {
        addr_slot(f).is_multiple_of(2)
    }

    /// The address field of word `word` (0 to 3) of the source or the
    /// destination.
    pub const fn addr_field(source: bool, word: usize) -> usize {
        ADDR_FIELDS[2 * word + if source { 0 } else { 1 }]
    }

    const _: () = {
        let mut i = 0;
        while i < ADDR_FIELDS.len() {
            assert!(addr_slot(ADDR_FIELDS[i]) == i);
            assert!(matches!(KINDS[ADDR_FIELDS[i]], Kind::Prefix));
            i += 1;
        }
    };

    /// How a field's value is looked up.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Kind {
        /// An IPv4 address: longest-prefix match (address hash or LPM trie).
        Prefix,
        /// A small integer key `0..n`: an array of class ids, in chunks of
        /// [`super::KEY_CHUNK`].
        Keys(u32),
        /// An interface, by ifindex: a hash map with a per-chain default.
        Iface,
        /// A MAC address: a hash map with a per-chain default.
        Mac,
    }

    /// Every field's kind, in field order.
    pub const KINDS: [Kind; COUNT] = [
        Kind::Prefix,
        Kind::Prefix,
        Kind::Keys(256),
        Kind::Keys(super::L4_KEYS as u32),
        Kind::Keys(super::L4_KEYS as u32),
        Kind::Iface,
        Kind::Iface,
        Kind::Mac,
        Kind::Keys(super::ct_state::KEYS as u32),
        Kind::Keys(super::TCP_FLAGS_KEYS),
        Kind::Keys(65536),
        Kind::Keys(256),
        Kind::Keys(256),
        Kind::Keys(super::pkttype::KEYS),
        Kind::Keys(super::addr_type::KEYS),
        Kind::Keys(super::addr_type::KEYS),
        Kind::Prefix,
        Kind::Prefix,
        Kind::Prefix,
        Kind::Prefix,
        Kind::Prefix,
        Kind::Prefix,
    ];

    /// Names in field order, as messages show them.
    pub const NAMES: [&str; COUNT] = [
        "source address",
        "destination address",
        "protocol",
        "source port / icmp type / fragment",
        "destination port / icmp code",
        "input interface",
        "output interface",
        "source mac",
        "connection state",
        "tcp flags",
        "length",
        "ttl",
        "tos",
        "packet type",
        "source address type",
        "destination address type",
        "source address (ipv6 word 1)",
        "destination address (ipv6 word 1)",
        "source address (ipv6 word 2)",
        "destination address (ipv6 word 2)",
        "source address (ipv6 word 3)",
        "destination address (ipv6 word 3)",
    ];

    /// The fields the kernel tests together, one `fields_used` check per
    /// group: a chain that uses none of a group skips it with one test.
    /// Every field is in exactly one group (checked below).
    pub const GROUPS: [u32; 6] = [
        1 << SRC | 1 << DST,
        1 << PROTO | 1 << L4A | 1 << L4B | 1 << TCP_FLAGS,
        1 << IN_IFACE | 1 << OUT_IFACE | 1 << MAC_SOURCE,
        1 << CT_STATE,
        1 << LENGTH | 1 << TTL | 1 << TOS | 1 << PKTTYPE | 1 << SRC_TYPE | 1 << DST_TYPE,
        // Apart from SRC/DST: IPv4 chains skip them with one test.
        1 << SRC6_1 | 1 << DST6_1 | 1 << SRC6_2 | 1 << DST6_2 | 1 << SRC6_3 | 1 << DST6_3,
    ];

    const _: () = {
        let mut all = 0u32;
        let mut g = 0;
        while g < GROUPS.len() {
            assert!(all & GROUPS[g] == 0, "a field is in two groups");
            all |= GROUPS[g];
            g += 1;
        }
        assert!(all == (1u32 << COUNT) - 1, "a field is in no group");
    };

    /// Chunks of [`super::KEY_CHUNK`] class ids field `f` takes in a
    /// chain's region of `KEY_CLASSES` (0 for fields of other kinds).
    pub const fn key_chunks(f: usize) -> u32 {
        match KINDS[f] {
            Kind::Keys(n) => n.div_ceil(super::KEY_CHUNK as u32),
            _ => 0,
        }
    }

    /// Where field `f`'s whole table would start among a chain's: its
    /// home in a region that holds every chain's whole tables.
    pub const fn key_chunk_offset(f: usize) -> u32 {
        let (mut at, mut i) = (0, 0);
        while i < f {
            at += key_chunks(i);
            i += 1;
        }
        at
    }

    /// The chunks of every key field's whole table: the most one chain
    /// stores in `KEY_CLASSES`.
    pub const KEY_CHUNKS_PER_CHAIN: u32 = key_chunk_offset(COUNT);
}

/// Class ids per entry of the `KEY_CLASSES` arrays.
pub const KEY_CHUNK: usize = 64;

/// `KEY_CLASSES` chunks one generation holds at [`Capacity::FULL`]: every
/// key field of every chain whole, which no chain's trimmed tables exceed
/// (see [`key_chunk_at`]).
/// Rounded up to whole 64ths, so that every capacity's share is exact.
pub const MAX_KEY_CHUNKS: u32 =
    (chain::COUNT as u32 * field::KEY_CHUNKS_PER_CHAIN).next_multiple_of(CAPACITY_SHRINK_MAX);

/// `ChainConfig::key_span` of a key field whose stored chunks are its
/// table's chunks `first .. first + count`, then its last chunk.
pub const fn key_span(first: u32, count: u32) -> u32 {
    first | count << 16
}

/// Index in `KEY_CLASSES` of the chunk holding key `key` of key field `f`,
/// whose stored chunks start at `base` and span `span` (`ChainConfig::
/// key_base`, `key_span`), or `None` when the key's chunk is not stored:
/// its class is the field's `ChainConfig::default_class`. A chain keeps,
/// of each key field it uses, only the chunks between the first and the
/// last whose classes are not all that default, and the field's last chunk
/// (where the L4 keys put `L4_NONE` and `L4_FRAGMENT`), after them: a
/// `--dport 8080` needs two chunks, not 1,025.
#[inline(always)]
pub const fn key_chunk_at(base: u32, span: u32, f: usize, key: u32) -> Option<u32> {
    let c = key / KEY_CHUNK as u32;
    let (first, count) = (span & 0xffff, span >> 16);
    if c == field::key_chunks(f) - 1 {
        Some(base + count)
    } else if c.wrapping_sub(first) < count {
        Some(base + c - first)
    } else {
        None
    }
}

// A span's first chunk and count fit its halves.
const _: () = assert!(field::KEY_CHUNKS_PER_CHAIN < 1 << 16);

/// Keys of `field::TCP_FLAGS`: the flags byte, and this one for packets
/// without a whole TCP header (other protocols, fragments, short headers),
/// which no `--tcp-flags` test matches, negated or not.
pub const TCP_FLAGS_NONE: u32 = 256;
/// Key of `field::TCP_FLAGS` for a TCP packet (offset 0) whose header ends
/// before its flags byte: no flag test matches it, and with
/// [`ACTIVE_TCP_FLAGS`] the data plane drops it before any chain, as RFC
/// 1858 advises (its flags would be judged only after reassembly, past the
/// rules that test them).
pub const TCP_FLAGS_CUT: u32 = 257;
pub const TCP_FLAGS_KEYS: u32 = 258;

/// Link-layer packet types, as `skb->pkt_type` numbers them (`-m pkttype`).
pub mod pkttype {
    /// Addressed to this host (`unicast`).
    pub const HOST: u32 = 0;
    pub const BROADCAST: u32 = 1;
    pub const MULTICAST: u32 = 2;
    /// Addressed to another host's MAC.
    pub const OTHERHOST: u32 = 3;
    pub const KEYS: u32 = 4;
}

/// Address types, as the kernel's route types (`RTN_*`) number them
/// (`-m addrtype`). A set of types is a mask with bit `1 << type`, as
/// xt_addrtype has it.
pub mod addr_type {
    pub const UNSPEC: u32 = 0;
    pub const UNICAST: u32 = 1;
    pub const LOCAL: u32 = 2;
    pub const BROADCAST: u32 = 3;
    pub const ANYCAST: u32 = 4;
    pub const MULTICAST: u32 = 5;
    pub const BLACKHOLE: u32 = 6;
    pub const UNREACHABLE: u32 = 7;
    pub const PROHIBIT: u32 = 8;
    pub const THROW: u32 = 9;
    pub const NAT: u32 = 10;
    pub const XRESOLVE: u32 = 11;
    /// The classifier's address type key: the type in the low bits, and
    /// whether it holds on the packet's input (`ON_IN`) and output
    /// (`ON_OUT`) interface, for `--limit-iface-in/out`: xt_addrtype then
    /// takes a local table route's type only when the route's interface
    /// is that one, else UNICAST. The fixed types and "no route" (UNICAST)
    /// hold on every interface.
    pub const TYPE_MASK: u32 = 15;
    pub const ON_IN: u32 = 16;
    pub const ON_OUT: u32 = 32;
    pub const KEYS: u32 = 64;
    /// The `ADDR_TYPES` trie's value: the route's type, and its interface's
    /// ifindex shifted by this.
    pub const ROUTE_IFINDEX_SHIFT: u32 = 8;
    /// Largest ifindex a route value holds; a route on an interface past it
    /// is stored without one, and `--limit-iface-in/out` then take its
    /// addresses as UNICAST (the kernel numbers interfaces from 1 up, so
    /// only a namespace that made millions of interfaces gets there).
    pub const MAX_ROUTE_IFINDEX: u32 = (1 << 24) - 1;

    /// The trie value of a local table route of type `kind` out of
    /// interface `ifindex`.
    pub const fn route_value(kind: u32, ifindex: u32) -> u32 {
        if ifindex > MAX_ROUTE_IFINDEX {
            kind & TYPE_MASK
        } else {
            (kind & TYPE_MASK) | ifindex << ROUTE_IFINDEX_SHIFT
        }
    }

    /// The key of an address whose longest local table route has trie
    /// value `value`, for a packet in by `in_ifindex` and out by
    /// `out_ifindex` (0: none).
    #[inline(always)]
    pub const fn route_key(value: u32, in_ifindex: u32, out_ifindex: u32) -> u32 {
        let dev = value >> ROUTE_IFINDEX_SHIFT;
        let mut key = value & TYPE_MASK;
        if dev != 0 && dev == in_ifindex {
            key |= ON_IN;
        }
        if dev != 0 && dev == out_ifindex {
            key |= ON_OUT;
        }
        key
    }

    /// The type `-m addrtype` sees in key `key` with `--limit-iface-in`
    /// (`limit_in`) or `--limit-iface-out` (`limit_out`).
    #[inline(always)]
    pub const fn limited(key: u32, limit_in: bool, limit_out: bool) -> u32 {
        if (limit_in && key & ON_IN == 0) || (limit_out && key & ON_OUT == 0) {
            UNICAST
        } else {
            key & TYPE_MASK
        }
    }

    /// The type xt_addrtype gives `addr` (host byte order) before it looks
    /// at the local routing table: 0.0.0.0/8 and 255.255.255.255 are
    /// BROADCAST, 224.0.0.0/4 MULTICAST. `None`: the local table's longest
    /// matching route says (UNICAST when none matches).
    #[inline(always)]
    pub const fn fixed(addr: u32) -> Option<u32> {
        if addr >> 24 == 0 || addr == u32::MAX {
            Some(BROADCAST)
        } else if addr >> 28 == 0xe {
            Some(MULTICAST)
        } else {
            None
        }
    }
    /// The types ip6tables refuses (xt_addrtype's checkentry: BLACKHOLE,
    /// PROHIBIT and the types past it, BROADCAST), as a mask.
    pub const REFUSED6: u16 = 1 << BROADCAST | 1 << BLACKHOLE | !((1 << PROHIBIT) - 1) & 0xfff;

    /// An ip6tables rule's address type key. xt_addrtype's IPv6 match
    /// (`match_type6`) does not give an address one type: each type of the
    /// mask is a test, all of which must hold: MULTICAST, UNICAST and
    /// UNSPEC test `ipv6_addr_type` (the address's class); LOCAL, ANYCAST
    /// and UNREACHABLE, of which one must hold, test the route lookup. The
    /// key holds both: the class (`CLASS6_*`) and what the lookup found
    /// (`ROUTE6_*`) in the type bits, and `ON_IN` / `ON_OUT` for a LOCAL
    /// address under `--limit-iface-in/out`: its local route's interface
    /// is that one. (The kernel also takes an address of another interface
    /// that is not link-local or loopback as LOCAL there when a route out
    /// of the limiting interface covers it, a default route say: its
    /// lookup is bound to that interface; without such a route it is
    /// UNREACHABLE, which netbeast takes as not LOCAL either.)
    pub const CLASS6_UNICAST: u32 = 0;
    pub const CLASS6_MULTICAST: u32 = 1 << 2;
    /// `::`, IPV6_ADDR_ANY.
    pub const CLASS6_ANY: u32 = 2 << 2;
    /// `::ffff:0:0/96` (IPv4-mapped): neither unicast nor multicast.
    pub const CLASS6_MAPPED: u32 = 3 << 2;
    pub const ROUTE6_NONE: u32 = 0;
    pub const ROUTE6_LOCAL: u32 = 1;
    pub const ROUTE6_ANYCAST: u32 = 2;
    /// No route, or a reject route (unreachable, blackhole, prohibit).
    pub const ROUTE6_UNREACHABLE: u32 = 3;

    /// `ipv6_addr_type`'s class of an IPv6 address (host order words,
    /// most significant first), as `CLASS6_*`: ff00::/8 is multicast, `::`
    /// any, `::ffff:0:0/96` mapped, everything else unicast.
    #[inline(always)]
    pub const fn class6(w: [u32; 4]) -> u32 {
        if w[0] >> 24 == 0xff {
            CLASS6_MULTICAST
        } else if w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == 0 {
            CLASS6_ANY
        } else if w[0] == 0 && w[1] == 0 && w[2] == 0xffff {
            CLASS6_MAPPED
        } else {
            CLASS6_UNICAST
        }
    }

    /// The key of an IPv6 address (host order words) whose longest
    /// `ADDR_TYPES6` route has trie value `value` (`None`: no route), for a
    /// packet in by `in_ifindex` and out by `out_ifindex` (0: none).
    #[inline(always)]
    pub const fn key6(w: [u32; 4], value: Option<u32>, in_ifindex: u32, out_ifindex: u32) -> u32 {
        let class = class6(w);
        let Some(value) = value else {
            return class | ROUTE6_UNREACHABLE;
        };
        let route = match value & TYPE_MASK {
            LOCAL => ROUTE6_LOCAL,
            ANYCAST => ROUTE6_ANYCAST,
            UNREACHABLE | BLACKHOLE | PROHIBIT => ROUTE6_UNREACHABLE,
            _ => ROUTE6_NONE,
        };
        if route != ROUTE6_LOCAL {
            return class | route;
        }
        class | route | route_key(value, in_ifindex, out_ifindex) & (ON_IN | ON_OUT)
    }

    /// Whether an ip6tables `-m addrtype` type mask `mask` holds for key
    /// `key` (`key6`), with `--limit-iface-in` (`limit_in`) or
    /// `--limit-iface-out` (`limit_out`): xt_addrtype's `match_type6`.
    #[inline(always)]
    pub const fn matches6(mask: u16, key: u32, limit_in: bool, limit_out: bool) -> bool {
        let mask = mask as u32;
        let class = key & (3 << 2);
        let route = key & 3;
        if mask & 1 << MULTICAST != 0 && class != CLASS6_MULTICAST {
            return false;
        }
        if mask & 1 << UNICAST != 0 && class != CLASS6_UNICAST {
            return false;
        }
        if mask & 1 << UNSPEC != 0 && class != CLASS6_ANY {
            return false;
        }
        if mask & (1 << LOCAL | 1 << ANYCAST | 1 << UNREACHABLE) == 0 {
            return true;
        }
        let found = match route {
            ROUTE6_LOCAL => {
                if (limit_in && key & ON_IN == 0) || (limit_out && key & ON_OUT == 0) {
                    0
                } else {
                    1 << LOCAL
                }
            }
            ROUTE6_ANYCAST => 1 << ANYCAST,
            ROUTE6_UNREACHABLE => 1 << UNREACHABLE,
            _ => 0,
        };
        mask & found != 0
    }

    /// Names as iptables takes and prints them, in type order.
    pub const NAMES: [&str; 12] = [
        "UNSPEC",
        "UNICAST",
        "LOCAL",
        "BROADCAST",
        "ANYCAST",
        "MULTICAST",
        "BLACKHOLE",
        "UNREACHABLE",
        "PROHIBIT",
        "THROW",
        "NAT",
        "XRESOLVE",
    ];
}

/// Key of the L4 fields when the packet carries no port or ICMP type (other
/// protocols, or a first fragment whose L4 header is cut short).
pub const L4_NONE: u32 = 65536;
/// Key of the L4 fields for non-first fragments: port and ICMP matches never
/// match them (as in iptables), and `-f` matches only them.
pub const L4_FRAGMENT: u32 = 65537;
/// Number of keys of an L4 field.
pub const L4_KEYS: usize = 65538;

/// The length of the header whose first four bytes are the 16-bit source
/// and destination ports rules match (`--sport`/`--dport`, `-m
/// multiport`) for the protocols that have them: TCP, UDP, DCCP, SCTP and
/// UDP-Lite, as the kernel's matches read it (a whole TCP header, DCCP's
/// and SCTP's common headers). The classifier's L4 keys are their ports.
#[inline(always)]
pub const fn port_header_len(protocol: u8) -> Option<usize> {
    match protocol {
        6 => Some(20),
        17 | 136 => Some(8),
        33 | 132 => Some(12),
        _ => None,
    }
}

/// Connection tracking states as the classifier keys them (`-m state`,
/// `-m conntrack --ctstate`).
pub mod ct_state {
    pub const NEW: u32 = 0;
    pub const ESTABLISHED: u32 = 1;
    pub const RELATED: u32 = 2;
    pub const INVALID: u32 = 3;
    pub const UNTRACKED: u32 = 4;
    /// The classifier's connection key holds the state in its low bits
    /// and, for a packet with a connection (NEW, ESTABLISHED, RELATED),
    /// what `-m conntrack` reads of it in the bits above: its translation
    /// (`--ctstate SNAT,DNAT`), the packet's direction (`--ctdir`) and the
    /// connection's status (`--ctstatus`). One key field rather than one
    /// field each: they are a few bits, and xt_conntrack combines them.
    pub const STATE_MASK: u32 = 7;
    /// The connection's source is translated (SNAT, MASQUERADE).
    pub const SNAT: u32 = 1 << 3;
    /// Its destination is translated (DNAT, REDIRECT).
    pub const DNAT: u32 = 1 << 4;
    /// The packet goes the reply way (`--ctdir REPLY`).
    pub const REPLY: u32 = 1 << 5;
    /// `--ctstatus` bits, in the order of the kernel's `IPS_*` bits from
    /// IPS_SEEN_REPLY on (IPS_EXPECTED never: netbeast has no helpers), so
    /// `(key >> STATUS_SHIFT) << 1` is the kernel's status mask.
    pub const SEEN_REPLY: u32 = 1 << 6;
    pub const ASSURED: u32 = 1 << 7;
    pub const CONFIRMED: u32 = 1 << 8;
    pub const STATUS_SHIFT: u32 = 6;
    /// Keys of the field (a power of two: the class table is one array).
    pub const KEYS: usize = 512;
}

/// The kernel's target codes (`RuleAction::target`) and the one table of
/// what each does ([`target::flags`]), which the compiler, the reference
/// classifier and the kernel all read: a target is terminating or not,
/// needs the packet or not, has a side effect or not. A code missing from
/// the table has no flags at all, not even [`target::flag::KNOWN`]: the
/// loader refuses to write it, and a kernel that meets one anyway counts
/// `stats::UNKNOWN_TARGET` and goes on as for a rule without a target, so
/// an unknown target never drops a packet.
pub mod target {
    pub const ACCEPT: u32 = 0;
    pub const DROP: u32 = 1;
    pub const REJECT: u32 = 2;
    /// Non-terminating: count the rule and go on with the next match (a rule
    /// without `-j`, a jump, RETURN or goto once flattened).
    pub const NONE: u32 = 3;
    /// nat table targets; `RuleAction::arg` is the `NatTarget` index
    /// (relative to the generation, see `nat_target_index`).
    pub const DNAT: u32 = 4;
    pub const SNAT: u32 = 5;
    pub const MASQUERADE: u32 = 6;
    pub const REDIRECT: u32 = 7;
    /// `-j LOG`: non-terminating, with a side effect (an event in the log
    /// ring buffer); `RuleAction::arg` is its `LogTarget` number (see
    /// `log_target_index`).
    pub const LOG: u32 = 8;
    /// `-j SYNPROXY`: a SYN is answered with a SYN cookie, an ACK carrying
    /// a valid cookie goes on to the local listener, anything else is
    /// dropped (docs/ARCHITECTURE.md "The SYN-flood shield");
    /// `RuleAction::arg` holds its options (`synproxy::*`).
    pub const SYNPROXY: u32 = 9;
    /// `-j CT --notrack` / `-j NOTRACK` (raw table): non-terminating; the
    /// packet is left out of conntrack (state UNTRACKED, no entry made or
    /// updated, no nat).
    pub const NOTRACK: u32 = 10;
    /// `-j MARK` (any table): non-terminating; the packet's mark becomes
    /// `(mark & !mask) ^ value` (xt_MARK), where `RuleAction::arg` is its
    /// [`super::MarkTarget`] number (see [`super::mark_target_index`]).
    pub const MARK: u32 = 11;
    /// `-j CONNMARK` (any table): non-terminating; sets the packet's
    /// connection's mark, saves the packet's mark into it or restores the
    /// packet's mark from it (xt_CONNMARK), where `RuleAction::arg` is its
    /// [`super::ConnmarkTarget`] number (see
    /// [`super::connmark_target_index`]). Nothing for a packet without a
    /// connection (INVALID, UNTRACKED, raw chains).
    pub const CONNMARK: u32 = 12;
    /// `-j CT` without `--notrack` (raw table): non-terminating; the
    /// packet's connection is looked up and made in conntrack zone
    /// `RuleAction::arg` (0 for a bare `-j CT`, the default template).
    pub const CT: u32 = 13;
    /// `-j TTL` (iptables) / `-j HL` (ip6tables), mangle table only:
    /// non-terminating; the packet's TTL or hop limit is set, raised or
    /// lowered as xt_TTL / xt_HL do, where `RuleAction::arg` is
    /// [`super::ttl_arg`]'s word (see [`super::apply_ttl`]).
    pub const TTL: u32 = 14;
    /// `-j TOS` and `-j DSCP` (both families, mangle table only):
    /// non-terminating; the packet's TOS byte (IPv6: traffic class)
    /// becomes `(tos & !mask) ^ value` as xt_TOS makes it (DSCP is value
    /// `dscp << 2`, mask 0xfc, the ECN bits kept), where `RuleAction::arg`
    /// is [`super::tos_arg`]'s word (see [`super::apply_tos`]).
    pub const TOS: u32 = 15;
    /// `-j TCPMSS` (both families, any table, `-p tcp` rules only):
    /// non-terminating; the TCP segment's MSS option is lowered to the
    /// value or the path MTU's (xt_TCPMSS), where `RuleAction::arg` is
    /// [`super::tcpmss`]'s word. The search records the lowest asked for
    /// (`tcpmss::merge`); the pipeline writes the segment as it leaves.
    pub const TCPMSS: u32 = 16;
    /// Codes in the table.
    pub const COUNT: u32 = 17;

    pub mod flag {
        /// The code is in the table.
        pub const KNOWN: u32 = 1;
        /// The first rule with it ends the chain's search (a verdict, or
        /// the nat table's decision).
        pub const TERMINATING: u32 = 2;
        /// It acts on the packet's bytes (REJECT answers it, LOG copies
        /// it): not possible where there is no packet (nat OUTPUT runs on
        /// sockets).
        pub const NEEDS_PACKET: u32 = 4;
        /// It does something beyond the verdict that the kernel carries
        /// out after the search (LOG's event).
        pub const SIDE_EFFECT: u32 = 8;
        /// It leaves the packet out of connection tracking (raw table's
        /// NOTRACK): the search records it, the pipeline skips conntrack.
        pub const UNTRACK: u32 = 16;
        /// It changes the packet's mark (`-j MARK`): the search applies it
        /// at once, so the rules after it see the new mark.
        pub const SET_MARK: u32 = 32;
        /// It reads or writes the connection's mark (`-j CONNMARK`): the
        /// search applies it at once, to the conntrack entry (or, for a
        /// connection's first packet, to the entry it will confirm).
        pub const CONNECTION_MARK: u32 = 64;
        /// It gives the packet its conntrack template (xt_CT: `-j CT`,
        /// `--notrack`, `--zone`): the first such rule the packet meets
        /// decides, later ones change nothing (xt_CT leaves a packet that
        /// has one alone).
        pub const CT_TEMPLATE: u32 = 128;
        /// It rewrites a byte of the packet's IP header (`-j TTL`, `-j
        /// HL`): the search applies it to its copy at once (the next
        /// rule's target sees it), and the pipeline writes the packet once
        /// the chain is decided.
        pub const REWRITE: u32 = 256;
        /// It lowers the TCP segment's MSS option (`-j TCPMSS`): the
        /// search records what was asked for, the pipeline writes the
        /// segment as it leaves (nothing reads the option in between).
        pub const MSS: u32 = 512;
    }

    /// What target `code` is; 0 for a code not in the table.
    #[inline(always)]
    pub const fn flags(code: u32) -> u32 {
        use flag::*;
        match code {
            ACCEPT | DROP | DNAT | SNAT | MASQUERADE | REDIRECT => KNOWN | TERMINATING,
            REJECT | SYNPROXY => KNOWN | TERMINATING | NEEDS_PACKET,
            NONE => KNOWN,
            NOTRACK => KNOWN | UNTRACK | CT_TEMPLATE,
            CT => KNOWN | CT_TEMPLATE,
            MARK => KNOWN | SET_MARK,
            TTL | TOS => KNOWN | REWRITE | NEEDS_PACKET,
            TCPMSS => KNOWN | MSS | NEEDS_PACKET,
            // It needs the packet's connection, which the socket programs
            // (nat OUTPUT) do not have yet.
            CONNMARK => KNOWN | CONNECTION_MARK | NEEDS_PACKET,
            LOG => KNOWN | NEEDS_PACKET | SIDE_EFFECT,
            _ => 0,
        }
    }
}

/// What a `-j SYNPROXY` rule (or a port of `attach --syn-flood-guard`)
/// offers in its SYN-ACKs, packed into `RuleAction::arg`: the MSS in the
/// low 16 bits, the window scale in the 4 above, then flags for what was
/// given (xt_SYNPROXY's `XT_SYNPROXY_OPT_*`).
pub mod synproxy {
    pub const MSS_MASK: u32 = 0xffff;
    pub const WSCALE_SHIFT: u32 = 16;
    pub const WSCALE_MASK: u32 = 0xf;
    /// `--mss`: the SYN-ACK carries an MSS option.
    pub const MSS: u32 = 1 << 20;
    /// `--wscale`: window scaling offered to clients that offer it.
    pub const WSCALE: u32 = 1 << 21;
    /// `--sack-perm`: SACK offered to clients that offer it.
    pub const SACK_PERM: u32 = 1 << 22;
    /// `--timestamp`: timestamps echoed to clients that send them. Without
    /// them window scaling and SACK cannot ride in the cookie (their bits
    /// go in the timestamp), so they are not offered either.
    pub const TIMESTAMP: u32 = 1 << 23;
    /// `--ecn`: ECN accepted from clients that ask for it.
    pub const ECN: u32 = 1 << 24;
    /// The largest window shift (RFC 7323).
    pub const MAX_WSCALE: u32 = 14;
}

/// LOG rules one search of one chain records for the pipeline to emit
/// after it (the classifier has no packet to copy); hits beyond it are
/// counted in `stats::LOG_LOST`. A packet meets at most
/// `MAX_NONTERMINATING_RULES` count-only and LOG rules per chain anyway.
pub const MAX_LOGS_PER_SEARCH: usize = 16;

/// LOG rules one generation of a ruleset may hold (`LOG_TARGETS`).
pub const MAX_LOG_TARGETS: u32 = 4096;

/// Index of a generation's LOG rule `n` in `LOG_TARGETS`.
#[inline(always)]
pub const fn log_target_index(generation: u32, n: u32) -> u32 {
    generation * MAX_LOG_TARGETS + n
}

/// `-j MARK` rules (their distinct value/mask pairs) a generation may
/// hold: each is one entry of `MARK_TARGETS`.
pub const MAX_MARK_TARGETS: u32 = 4096;

/// Index of a generation's MARK entry `n` in `MARK_TARGETS`.
#[inline(always)]
pub const fn mark_target_index(generation: u32, n: u32) -> u32 {
    generation * MAX_MARK_TARGETS + n
}

/// What a `-j MARK` rule does to the packet's mark, as xt_MARK holds it
/// (revision 2): the new mark is `(mark & !mask) ^ value`. Every option
/// of libxt_MARK comes down to one pair (`--or-mark V` is `V/V`,
/// `--xor-mark V` is `V/0`, `--and-mark V` is `0/!V`, `--set-mark V/M` is
/// `V/(V|M)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MarkTarget {
    pub value: u32,
    pub mask: u32,
}

impl MarkTarget {
    /// The mark after this target.
    #[inline(always)]
    pub const fn apply(&self, mark: u32) -> u32 {
        (mark & !self.mask) ^ self.value
    }
}

/// What a `-j TTL` / `-j HL` rule does, as xt_TTL and xt_HL number the
/// modes (`IPT_TTL_SET`, `IPT_TTL_INC`, `IPT_TTL_DEC`; ip6t_HL's alike).
pub mod ttl_mode {
    pub const SET: u32 = 0;
    pub const INC: u32 = 1;
    pub const DEC: u32 = 2;
}

/// `RuleAction::arg` of a `-j TTL` / `-j HL` rule: its mode
/// ([`ttl_mode`]) above its value.
#[inline(always)]
pub const fn ttl_arg(mode: u32, value: u8) -> u32 {
    mode << 8 | value as u32
}

/// The TTL (or hop limit) after a `-j TTL` / `-j HL` rule of argument
/// `arg` ([`ttl_arg`]): set, or raised and lowered within 0..=255 as
/// xt_TTL clamps them.
#[inline(always)]
pub const fn apply_ttl(arg: u32, ttl: u8) -> u8 {
    let value = arg as u8;
    match arg >> 8 {
        ttl_mode::INC => ttl.saturating_add(value),
        ttl_mode::DEC => ttl.saturating_sub(value),
        _ => value,
    }
}

/// `RuleAction::arg` of a `-j TOS` / `-j DSCP` rule: its mask above its
/// value.
#[inline(always)]
pub const fn tos_arg(value: u8, mask: u8) -> u32 {
    (mask as u32) << 8 | value as u32
}

/// The TOS byte (traffic class) after a `-j TOS` / `-j DSCP` rule of
/// argument `arg` ([`tos_arg`]): the mask's bits cleared, then the value
/// XORed in (xt_TOS revision 1).
#[inline(always)]
pub const fn apply_tos(arg: u32, tos: u8) -> u8 {
    (tos & !((arg >> 8) as u8)) ^ arg as u8
}

/// `-j TCPMSS`: `RuleAction::arg` is [`tcpmss::SET`] with the MSS in the
/// low 16 bits (`--set-mss`), or [`tcpmss::CLAMP`] (`--clamp-mss-to-pmtu`);
/// the search state's word ([`tcpmss::merge`] of every rule met) has both
/// flags for what was met and the lowest `--set-mss` below them.
pub mod tcpmss {
    pub const VALUE: u32 = 0xffff;
    /// `--set-mss`: the low 16 bits hold the value.
    pub const SET: u32 = 1 << 16;
    /// `--clamp-mss-to-pmtu`: the path MTU less the IP and TCP headers.
    pub const CLAMP: u32 = 1 << 17;
    /// The kernel's `--set-mss` ceilings: 65535 less the headers (40 for
    /// IPv4, 60 for IPv6; libxt_TCPMSS: "out of range (0-65515)").
    pub const MAX_MSS_IPV4: u32 = 65_515;
    pub const MAX_MSS_IPV6: u32 = 65_495;
    /// The MSS a segment without the option gets it with, at most: the
    /// default an MSS-less SYN implies (RFC 1122: 536; IPv6: the minimum
    /// MTU 1280 less 60, 1220), as xt_TCPMSS adds it.
    pub const DEFAULT_MSS_IPV4: u32 = 536;
    pub const DEFAULT_MSS_IPV6: u32 = 1220;

    /// The search state's word after a rule of argument `arg`: every rule
    /// lowers the option to its value if that is lower (xt_TCPMSS never
    /// raises it), so the rules met come down to the lowest `--set-mss`
    /// and whether a clamp was met.
    #[inline(always)]
    pub const fn merge(state: u32, arg: u32) -> u32 {
        if arg & CLAMP != 0 {
            state | CLAMP
        } else if state & SET == 0 || arg & VALUE < state & VALUE {
            (state & CLAMP) | SET | (arg & VALUE)
        } else {
            state
        }
    }
}

/// Distinct `-j CONNMARK` operations a generation may hold: each is one
/// entry of `CONNMARK_TARGETS`.
pub const MAX_CONNMARK_TARGETS: u32 = 1024;

/// Index of a generation's CONNMARK entry `n` in `CONNMARK_TARGETS`.
#[inline(always)]
pub const fn connmark_target_index(generation: u32, n: u32) -> u32 {
    generation * MAX_CONNMARK_TARGETS + n
}

/// `ConnmarkTarget::mode`, as xt_CONNMARK numbers them.
pub mod connmark_mode {
    /// `--set-xmark` and its spellings: the connection's mark becomes
    /// `(ctmark & !ctmask) ^ value`, then shifted.
    pub const SET: u8 = 0;
    /// `--save-mark`: `(ctmark & !ctmask) ^ shifted(mark & nfmask)`.
    pub const SAVE: u8 = 1;
    /// `--restore-mark`: the packet's mark becomes `(mark & !nfmask) ^
    /// shifted(ctmark & ctmask)`.
    pub const RESTORE: u8 = 2;
}

/// What a `-j CONNMARK` rule does (xt_CONNMARK revision 2's
/// `xt_connmark_tginfo2`): one of [`connmark_mode`], its masks and the
/// shift of `--left-shift-mark` / `--right-shift-mark`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnmarkTarget {
    pub ctmark: u32,
    pub ctmask: u32,
    pub nfmask: u32,
    pub mode: u8,
    /// 1 for a right shift, 0 for a left one.
    pub shift_right: u8,
    /// 0 to 32 (libxt_CONNMARK's bounds).
    pub shift_bits: u8,
    pub _pad: u8,
}

impl ConnmarkTarget {
    /// `value` shifted as the rule says. A shift by 32 leaves the value as
    /// it is: the kernel's C shift of a 32-bit word by 32 does on x86,
    /// whose shift instructions take the count modulo 32.
    #[inline(always)]
    pub const fn shift(&self, value: u32) -> u32 {
        let bits = (self.shift_bits & 31) as u32;
        if self.shift_right != 0 {
            value >> bits
        } else {
            value << bits
        }
    }

    /// The connection's and the packet's marks after this target, from
    /// `(ctmark, mark)` before it (xt_CONNMARK's `connmark_tg_shift`).
    #[inline(always)]
    pub const fn apply(&self, ctmark: u32, mark: u32) -> (u32, u32) {
        match self.mode {
            connmark_mode::SET => (self.shift((ctmark & !self.ctmask) ^ self.ctmark), mark),
            connmark_mode::SAVE => (
                (ctmark & !self.ctmask) ^ self.shift(mark & self.nfmask),
                mark,
            ),
            connmark_mode::RESTORE => (
                ctmark,
                (mark & !self.nfmask) ^ self.shift(ctmark & self.ctmask),
            ),
            _ => (ctmark, mark),
        }
    }
}

/// The longest `--log-prefix` (iptables' limit: the kernel's field is 30
/// bytes with its terminating NUL).
pub const LOG_PREFIX_MAX: usize = 29;

/// What a `-j LOG` rule asks for, as the kernel copies it into each event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogTarget {
    /// `--log-prefix`, NUL-padded.
    pub prefix: [u8; LOG_PREFIX_MAX + 3],
    /// `--log-level` (0..=7).
    pub level: u8,
    /// `log_flags::*`, the kernel's `XT_LOG_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// The rule's number among the ruleset's LOG rules (filter, then nat;
    /// chains and rules in order): userspace finds the rule with it.
    pub rule: u32,
}

/// The `--log-*` switches, with the kernel's `XT_LOG_*` values.
pub mod log_flags {
    pub const TCP_SEQUENCE: u8 = 0x01;
    pub const TCP_OPTIONS: u8 = 0x02;
    pub const IP_OPTIONS: u8 = 0x04;
    pub const UID: u8 = 0x08;
    pub const MAC_DECODE: u8 = 0x20;
}

/// Bytes of a logged frame the kernel copies into its event: Ethernet
/// with two VLAN tags (22), then everything the kernel's LOG line can
/// read: an IPv4 header with options (60), an ICMP header (8), the
/// quoted IPv4 header (60) and a TCP header with options (60) — 210,
/// rounded up.
pub const LOG_CAPTURE_BYTES: usize = 256;
/// Bytes of the frame a short event carries: enough for the line of a
/// TCP (without `--log-tcp-options`) or UDP packet behind an Ethernet
/// header and a 20-byte IPv4 header (54 and 42 bytes). The kernel side
/// copies only what the line reads and reserves a short event when that
/// fits: most events then take 160 bytes of the ring, not 352.
pub const LOG_SHORT_CAPTURE_BYTES: usize = 64;
/// The size of a short event in the ring: a `LogEvent` cut after
/// `LOG_SHORT_CAPTURE_BYTES` of its frame. Userspace reads any event
/// (`netbeast::log::decode`) into a whole `LogEvent`.
pub const LOG_SHORT_EVENT_BYTES: usize =
    size_of::<LogEvent>() - LOG_CAPTURE_BYTES + LOG_SHORT_CAPTURE_BYTES;
/// LOG events one data plane's ring buffer holds (`LOG_EVENTS`, a power
/// of two of pages); a reader that falls further behind loses events,
/// counted in `stats::LOG_LOST`.
pub const LOG_RING_BYTES: u32 = 4 << 20;

/// One `-j LOG` hit, as the kernel hands it to userspace through the
/// `LOG_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LogEvent {
    /// `bpf_ktime_get_boot_ns` when the packet met the rule.
    pub boot_ns: u64,
    pub target: LogTarget,
    /// `chain::*`: the built-in chain the packet was in.
    pub chain: u32,
    /// Input and output interfaces as the chain sees them (0: none).
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    /// The frame's whole length, and where its IPv4 header starts.
    pub frame_len: u32,
    pub l3_offset: u32,
    /// Bytes of `frame` filled (at most `LOG_CAPTURE_BYTES`).
    pub captured: u32,
    /// The sending socket's owner (OUTPUT, `--log-uid`), when
    /// `LOG_EVENT_HAS_UID` is set in `event_flags`.
    pub uid: u32,
    pub gid: u32,
    pub event_flags: u32,
    pub _pad: u32,
    pub frame: [u8; LOG_CAPTURE_BYTES],
}

/// `LogEvent::event_flags`: the uid and gid are known.
pub const LOG_EVENT_HAS_UID: u32 = 1;

/// Slots one chain's search records for `netbeast trace` (the rules the
/// packet matched there, in order). A packet meets at most
/// `MAX_NONTERMINATING_RULES` count-only rules plus the guarded ones per
/// chain; past this many the event says how many there were
/// (`TraceEvent::hit_count`) and the trace says the rest were not recorded.
pub const MAX_TRACE_HITS: usize = 32;
/// Bytes of the `TRACE_EVENTS` ring buffer: some 4,000 chain reports. A
/// trace that falls behind loses events, counted in `stats::TRACE_LOST`.
pub const TRACE_RING_BYTES: u32 = 1 << 20;

/// The classifier's view of a packet as one chain saw it: the same layout
/// as the kernel's `classify::Keys` (checked there), copied word by word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceKeys {
    /// Network byte order.
    pub src: u32,
    pub dst: u32,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub _pad: u8,
    pub tcp_flags: u16,
    pub length: u16,
    /// Ports, ICMP type and code, `L4_NONE` or `L4_FRAGMENT`.
    pub l4a: u32,
    pub l4b: u32,
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    /// Source MAC in the low 6 bytes (packet order, little-endian word).
    pub mac: u64,
    pub eth_dst: u64,
    /// The connection key (`ct_state::*` and `-m conntrack` bits).
    pub ct_state: u32,
    pub _pad2: u32,
}

/// One chain's run on a traced packet, as the kernel hands it to
/// `netbeast trace` through the `TRACE_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceEvent {
    /// The packet: `cpu << TRACE_ID_CPU_SHIFT | n`, the CPU's n-th traced
    /// packet. Every chain of one packet reports the same id.
    pub id: u64,
    /// `bpf_ktime_get_boot_ns` when the chain was decided.
    pub boot_ns: u64,
    pub keys: TraceKeys,
    pub generation: u32,
    /// `chain::*`.
    pub chain: u32,
    /// 1 when a rule decided (`target`, `arg` are its); 0 when the policy
    /// applied (`target` is the policy).
    pub decided: u32,
    pub target: u32,
    pub arg: u32,
    /// Slots the search acted on (counted); the first `MAX_TRACE_HITS`
    /// are in `hits`, in the order the search took them.
    pub hit_count: u32,
    pub hits: [u32; MAX_TRACE_HITS],
    /// An IPv6 packet's address words past the first (which `keys` holds),
    /// as the parser keeps them (`Packet::addr6`: source word 1,
    /// destination word 1, source word 2, ...). Read for the IPv6 chains
    /// only; an IPv4 packet's are whatever its CPU's slot last held.
    pub addr6: [u32; 6],
}

/// Where the CPU number sits in `TraceEvent::id`.
pub const TRACE_ID_CPU_SHIFT: u32 = 48;

/// Distinct translations (`--to-destination`, `--to-source`,
/// `--to-ports`) one generation of a ruleset may hold. kube-proxy gives
/// every endpoint of every service one: 10,000 services of three endpoints
/// need 30,000. 52 bytes each with its IPv6 addresses, twice (the
/// generations): 6.5 MiB.
pub const MAX_NAT_TARGETS: u32 = 65_536;

/// Index of a generation's translation `n` in `NAT_TARGETS`.
#[inline(always)]
pub const fn nat_target_index(capacity: Capacity, generation: u32, n: u32) -> u32 {
    generation * capacity.nat_targets() + n
}

/// What a DNAT/SNAT/MASQUERADE/REDIRECT rule translates to. Addresses and
/// ports in host byte order, ranges inclusive. `flags` says which parts the
/// rule gave: a part not given is left as it is (DNAT `--to :8080` keeps the
/// address; SNAT without a port keeps the source port when it is free).
/// MASQUERADE takes the address of the egress interface, REDIRECT that of
/// the ingress interface (127.0.0.1 for local sockets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatTarget {
    pub addr_first: u32,
    pub addr_last: u32,
    pub port_first: u16,
    pub port_last: u16,
    /// `nat_flags::*`.
    pub flags: u32,
    /// With `nat_flags::OFFSET`: the base port of a shifted port map
    /// (`--to-destination A:1000-2000/3000`): the new port is `port_first`
    /// plus the original port's distance from this base, wrapped to 16
    /// bits, modulo the range's size (nf_nat's NF_NAT_RANGE_PROTO_OFFSET).
    pub port_base: u16,
    pub _pad: u16,
}

/// The IPv6 addresses of an ip6tables nat rule's translation
/// (`--to-destination [fd00::2-fd00::9]:80`), at the same index in
/// `NAT6_ADDRS` as its [`NatTarget`] in `NAT_TARGETS` (whose `addr_*`
/// fields hold IPv4 addresses only; `nat_flags::ADDR` says an address
/// range is given for either family). Words in packet order, each as it
/// loads from the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatAddrs6 {
    pub first: [u32; 4],
    pub last: [u32; 4],
}

pub mod nat_flags {
    /// `addr_first..=addr_last` given.
    pub const ADDR: u32 = 1;
    /// `port_first..=port_last` given.
    pub const PORTS: u32 = 2;
    /// `--random` / `--random-fully`: start the port search at a random port.
    pub const RANDOM: u32 = 4;
    /// `port_base` given: the port search starts at the original port's
    /// offset from it (a shifted port map), see [`super::nat_offset_port`].
    pub const OFFSET: u32 = 8;
}

/// Where nf_nat starts its search in a port range of `span` ports for a
/// shifted port map (NF_NAT_RANGE_PROTO_OFFSET): the original port's
/// distance from the base, in 16 bits as the kernel keeps it (a port below
/// the base wraps around), modulo the span. Attempt `i` of the search is
/// [`nat_offset_port`]`(.., i)`.
#[inline(always)]
pub fn nat_offset_port(first: u16, span: u32, port: u16, base: u16, attempt: u32) -> u16 {
    // The kernel counts the attempts on in that same 16-bit offset.
    let off = port.wrapping_sub(base).wrapping_add(attempt as u16) as u32;
    if span == 0 {
        return first;
    }
    (first as u32 + off % span) as u16
}

/// `--reject-with` replies.
pub mod reject {
    pub const ICMP_PORT_UNREACHABLE: u32 = 0;
    pub const ICMP_HOST_UNREACHABLE: u32 = 1;
    pub const ICMP_NET_UNREACHABLE: u32 = 2;
    pub const ICMP_ADMIN_PROHIBITED: u32 = 3;
    pub const TCP_RESET: u32 = 4;
    pub const ICMP_PROTO_UNREACHABLE: u32 = 5;
    pub const ICMP_NET_PROHIBITED: u32 = 6;
    pub const ICMP_HOST_PROHIBITED: u32 = 7;
    /// IPv6 (ip6tables): ICMPv6 destination unreachable, code
    /// `with - ICMP6_FIRST` of [`ICMP6_CODES`].
    pub const ICMP6_NO_ROUTE: u32 = 8;
    pub const ICMP6_ADM_PROHIBITED: u32 = 9;
    pub const ICMP6_ADDR_UNREACHABLE: u32 = 10;
    pub const ICMP6_PORT_UNREACHABLE: u32 = 11;
    pub const ICMP6_POLICY_FAIL: u32 = 12;
    pub const ICMP6_REJECT_ROUTE: u32 = 13;
    pub const ICMP6_FIRST: u32 = ICMP6_NO_ROUTE;
    /// The ICMPv6 codes of the answers above, in their order (RFC 4443).
    pub const ICMP6_CODES: [u8; 6] = [0, 1, 3, 4, 5, 6];
}

/// Indexes of the global per-CPU `STATS` array.
pub mod stats {
    /// Every packet seen by the XDP program. Not counted by the kernel:
    /// the sum of [`INGRESS_OUTCOMES`], one of which every packet bumps
    /// (userspace adds them up), so the hot path pays one counter, not two.
    pub const PACKETS: u32 = 0;
    /// Not IPv4 (IPv6, ARP, ...): passed untouched.
    pub const NOT_IPV4: u32 = 1;
    /// IPv4 that could not be parsed (truncated, IHL < 5, length lies):
    /// follows the INPUT policy.
    pub const MALFORMED: u32 = 2;
    /// Non-first IPv4 fragments.
    pub const FRAGMENTS: u32 = 3;
    pub const INPUT: u32 = 4;
    pub const FORWARD: u32 = 5;
    pub const ACCEPTED: u32 = 6;
    pub const DROPPED: u32 = 7;
    pub const REJECTED: u32 = 8;
    /// REJECT rules that dropped without a reply (the packet was a broadcast,
    /// an ICMP error, a fragment, or a TCP RST, as in iptables).
    pub const REJECT_SILENT: u32 = 9;
    /// Lookups that found no class: a ruleset table is inconsistent.
    pub const CLASS_MISSING: u32 = 10;
    /// Egress packets seen by the TC program.
    pub const OUTPUT: u32 = 11;
    /// Conntrack entries created (connections confirmed by an ACCEPT).
    pub const CT_CREATED: u32 = 12;
    /// Connections that saw their first reply (moved to the established table).
    pub const CT_ESTABLISHED: u32 = 13;
    /// Packets classified INVALID by conntrack.
    pub const CT_INVALID: u32 = 14;
    /// ICMP errors found RELATED to a tracked connection.
    pub const CT_RELATED: u32 = 15;
    /// Entries found past their timeout (then treated as gone).
    pub const CT_EXPIRED: u32 = 16;
    /// Inserts the kernel refused (table full and nothing to evict).
    pub const CT_INSERT_FAILED: u32 = 17;
    /// Accepted FORWARD packets sent on by the XDP fast path.
    pub const FAST_PATH: u32 = 18;
    /// New connections whose destination was translated (DNAT, REDIRECT).
    pub const NAT_DNAT: u32 = 19;
    /// New connections whose source was translated (SNAT, MASQUERADE).
    pub const NAT_SNAT: u32 = 20;
    /// New connections dropped because no source port of the range was
    /// free (or the nat index refused the binding), or MASQUERADE found no
    /// address on the interface they leave by.
    pub const NAT_EXHAUSTED: u32 = 21;
    /// Sockets translated by `-t nat OUTPUT` (connect, sendmsg).
    pub const NAT_SOCKET: u32 = 22;
    /// Sockets left untranslated because `SOCK_SEARCH_ENTRIES` sockets were
    /// being classified at that moment.
    pub const NAT_SOCKET_BUSY: u32 = 23;
    /// IPv4 packets left to the kernel before any chain: no route, or a
    /// TTL that expires here (the kernel drops them or sends an ICMP error).
    pub const KERNEL_ROUTED: u32 = 24;
    /// IPv4 packets the kernel discards before netfilter sees them (a
    /// destination MAC of another host, a bad header checksum, a martian
    /// source or destination): left to the kernel untouched, so no chain
    /// counts them and REJECT never answers them.
    pub const KERNEL_DROPPED: u32 = 25;
    /// TCP packets whose header ends before its flags (tiny first
    /// fragments, RFC 1858), dropped before any chain while a rule tests
    /// TCP flags (`ACTIVE_TCP_FLAGS`).
    pub const TCP_CUT: u32 = 26;
    /// `-m limit` packets treated as over the limit because other CPUs
    /// changed the rule's bucket every time this one tried to take its
    /// credit (`LIMIT_TRIES` in the kernel's classify.rs).
    pub const LIMIT_CONTENDED: u32 = 27;
    /// `-m connlimit` checks that could not take their list's lock (other
    /// CPUs held it for `CONNLIMIT_SPINS` tries): the rule does not match.
    pub const CONNLIMIT_CONTENDED: u32 = 28;
    /// `-m hashlimit` buckets made for a key not in its table (see
    /// `HASHLIMIT_EVICTED` for those that replaced a live one).
    pub const HASHLIMIT_NEW: u32 = 29;
    /// `-m hashlimit` packets treated as over the limit because other CPUs
    /// changed the bucket every time this one tried (`LIMIT_TRIES`).
    pub const HASHLIMIT_CONTENDED: u32 = 30;
    /// `-m recent` checks that could not take their entry's lock: the
    /// rule does not match.
    pub const RECENT_CONTENDED: u32 = 31;
    /// LOG events written to the ring buffer.
    pub const LOG_EVENTS: u32 = 32;
    /// LOG events lost: the ring buffer was full (its reader too slow or
    /// absent). The packet is never delayed or dropped for it.
    pub const LOG_LOST: u32 = 33;
    /// Rules met with a target code the kernel does not know (a data
    /// plane older than its ruleset): counted, and taken as a rule
    /// without a target, never as a drop.
    pub const UNKNOWN_TARGET: u32 = 34;
    /// `netbeast trace` reports lost: its ring buffer was full.
    pub const TRACE_LOST: u32 = 35;
    /// SYNs the SYN-flood shield answered with a SYN cookie (XDP_TX).
    pub const SYNPROXY_COOKIES: u32 = 36;
    /// ACKs with a valid SYN cookie let through to the local listener.
    pub const SYNPROXY_ACCEPTED: u32 = 37;
    /// Packets a SYNPROXY rule dropped: ACKs whose cookie is not valid
    /// (spoofed, or older than the kernel's two-minute cookie life),
    /// other segments of no connection, SYNs it could not answer.
    pub const SYNPROXY_DROPPED: u32 = 38;
    /// Valid cookie ACKs for a port with no listener, or one whose
    /// accept queue is full: passed on, and the kernel resets them.
    pub const SYNPROXY_NO_LISTENER: u32 = 39;
    /// IPv6 packets the IPv6 chains judged (also counted in `input` or
    /// `forward`).
    pub const IPV6: u32 = 40;
    /// IPv6 packets whose extension headers run past the packet or the
    /// payload length: dropped, as ip6tables drops a packet whose header
    /// chain it cannot walk.
    pub const IPV6_MALFORMED: u32 = 41;
    /// IPv6 packets with more than `MAX_IPV6_EXT_HEADERS` extension
    /// headers: dropped (never let through unclassified).
    pub const IPV6_EXT_TOO_DEEP: u32 = 42;
    /// `-m hashlimit` buckets replaced by a new key while still live: the
    /// stalest of the new key's set (of its own table when the table
    /// holds its `--hashlimit-htable-max`, of any table when the set is
    /// full). A bucket idle past its expiry is not counted (xt_hashlimit
    /// would have collected it).
    pub const HASHLIMIT_EVICTED: u32 = 43;
    /// `-m hashlimit` packets of a new key that got no bucket: its table
    /// held its `--hashlimit-htable-max` and the key's set none of the
    /// table's buckets to replace. The rule's hashlimit does not hold
    /// for them (`--hashlimit-upto` does not match, `--hashlimit-above`
    /// does).
    pub const HASHLIMIT_FULL: u32 = 44;
    /// Packets a match dropped on the spot, as the kernel's does when it
    /// cannot read the header it tests ([`crate::Held::Hotdrop`]: `-m
    /// sctp --chunk-types`, `-m dccp`): counted by no rule nor policy.
    pub const HOTDROPPED: u32 = 45;
    /// Frames from the wire whose own source MAC starts with the hand-off
    /// tag's prefix (`handoff::TAG_PREFIX`), passed up to the kernel with
    /// a restore-only tag (`handoff::RESTORE_MAGIC`) so that the TC
    /// ingress program cannot take their MAC for one of netbeast's tags.
    pub const TAG_LOOKALIKE: u32 = 46;
    /// REJECT's ICMP and ICMPv6 errors not sent: the namespace's rate
    /// limits (`net.ipv4.icmp_ratelimit` or `net.ipv6.icmp.ratelimit` per
    /// destination host, `icmp_msgs_per_sec` for all) held them back, as
    /// the kernel's `icmp_send` and `icmp6_send` do. The packet is dropped
    /// all the same.
    pub const REJECT_RATE_LIMITED: u32 = 47;
    pub const COUNT: u32 = 48;

    /// Where an XDP packet went: each packet bumps exactly one of these.
    pub const INGRESS_OUTCOMES: [u32; 9] = [
        NOT_IPV4,
        MALFORMED,
        INPUT,
        FORWARD,
        KERNEL_ROUTED,
        KERNEL_DROPPED,
        TCP_CUT,
        IPV6_MALFORMED,
        IPV6_EXT_TOO_DEEP,
    ];

    /// Names in index order, for `netbeast stats`.
    pub const NAMES: [&str; COUNT as usize] = [
        "packets",
        "not_ipv4",
        "malformed",
        "fragments",
        "input",
        "forward",
        "accepted",
        "dropped",
        "rejected",
        "reject_silent",
        "class_missing",
        "output",
        "ct_created",
        "ct_established",
        "ct_invalid",
        "ct_related",
        "ct_expired",
        "ct_insert_failed",
        "fast_path",
        "nat_dnat",
        "nat_snat",
        "nat_exhausted",
        "nat_socket",
        "nat_socket_busy",
        "kernel_routed",
        "kernel_dropped",
        "tcp_cut",
        "limit_contended",
        "connlimit_contended",
        "hashlimit_new",
        "hashlimit_contended",
        "recent_contended",
        "log_events",
        "log_lost",
        "unknown_target",
        "trace_lost",
        "synproxy_cookies",
        "synproxy_accepted",
        "synproxy_dropped",
        "synproxy_no_listener",
        "ipv6",
        "ipv6_malformed",
        "ipv6_ext_too_deep",
        "hashlimit_evicted",
        "hashlimit_full",
        "hotdropped",
        "tag_lookalike",
        "reject_rate_limited",
    ];
}

/// The forwarding route cache (netbeast-ebpf `route.rs`): a per-CPU,
/// direct-mapped copy of the FIB lookups that found a next hop. It is
/// consulted only while a route watcher holds a lease on it (the daemon's
/// `routes` service, which follows the kernel's route, neighbour, address,
/// rule and link changes over rtnetlink), and a cached answer is valid only
/// while the epoch it was filled under lasts: the watcher raises it on
/// every such change.
pub mod route_cache {
    /// Slots per CPU (a power of two: the slot is a masked hash of the
    /// lookup's inputs). Flows beyond it share slots, each miss costing one
    /// FIB lookup as without the cache.
    pub const SLOTS: u32 = 4096;
    /// Slots per CPU of the IPv6 cache (`ROUTE_CACHE6`, 64-byte slots).
    pub const SLOTS6: u32 = 2048;
    /// The words of [`crate::Config::route_epoch`] (indices into it). One writer
    /// each, each writing its word alone through the map's memory mapping
    /// (`BPF_F_MMAPABLE`): the route watcher raises
    /// `WATCH_EPOCH` on every rtnetlink change and renews `LEASE_UNTIL`;
    /// the commands raise `USER_EPOCH` when the interfaces' fast-path ways
    /// (`IFACE_PATHS`, kept with each cached route) change. A write of one
    /// word never undoes another writer's.
    pub const EPOCH_WORDS: u32 = 3;
    pub const WATCH_EPOCH: u32 = 0;
    pub const USER_EPOCH: u32 = 1;
    /// Until when (CLOCK_MONOTONIC, ns; what `bpf_ktime_get_coarse_ns`
    /// reads) the watcher vouches for the epoch: past it, or 0 (no watcher
    /// ever ran, or it stopped cleanly), the cache is neither read nor
    /// filled and every packet takes the FIB lookup.
    pub const LEASE_UNTIL: u32 = 2;
}

/// How the XDP program sends frames out of an interface netbeast is attached
/// to (`IFACE_PATHS`, ifindex → these bits, written by `attach`). A native
/// XDP program's `XDP_TX` and `XDP_REDIRECT` into a veth reach the other end
/// only when that end runs XDP itself (its NAPI must be on), which a
/// container's end does not: there, netbeast hands the finished frame to its
/// TC ingress program (`handoff`), which sends it with `bpf_redirect` through
/// the ordinary transmit path. 0 (or no entry): no fast path into it, and
/// REJECT answers with `XDP_TX`.
pub mod iface_path {
    /// The forwarding fast path may `XDP_REDIRECT` into it.
    pub const FORWARD_REDIRECT: u32 = 1 << 0;
    /// The forwarding fast path reaches it through the TC hand-off (from an
    /// ingress interface with [`TC_INGRESS`]).
    pub const FORWARD_VIA_TC: u32 = 1 << 1;
    /// REJECT replies to frames that came in here leave through the TC
    /// hand-off: `XDP_TX` would be lost (a native veth).
    pub const REJECT_VIA_TC: u32 = 1 << 2;
    /// netbeast's TC ingress program runs here: frames handed off at this
    /// interface's XDP hook are sent on.
    pub const TC_INGRESS: u32 = 1 << 3;
}

/// How the XDP program hands a frame to the TC ingress program: the
/// frame's source MAC is replaced by a *tag* naming a slot of a per-CPU
/// ring (`HANDOFF_RING`) that holds what to do (a magic word and its
/// argument) and the real source MAC, which the TC program puts back.
/// Not XDP metadata (`bpf_xdp_adjust_meta`), which some kernels refuse to
/// XDP programs (docs/ARCHITECTURE.md "The TC hand-off").
pub mod handoff {
    /// "nbTC": send the frame out of the ifindex in the slot's word.
    /// Cleared by the TC program once read, so a slot acts once.
    pub const MAGIC: u32 = 0x6e62_5443;
    /// "nbMK": the frame goes up to the kernel with the packet mark the
    /// chains gave it (`-j MARK` in mangle PREROUTING, INPUT, FORWARD), in
    /// the slot's word; the TC ingress program makes it the skb's mark, as
    /// iptables' MARK sets skb->mark for the stack after it. Cleared once
    /// read, as `MAGIC`.
    pub const MARK_MAGIC: u32 = 0x6e62_4d4b;
    /// "nbRS": only write the real source MAC back. The order of a frame
    /// from the wire whose own source MAC starts with `TAG_PREFIX` (a
    /// locally administered MAC may) and that the XDP program passes up
    /// without an order of its own: tagged by netbeast, it cannot be taken
    /// for a tag naming another frame's order. Cleared once read, as
    /// `MAGIC`.
    pub const RESTORE_MAGIC: u32 = 0x6e62_5253;
    /// A tag's first two bytes: a locally administered unicast MAC
    /// (`06:6e`, "n"); then the CPU, the slot, and the slot's 16-bit
    /// sequence (`tag`), which the TC program checks against the slot.
    pub const TAG_PREFIX: [u8; 2] = [0x06, 0x6e];
    /// Slots per CPU: far more than the frames a NAPI poll hands to the
    /// stack at once (64), so a slot is read before it is used again.
    pub const RING: u32 = 256;
    /// CPUs whose frames can be handed off: the CPU is a byte of the tag.
    /// On a CPU past it, the frame takes its way without the hand-off (a
    /// REJECT reply is sent with XDP_TX, a forwarded frame goes to the
    /// kernel, a mark stays in XDP).
    pub const MAX_CPUS: u32 = 256;
}

/// What the XDP program knows of an interface to tell the frames the kernel
/// discards before netfilter (`IFACE_GUARDS`, indexed by ifindex): the MAC
/// address in the low 48 bits (as a little-endian load of the frame's first
/// eight bytes masked to six has it), and flags above. 0: an interface
/// netbeast was not told about, whose frames are not checked.
pub mod iface_guard {
    pub const MAC_MASK: u64 = 0xffff_ffff_ffff;
    /// Set in every entry written (a MAC of all zeros is still a MAC).
    pub const KNOWN: u64 = 1 << 48;
    /// `net.ipv4.conf.<iface>.route_localnet` is on: 127.0.0.0/8 is not a
    /// martian on this interface.
    pub const ROUTE_LOCALNET: u64 = 1 << 49;

    /// The entry of an interface with this MAC address.
    pub const fn entry(mac: [u8; 6], route_localnet: bool) -> u64 {
        let mut word = 0u64;
        let mut i = 0;
        while i < 6 {
            word |= (mac[i] as u64) << (8 * i);
            i += 1;
        }
        word | KNOWN | if route_localnet { ROUTE_LOCALNET } else { 0 }
    }
}

/// Per-chain header of a generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainConfig {
    /// `target::ACCEPT` or `target::DROP`.
    pub policy: u32,
    pub rule_count: u32,
    /// Bit `f` set: field `f` constrains at least one rule and is looked up.
    pub fields_used: u32,
    /// The generation's epoch in `ADDR_HASH` (see [`addr_hash_key`]); the
    /// same in every chain of a generation.
    pub addr_epoch: u32,
    /// Class of a field whose key is absent from its table (an interface or
    /// MAC address no rule names; for addresses, the class of `0.0.0.0/0`).
    pub default_class: [u32; field::COUNT],
    /// How each address field's classes (`field::addr_slot` order: the
    /// source `[0]`, the destination `[1]`, then the IPv6 words) are
    /// found: the prefix lengths hashed in `ADDR_HASH`, longest first, 0
    /// after the last (an address in none of them has the default class);
    /// or [`ADDR_TRIE`] in the first byte: the LPM trie `ADDR_CLASSES`.
    pub addr_lengths: [[u8; MAX_ADDR_HASH_LENGTHS]; field::ADDR_FIELDS.len()],
    /// The chain number this chain's hashed prefixes are keyed by in
    /// `ADDR_HASH` (see [`addr_hash_base`]): its own at compile time. Kept
    /// with the configuration, so the key follows the chain's tables.
    pub addr_table: u32,
    /// Where the chain's slot 0 sits in its generation's share of `RULES`
    /// (see [`rule_index`]): the chains' slots follow one another.
    pub rule_base: u32,
    /// Where the counter of the chain's rule 0 sits in its generation's
    /// share of `COUNTERS` (see [`counter_index`]); a slot's
    /// `RuleAction::counter` is relative to it.
    pub counter_base: u32,
    /// The policy's counter, in the generation's share of `COUNTERS`.
    pub policy_counter: u32,
    /// The counter of the first rule of the user-defined chains (in the
    /// generation's share), the same in every chain: past every built-in
    /// chain's (see [`counter_layout`]).
    pub user_counter_base: u32,
    /// Of each key field the chain uses: where its stored chunks start in
    /// `KEY_CLASSES` (its generation's region included), and which they
    /// are ([`key_span`], [`key_chunk_at`]); a key outside them has the
    /// field's `default_class`.
    pub key_base: [u32; field::COUNT],
    pub key_span: [u32; field::COUNT],
    /// The *lead word* of an IPv6 chain's source (bits 0..3) and
    /// destination (bits 4..7): word `n - 1` of the address for a value
    /// `n` of 1 to 4, 0 for none ([`addr6_lead`]). A direction has one
    /// when no rule negates its address and every rule that constrains
    /// the address constrains that word (a word of its prefix): the
    /// search looks the lead word up first, and when its class is the
    /// field's default (no rule names that word's value) no rule that
    /// names an address can match, so the other words are not looked up.
    /// A blocklist of `/128`s costs a packet from elsewhere one probe, not
    /// four.
    pub addr6_lead: u32,
}

/// The lead word (0 to 3) of the source (`source`) or destination of a
/// chain whose `ChainConfig::addr6_lead` is `lead`, if it has one.
#[inline(always)]
pub const fn addr6_lead(lead: u32, source: bool) -> Option<usize> {
    let n = if source {
        lead & 0xf
    } else {
        (lead >> 4) & 0xf
    };
    if n >= 1 && n <= 4 {
        Some(n as usize - 1)
    } else {
        None
    }
}

/// Prefix lengths an address field may hash; a field naming more prefix
/// lengths uses the LPM trie.
pub const MAX_ADDR_HASH_LENGTHS: usize = 4;
/// `ChainConfig::addr_lengths[_][0]` of a field looked up in the trie.
pub const ADDR_TRIE: u8 = 0xff;

/// The address hash table (`ADDR_HASH`): for each generation a region of
/// `ADDR_HASH_BUCKETS` buckets of `ADDR_HASH_WAYS` slots. A prefix goes into
/// the less full of its two buckets ([`addr_hash_buckets`]); a lookup reads
/// both. Array lookups and compares: cheaper than an LPM trie's walk and a
/// hash map's hashing.
pub const ADDR_HASH_BUCKET_BITS: u32 = 15;
pub const ADDR_HASH_BUCKETS: u32 = 1 << ADDR_HASH_BUCKET_BITS;
pub const ADDR_HASH_WAYS: usize = 4;
/// Epochs run from 1 to this; then the generation's region is cleared.
pub const ADDR_EPOCH_MAX: u32 = (1 << (64 - ADDR_EPOCH_SHIFT)) - 1;

/// One slot of the address hash: a prefix's key (0: free) and class.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrSlot {
    pub key: u64,
    pub class: u32,
    /// Read in a bucket's first slot only: the epoch under which the
    /// bucket is *sealed*, i.e. no prefix whose first bucket this is sits
    /// in its second bucket, so a lookup that misses here is over even
    /// when the bucket is full (0 or another epoch: not sealed, the lookup
    /// goes on to the second bucket when this one is full). Without it a
    /// miss at 100,000 host prefixes (a bucket region three quarters full)
    /// read two buckets about half the time. Unused in the other slots.
    pub sealed: u32,
}

/// The key of prefix `addr/len` (`addr` in host byte order, masked) of
/// address field `f` (one of `field::ADDR_FIELDS`) of the chain whose
/// `ChainConfig::addr_table` is `table`, without the epoch: what the
/// buckets are chosen by. Bits: the address (32), the length (6), the
/// field's slot (3), the chain (5), then the epoch.
#[inline(always)]
pub const fn addr_hash_base(table: u32, f: u32, len: u32, addr: u32) -> u64 {
    addr as u64
        | (len as u64) << 32
        | (field::addr_slot(f as usize) as u64 & 7) << 38
        | (table as u64 & 31) << 41
}

/// The stored key: the base with the generation's epoch on top. Entries of
/// an older ruleset of the same generation carry another epoch and never
/// match, so a change writes only the buckets it fills.
#[inline(always)]
pub const fn addr_hash_key(base: u64, epoch: u32) -> u64 {
    base | (epoch as u64) << ADDR_EPOCH_SHIFT
}

/// Where the epoch sits in an `ADDR_HASH` key.
pub const ADDR_EPOCH_SHIFT: u32 = 46;

/// The two buckets (within a generation's region) of a key base.
#[inline(always)]
pub const fn addr_hash_buckets(base: u64) -> (u32, u32) {
    (addr_hash_bucket(base, 0), addr_hash_bucket(base, 1))
}

/// Bucket `which` (0 or 1) of a key base: multiplicative hashes.
#[inline(always)]
pub const fn addr_hash_bucket(base: u64, which: u32) -> u32 {
    let factor = if which == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        0xc2b2_ae3d_27d4_eb4f
    };
    (base.wrapping_mul(factor) >> (64 - ADDR_HASH_BUCKET_BITS)) as u32
}

/// What a rule does when it is the first match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleAction {
    pub target: u32,
    /// `reject::*` for REJECT; the `NatTarget` number (see
    /// `nat_target_index`) for DNAT/SNAT/MASQUERADE/REDIRECT.
    pub arg: u32,
    /// The counter this slot bumps, relative to its chain's counters: the
    /// kernel bumps `counter_index(generation, counter_base + counter)`
    /// (`ChainConfig::counter_base`). For a rule of the built-in chain that
    /// is the user's rule number (0-based; slots and user rules differ when
    /// one user rule compiles to several slots); for rule `n` of the
    /// user-defined chains inlined into it, `user_counter_base + n -
    /// counter_base` (never negative: see [`counter_layout`]).
    pub counter: u32,
    /// 1 + the number of the rule's first [`Guard`] (see [`guard_index`]),
    /// or 0 for a slot without guards.
    pub guard: u32,
}

/// A guard: a match of a rule that no class can hold, because it keeps
/// state or draws a random number (`-m statistic`, later `limit`,
/// `hashlimit`, `connlimit`, `recent`). The kernel evaluates a slot's
/// guards, in order, only once the slot's static match holds; a false
/// guard continues the search as if the slot had not matched (its rule is
/// not counted). Guards belong to the rule, not to the slot: every slot
/// of a rule — its disjoint terms, the copies of a user-defined chain
/// inlined at several jumps — shares them and their state, as iptables
/// has one match instance per rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// `guard_kind::*`.
    pub kind: u32,
    /// 1 + the number of the rule's next guard (all must hold), 0 after
    /// the last.
    pub next: u32,
    /// Bit 0: the match is negated (`!`). Bit 1 ([`GUARD_HOTDROP_ONLY`]):
    /// the record only tests whether its match drops the packet on the
    /// spot.
    pub negated: u32,
    pub _pad: u32,
    /// The match's parameters: see `guard_kind`.
    pub a: u64,
    pub b: u64,
    /// More parameters for the kinds that need them (`HASHLIMIT`,
    /// `RECENT`); for the kinds that keep state per rule (`STATISTIC_NTH`,
    /// `LIMIT`, `CONNLIMIT`) the *state slot*: where the state lives
    /// (`GUARD_STATE` index, `ConnlimitKey::guard`), below
    /// `size::GUARD_STATE`. The loader gives a rule that a ruleset change
    /// does not touch the slot it had, so it keeps its state (see
    /// [`STATE_SLOTS`]).
    pub c: u64,
}

/// `Guard::negated` bit of a copy of a guard that can drop the packet on
/// the spot ([`Guard::can_hotdrop`]) which tests only that: it is a
/// hotdrop when the match would be one, and fails otherwise, never holds.
/// iptables tests a rule's matches in order, so xt_sctp and xt_dccp drop
/// a packet they cannot read even when a later match of the rule would
/// fail; the classifier tests a rule's static matches before its guards.
/// The compiler puts such a copy in slots of the rule's matches up to that
/// one, ahead of the rule's own slots (`compile::guards::hotdrop_prefix`).
pub const GUARD_HOTDROP_ONLY: u32 = 2;

/// What a match decides for a packet: it holds, it fails, or — where the
/// kernel's match cannot read the header it tests (xt_sctp, xt_dccp) — it
/// drops the packet on the spot ("hotdrop"): the rule is not counted, the
/// search of its chain ends, no policy is counted, the packet is dropped.
/// The kernel's guard functions return it as a `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Held {
    Fails = 0,
    Holds = 1,
    Hotdrop = 2,
}

impl Held {
    #[inline(always)]
    pub fn of(holds: bool) -> Held {
        if holds { Held::Holds } else { Held::Fails }
    }

    /// The `u32` a BPF function returned.
    #[inline(always)]
    pub fn from_u32(v: u32) -> Held {
        match v {
            0 => Held::Fails,
            1 => Held::Holds,
            _ => Held::Hotdrop,
        }
    }
}

pub mod guard_kind {
    /// `-m statistic --mode random`: `a` is the probability in units of
    /// 2^-31; holds when the random number's low 31 bits are below it.
    pub const STATISTIC_RANDOM: u32 = 1;
    /// `-m statistic --mode nth`: `a` is `--every`, `b` is `--packet`;
    /// holds for the packets numbered `b`, `b + a`, ... (0-based) of those
    /// that reach it. Its state is the number of packets so far, in
    /// `GUARD_STATE` at its state slot `c`.
    pub const STATISTIC_NTH: u32 = 2;
    /// Not a match but a *requirement* the compiler adds to a slot that a
    /// guarded jump, RETURN or goto leads to (user-defined chains compiled
    /// flat): guard number `a` (0-based, of the same generation) was
    /// evaluated for this packet in this chain and held (`negated` 0) or
    /// failed (`negated` 1). The kernel checks it against the outcome it
    /// recorded when it evaluated that guard (`GUARD_MEMO`), never by
    /// evaluating the guard again: a second evaluation would draw another
    /// random number or count the packet twice.
    pub const REQUIRE: u32 = 3;
    /// `-m limit`: a token bucket, one per rule shared by every CPU. `a`
    /// is the cost of one packet in nanoseconds (the period of
    /// `--limit`), `b` the bucket's depth (`a` × `--limit-burst`). Its
    /// state is the bucket's *theoretical arrival time* (see
    /// [`super::limit_take`]), in `GUARD_STATE` at its state slot `c`.
    pub const LIMIT: u32 = 4;
    /// `-m connlimit`: holds when the live connections of the packet's
    /// masked address (its own included) number more than `a`, inverted
    /// by `negated` (`--connlimit-upto`, `!`). `b` holds the mask (network
    /// byte order, low 32 bits) and [`super::CONNLIMIT_DADDR`] for
    /// `--connlimit-daddr`. Its state is the rule's lists of connections
    /// (`ConnlimitList`), keyed by its state slot `c` and masked address.
    pub const CONNLIMIT: u32 = 5;
    /// `-m hashlimit`: a token bucket per key (the packet's masked
    /// addresses and ports that `--hashlimit-mode` names) in the table of
    /// its `--hashlimit-name`. `a`: the cost in ns of a packet (of a
    /// 16-byte chunk in bytes mode), `b`: the bucket's depth in ns (in
    /// bytes mode, where the depth is always [`super::hashlimit::BYTES_DEPTH_NS`],
    /// the number of refills its `--hashlimit-burst` allows: see
    /// [`super::hashlimit_byte_take`]), `negated`: `--hashlimit-above`. `_pad`: [`super::hashlimit`] mode
    /// bits and masks; `c`: the name's number (low 32 bits) and the expiry
    /// of an idle bucket in ms (high 32 bits).
    pub const HASHLIMIT: u32 = 6;
    /// `-m recent`: the packet's masked source (or destination) address
    /// in the list of its `--name`. `_pad`: [`super::recent`] bits; `a`:
    /// `--seconds`; `b`: `--hitcount`; `c`: the name's number (low 32
    /// bits) and the mask (high 32, network byte order); `negated`: `!`.
    pub const RECENT: u32 = 7;
    /// `-m conntrack --ctorigsrc/--ctorigdst/--ctreplsrc/--ctrepldst` and
    /// their ports: one tuple of the packet's connection ([`super::ct_match`]
    /// bits in `_pad` say which, which parts are tested and which are
    /// negated). `a`: source address (network order, low 32 bits) and its
    /// mask (high 32); `b`: the same for the destination; `c`: source port
    /// range (first, last: bits 0–15, 16–31), destination port range (bits
    /// 32–47, 48–63). Holds for a packet without a connection: the match's
    /// state test (a classifier key) decides those, as in xt_conntrack.
    pub const CT_TUPLE: u32 = 8;
    /// `-m conntrack --ctproto` and `--ctexpire`: `a` the protocol, `b` the
    /// remaining seconds' range (min low 32 bits, max high 32);
    /// [`super::ct_match`] bits in `_pad`. Holds without a connection, as
    /// [`CT_TUPLE`].
    pub const CT_PROTO_EXPIRE: u32 = 9;
    /// `-m tcp --tcp-option N`: `a` is N (1..=255); holds when the walk of
    /// the TCP options (as xt_tcpudp walks them) meets kind N, inverted by
    /// `negated`; never on a packet whose options cannot be read.
    pub const TCP_OPTION: u32 = 10;
    /// `-m set --match-set NAME DIRS`: the packet's address (and port) as
    /// `DIRS` names them, looked up in the ipset whose name's number is
    /// `a` (its header in `IPSET_SETS`, its members in `IPSET_MEMBERS` or
    /// `IPSET_NETS`). `_pad`: [`super::ipset`] direction and family bits;
    /// `negated`: `!`.
    pub const SET: u32 = 11;
    /// ip6tables' header matches, on the packet's [`super::Ipv6Ext`]:
    /// `-m ipv6header` (`a` the header mask, `b` the inverted bits, `c` 1
    /// for `--soft`), `-m rt` and `-m frag` (see
    /// [`super::Guard::holds_ipv6_rt`], [`super::Guard::holds_ipv6_frag`]).
    pub const IPV6_HEADER: u32 = 12;
    pub const IPV6_RT: u32 = 13;
    pub const IPV6_FRAG: u32 = 14;
    /// `-s`/`-d` with a netmask that is not leading ones (`-s
    /// 10.0.12.0/255.0.255.0`): the packet's source (`_pad` 0) or
    /// destination (`_pad` 1) address under the mask (high 32 bits of
    /// `a`) equals the address (low 32 bits), host byte order; inverted by
    /// `negated`. No state: see [`super::Guard::holds_addr_mask`].
    pub const ADDR_MASK: u32 = 15;
    /// `-m mark --mark V[/M]`: the packet's mark under the mask `b` equals
    /// `a`, inverted by `negated`. No state: see
    /// [`super::Guard::holds_mark`]. (A number well apart from the others:
    /// other branches add kinds at the same time.)
    pub const MARK: u32 = 24;
    /// `-m connmark --mark V[/M]`: the packet's connection's mark under
    /// the mask `b` equals `a`, inverted by `negated`; never for a packet
    /// without a connection, negated or not (xt_connmark). No state: see
    /// [`super::Guard::holds_connmark`]. (Apart from the others, as MARK.)
    pub const CONNMARK: u32 = 30;
    /// `-m sctp --chunk-types all|any|only LIST`: the chunks the pipeline's
    /// walk met ([`super::sctp::SctpChunks`]), tested as xt_sctp does
    /// ([`super::Guard::sctp_chunks`]). `_pad`: [`super::sctp`]
    /// mode, `EVERY` and flag-entry count; `a`: the chunk types, one bit
    /// each ([`super::sctp::type_bit`]); `b`, `c`: the flag entries, two
    /// per word ([`super::sctp::flag_entry`]); `negated`: `!`.
    pub const SCTP_CHUNKS: u32 = 16;
    /// `-m dccp --dccp-types` and `--dccp-option` (xt_dccp): the packet's
    /// header as the pipeline read it ([`super::dccp::DccpFacts`]),
    /// tested by [`super::Guard::dccp`]. `_pad`: [`super::dccp`]
    /// bits saying which tests the match has and which are negated; `a`:
    /// the type mask (bit `t`: type `t`); `b`: the option number.
    /// (Apart from the others, as MARK: DCCP's protocol number.)
    pub const DCCP: u32 = 33;
    /// `-j SET --add-set|--del-set NAME DIRS`: not a test but the target's
    /// work, the last guard of its rule so that it runs only when every
    /// match held; always holds. The packet's key (as `SET` builds it)
    /// is added to or deleted from the ipset whose name's number is `a`.
    /// `_pad`: [`super::ipset`] direction, family and `ADD`/`DEL`/`EXIST`/
    /// `TIMEOUT` bits; `b`: `--timeout` in seconds. (Apart from the others,
    /// as MARK.)
    pub const SET_WRITE: u32 = 40;
}

/// `-m sctp --chunk-types` (xt_sctp): the chunk walk's record and the
/// guard's encoding.
pub mod sctp {
    /// Chunks of one packet the walk examines. The kernel walks them all;
    /// past this many, netbeast decides only what the first ones decide
    /// (`any` met a matching chunk, `only` a chunk it forbids, which is
    /// where xt_sctp stops too), and otherwise the match fails, negated or
    /// not (`Status::MORE`). 128 chunks of at least 16 bytes (a DATA
    /// chunk with one byte) take more than a 1,500-byte packet. A power of
    /// two: indexes are masked with it.
    pub const MAX_SCTP_CHUNKS: usize = 128;

    /// `SctpChunks::status`: how the walk ended.
    pub mod status {
        /// Not walked: not SCTP, a later fragment, no whole common header.
        pub const NONE: u32 = 0;
        /// Every chunk up to the end of the datagram was examined.
        pub const WHOLE: u32 = 1;
        /// The chunk after the last recorded one lies past the bytes the
        /// program can read, or past a first fragment's end: what it would
        /// decide is unknown.
        pub const CUT: u32 = 2;
        /// More chunks than [`super::MAX_SCTP_CHUNKS`].
        pub const MORE: u32 = 3;
        /// The chunk after the last recorded one has no whole header in
        /// the datagram, or a length of 0: xt_sctp drops the packet when
        /// its walk comes to it ([`crate::Held::Hotdrop`]).
        pub const BAD: u32 = 4;
    }

    /// `Guard::_pad` bits: the match type (xt_sctp's values) ...
    pub const ANY: u32 = 1;
    pub const ALL: u32 = 2;
    pub const ONLY: u32 = 4;
    pub const MODE_MASK: u32 = 7;
    /// ... `ALL` given as the list: every chunk type, not only named ones.
    pub const EVERY: u32 = 1 << 8;
    /// ... and the number of flag entries (0 to 4) from this bit on.
    pub const FLAG_COUNT_SHIFT: u32 = 16;
    /// Flag entries one match holds (xt_sctp's `XT_NUM_SCTP_FLAGS`).
    pub const MAX_FLAG_ENTRIES: usize = 4;

    /// The chunk types libxt_sctp names, in its order, with their bit in
    /// the guard's type set.
    pub const NAMED_TYPES: [u8; 22] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 64, 130, 132, 193, 128, 192, 194,
    ];

    /// The guard's bit for chunk type `t`: types 0 to 14 their own,
    /// the others libxt_sctp names after them; `None` for a type no name
    /// gives (a list of names never holds it).
    #[inline(always)]
    pub fn type_bit(t: u8) -> Option<u32> {
        match t {
            0..=14 => Some(u32::from(t)),
            64 => Some(15),
            128 => Some(16),
            130 => Some(17),
            132 => Some(18),
            192 => Some(19),
            193 => Some(20),
            194 => Some(21),
            _ => None,
        }
    }

    /// One flag entry in its 32 bits: chunk type, required flags, mask.
    #[inline(always)]
    pub fn flag_entry(chunk: u8, flag: u8, mask: u8) -> u64 {
        u64::from(chunk) | u64::from(flag) << 8 | u64::from(mask) << 16
    }

    /// The chunks the walk met, in order: what `--chunk-types` reads.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SctpChunks {
        /// `status::*`.
        pub status: u32,
        /// Chunks recorded in `types` and `flags` (at most
        /// [`MAX_SCTP_CHUNKS`]).
        pub count: u32,
        pub types: [u8; MAX_SCTP_CHUNKS],
        pub flags: [u8; MAX_SCTP_CHUNKS],
    }

    impl Default for SctpChunks {
        fn default() -> Self {
            SctpChunks {
                status: status::NONE,
                count: 0,
                types: [0; MAX_SCTP_CHUNKS],
                flags: [0; MAX_SCTP_CHUNKS],
            }
        }
    }
}

/// `-m dccp --dccp-types` / `--dccp-option` (xt_dccp): what the pipeline
/// reads of a DCCP header, and the guard's encoding.
pub mod dccp {
    /// DCCP's generic header with a 24-bit sequence number (X = 0): ports,
    /// data offset, CCVal/CsCov, checksum, type byte, sequence number. The
    /// kernel's match reads these bytes first and drops a packet without
    /// them.
    pub const GENERIC_HLEN: usize = 12;
    /// The low sequence bits an extended header (X = 1) adds.
    pub const EXTENDED_SEQ_LEN: usize = 4;
    /// The largest header a data offset (8 bits, in 32-bit words) gives.
    pub const MAX_HEADER_BYTES: usize = 255 * 4;
    /// Steps of the option walk: each takes at least one byte of an area
    /// that is at most this long, so the kernel's walk never takes more.
    pub const MAX_OPTION_STEPS: usize = MAX_HEADER_BYTES - GENERIC_HLEN;
    /// The packet type libxt_dccp calls INVALID; it stands for types 10
    /// to 15 (`INVALID_TYPES`).
    pub const INVALID: u8 = 10;
    pub const INVALID_TYPES: u16 = 0xfc00;

    /// `Guard::_pad` bits: the match tests the type (`--dccp-types`) ...
    pub const TYPES: u32 = 1;
    /// ... negated ...
    pub const TYPES_NEGATED: u32 = 2;
    /// ... it tests an option (`--dccp-option`) ...
    pub const OPTION: u32 = 4;
    /// ... negated.
    pub const OPTION_NEGATED: u32 = 8;

    /// `DccpFacts::status`: how far the header could be read.
    pub mod status {
        /// Not read: not DCCP, or a later fragment (the match is false).
        pub const NONE: u32 = 0;
        /// Fewer than `GENERIC_HLEN` bytes (xt_dccp drops the packet).
        pub const SHORT: u32 = 1;
        /// The type was read, the options not: the data offset is below the
        /// type's header length, or the options run past the datagram
        /// (xt_dccp drops the packet when it comes to test an option).
        pub const TYPE_ONLY: u32 = 2;
        /// The type was read and the options walked.
        pub const OPTIONS: u32 = 3;
    }

    /// What the match reads of a DCCP packet.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DccpFacts {
        /// `status::*`.
        pub status: u32,
        /// The header's 4-bit packet type.
        pub packet_type: u32,
        /// Bit `k` of the 256-bit set: the walk met option type `k`.
        pub options: [u64; 4],
    }

    /// The bytes a packet type's header adds to the generic one: none for
    /// DATA, the acknowledgement number for most, the service code for
    /// REQUEST, both for RESPONSE; RESET (and any type past SYNCACK, as
    /// the kernel's `dccp_packet_hdr_len` counts) the acknowledgement and
    /// reset code.
    #[inline(always)]
    pub fn packet_header_len(packet_type: u8) -> usize {
        match packet_type {
            2 => 0,
            3..=6 | 8 | 9 => 8,
            0 => 4,
            _ => 12,
        }
    }

    /// Where the options start, as the kernel's `__dccp_hdr_len` has it,
    /// from the header's type byte (byte 8: 3 reserved bits, the type, X).
    #[inline(always)]
    pub fn options_start(type_byte: u8) -> usize {
        let extended = if type_byte & 1 != 0 {
            EXTENDED_SEQ_LEN
        } else {
            0
        };
        GENERIC_HLEN + extended + packet_header_len(type_byte >> 1 & 0xf)
    }

    /// One step of xt_dccp's option walk at `at`: the option type there,
    /// and where the next starts. Types 0 (padding) and 1 (mandatory)
    /// take one byte, any other its length byte's worth (one when that
    /// is 0, so a length of 0 or 1 makes the length byte the next type).
    /// `byte(i)` reads the area; the kernel reads the length byte even
    /// past the area's end, where what it says cannot matter: the walk
    /// ends either way.
    #[inline(always)]
    pub fn option_step(at: usize, byte: impl Fn(usize) -> u8) -> (u8, usize) {
        let kind = byte(at);
        let len = if kind < 2 {
            1
        } else {
            match byte(at + 1) {
                0 => 1,
                n => usize::from(n),
            }
        };
        (kind, at + len)
    }

    /// The facts of a DCCP header, from `bytes`: the DCCP header and what
    /// follows it up to the end of the datagram. The models' reading; the
    /// kernel does the same in steps (`netbeast-ebpf`'s `dccp.rs`).
    pub fn facts(bytes: &[u8]) -> DccpFacts {
        let mut f = DccpFacts::default();
        if bytes.len() < GENERIC_HLEN {
            f.status = status::SHORT;
            return f;
        }
        f.packet_type = u32::from(bytes[8] >> 1 & 0xf);
        f.status = status::TYPE_ONLY;
        let start = options_start(bytes[8]);
        let end = usize::from(bytes[4]) * 4;
        // No options: nothing to read (the kernel reads nothing either).
        if end == start {
            f.status = status::OPTIONS;
            return f;
        }
        if end < start || end > bytes.len() {
            return f;
        }
        let mut at = start;
        while at < end {
            let (kind, next) = option_step(at, |i| bytes.get(i).copied().unwrap_or(0));
            f.options[usize::from(kind >> 6)] |= 1 << (kind & 63);
            at = next;
        }
        f.status = status::OPTIONS;
        f
    }
}

/// ipsets (`netbeast ipset`, `-m set`): set types, the guard's bits and
/// the maps' keys.
pub mod ipset {
    /// Set types (`IpsetHeader::kind`).
    pub const HASH_IP: u32 = 1;
    pub const HASH_NET: u32 = 2;
    pub const HASH_IP_PORT: u32 = 3;
    pub const HASH_NET_PORT: u32 = 4;
    pub const BITMAP_PORT: u32 = 5;
    /// `Guard::_pad` of a `SET` guard: bit `DIR_DST << i` says dimension
    /// `i` (0-based) reads the destination, else the source; the number
    /// of dimensions the rule gives is in bits 8–11; `V6` marks a rule of
    /// ip6tables (a set of the other family never matches it, as xt_set).
    pub const DIR_DST: u32 = 1;
    pub const DIMS_SHIFT: u32 = 8;
    pub const V6: u32 = 1 << 12;
    /// `SET_WRITE` guards: add the key (`--add-set`), or delete it
    /// (`--del-set`); `--exist` (an existing member's timeout is renewed,
    /// as xt_SET's `IPSET_FLAG_EXIST`); `--timeout` given (in `Guard::b`),
    /// else the set's own default applies.
    pub const ADD: u32 = 1 << 13;
    pub const DEL: u32 = 1 << 14;
    pub const EXIST: u32 = 1 << 15;
    pub const TIMEOUT: u32 = 1 << 16;
    /// `IpsetHeader::timeout`: the set has timeout support (ipset's
    /// timeouts end at 2,147,483 s, below this bit).
    pub const HAS_TIMEOUT: u32 = 1 << 31;
    /// Members of every hash:ip, hash:ip,port and bitmap:port set of a
    /// namespace (`IPSET_MEMBERS`): allocated as they are added
    /// (`BPF_F_NO_PREALLOC`), so an empty capacity costs nothing. Each
    /// set's own `maxelem` is checked by `netbeast ipset`.
    pub const MEMBERS: u32 = 4 << 20;
    /// Members of every hash:net and hash:net,port set (`IPSET_NETS`, an
    /// LPM trie).
    pub const NETS: u32 = 1 << 20;
    /// Sets of a namespace (`IPSET_SETS`), as the kernel's
    /// `CONFIG_IP_SET_MAX` default.
    pub const SETS: u32 = 256;
    /// Bits of a net key before the address: set, protocol, pad, port.
    pub const NET_KEY_PREFIX_BITS: u32 = 64;
}

/// A set's header in `IPSET_SETS`, keyed by its name's number: which
/// contents it has now (`ipset swap` exchanges two sets' `content`), its
/// type and family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpsetHeader {
    /// The `IpsetKey::set` of its members.
    pub content: u32,
    /// `ipset::HASH_IP` ...
    pub kind: u32,
    /// 4 or 6 (bitmap:port: 0, any).
    pub family: u32,
    /// Dimensions of an element (hash:ip 1, hash:ip,port 2).
    pub dims: u32,
    /// Members it holds, expired ones included until `netbeast ipset`
    /// removes them: userspace's count for `maxelem`, kept here so that
    /// adding one element writes no file. `-j SET` rules add to it (and
    /// take off) atomically as they add (and delete) members.
    pub entries: u32,
    /// [`ipset::HAS_TIMEOUT`] for a set created with timeout support, with
    /// its default timeout in seconds in the bits below (0: permanent):
    /// what a `-j SET --add-set` without `--timeout` gives. 0 for a set
    /// without timeout support, whose members never expire.
    pub timeout: u32,
}

/// A set member's key: in `IPSET_MEMBERS` as is, in `IPSET_NETS` as the
/// data of an LPM key whose prefix covers `set`, `protocol`, `_pad`,
/// `port` (64 bits) and the address prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpsetKey {
    /// The set's content number, big-endian (the trie compares bytes).
    pub set: u32,
    /// The IP protocol of a port type (0 otherwise; bitmap:port too).
    pub protocol: u8,
    pub _pad: u8,
    /// Port, or ICMP type << 8 | code; big-endian.
    pub port: u16,
    /// The address, network order; an IPv4 address in word 0.
    pub addr: [u32; 4],
}

impl IpsetHeader {
    /// The key a packet looks up in this set for a `SET` guard's `flags`
    /// (`ipset::*`), as xt_set builds it: the address of dimension 0's
    /// direction, the port (ICMP type and code) of the port dimension's;
    /// `None` when it cannot be a member — fewer directions than
    /// dimensions, the other family, a port type and a packet without a
    /// port (a later fragment, a cut header; bitmap:port: not TCP or UDP).
    /// `src`/`dst`: the addresses' words (network order, IPv4 in word 0);
    /// `l4a`/`l4b`: the classifier's L4 keys (source and destination
    /// port, or ICMP type and code). One meaning for the kernel and the
    /// tests.
    #[inline(always)]
    pub fn packet_key(
        &self,
        flags: u32,
        src: &[u32; 4],
        dst: &[u32; 4],
        protocol: u8,
        l4a: u32,
        l4b: u32,
    ) -> Option<IpsetKey> {
        let mut key = IpsetKey::default();
        self.fill_packet_key(flags, src, dst, protocol, l4a, l4b, &mut key)
            .then_some(key)
    }

    /// [`IpsetHeader::packet_key`] written into `key` (the kernel keeps it
    /// in per-CPU scratch: its call chain has no stack to spare); `false`
    /// when it cannot be a member.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn fill_packet_key(
        &self,
        flags: u32,
        src: &[u32; 4],
        dst: &[u32; 4],
        protocol: u8,
        l4a: u32,
        l4b: u32,
        key: &mut IpsetKey,
    ) -> bool {
        let v6 = flags & ipset::V6 != 0;
        if (flags >> ipset::DIMS_SHIFT) & 0xf < self.dims
            || (self.family != 0 && (self.family == 6) != v6)
        {
            return false;
        }
        let dst_dir = |i: u32| flags & (ipset::DIR_DST << i) != 0;
        key.set = self.content.to_be();
        key.protocol = 0;
        key._pad = 0;
        key.port = 0;
        key.addr = [0; 4];
        let port_dim = match self.kind {
            ipset::HASH_IP | ipset::HASH_NET => None,
            ipset::HASH_IP_PORT | ipset::HASH_NET_PORT => Some(1),
            ipset::BITMAP_PORT => Some(0),
            _ => return false,
        };
        if self.kind != ipset::BITMAP_PORT {
            let a = if dst_dir(0) { dst } else { src };
            key.addr[0] = a[0];
            if v6 {
                key.addr[1] = a[1];
                key.addr[2] = a[2];
                key.addr[3] = a[3];
            }
        }
        if let Some(i) = port_dim {
            let port = match protocol {
                // TCP, UDP, SCTP, UDP-Lite: the direction's port.
                6 | 17 | 132 | 136 => {
                    let p = if dst_dir(i) { l4b } else { l4a };
                    if p > 0xffff {
                        return false;
                    }
                    p
                }
                // ICMP (ICMPv6 in IPv6): type and code, either direction.
                1 | 58 if (protocol == 58) == v6 => {
                    if l4a > 0xff || l4b > 0xff {
                        return false;
                    }
                    l4a << 8 | l4b
                }
                // Other protocols have no port: pseudo port 0.
                _ => {
                    if l4a == L4_FRAGMENT {
                        return false;
                    }
                    0
                }
            };
            if self.kind == ipset::BITMAP_PORT {
                if protocol != 6 && protocol != 17 {
                    return false;
                }
            } else {
                key.protocol = protocol;
            }
            key.port = (port as u16).to_be();
        }
        true
    }
}

/// A member's value: when it expires (`bpf_ktime_get_ns`), 0 never.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpsetValue {
    pub expires: u64,
}

/// What ip6tables' header matches read of an IPv6 packet's extension
/// headers, gathered by the IPv6 parser's walk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Ext {
    /// The headers met (`ipv6_mask::*`), as ip6t_ipv6header gathers them.
    pub mask: u8,
    /// The first routing header's type and segments left (when
    /// `mask` has `ROUTING`).
    pub rt_type: u8,
    pub rt_segsleft: u8,
    /// The first fragment header's flags (`ipv6_frag::*`, when `mask`
    /// has `FRAGMENT`).
    pub frag: u8,
    /// The first routing header's length in bytes.
    pub rt_len: u16,
    pub _pad: u16,
    /// The first fragment header's identification.
    pub frag_id: u32,
}

/// The IPv6 parser's walk as recorded: each extension header's type and
/// its first four bytes' last three (length, then routing type and
/// segments left, or a fragment's offset and flags), how many there were,
/// the last fragment header's identification, and the upper layer (or
/// what a later fragment's header names). The header matches' facts
/// ([`Ipv6Ext`]) are made from it when a rule asks (`facts`), so the walk
/// itself stays branch-free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Walk {
    /// `nh | len << 8 | byte2 << 16 | byte3 << 24` per header.
    pub headers: [u32; MAX_IPV6_EXT_HEADERS],
    pub count: u32,
    /// The identification of the last fragment header met (a packet has
    /// one; with several, netbeast tests the last one's id where the
    /// kernel tests the first one's).
    pub frag_id: u32,
}

impl Ipv6Walk {
    /// What ip6t_ipv6header, ip6t_rt and ip6t_frag read: the headers met,
    /// the first routing header, the first fragment header; `end` is what
    /// ends the chain (the packet's protocol: the upper layer, no next
    /// header, ESP, or what a later fragment's header names, where the
    /// walk stops).
    pub fn facts(&self, end: u8) -> Ipv6Ext {
        let mut ext = Ipv6Ext::default();
        self.facts_into(end, &mut ext);
        ext
    }

    /// [`Ipv6Walk::facts`] written into `out`, every read and write of the
    /// record and of `out` volatile: in the kernel both live in the
    /// per-CPU packet slot, so each step ends with nothing in registers
    /// and the verifier checks the next step once, not once per way
    /// through the steps before it.
    #[inline(always)]
    pub fn facts_into(&self, end: u8, out: &mut Ipv6Ext) {
        use core::ptr::{read_volatile as get, write_volatile as set};
        // SAFETY (every block below): plain loads and stores of fields of
        // valid references.
        unsafe {
            set(&mut out.mask, 0);
            set(&mut out.frag, 0);
            set(&mut out.rt_type, 0);
            set(&mut out.rt_segsleft, 0);
            set(&mut out.rt_len, 0);
            set(&mut out.frag_id, 0);
        }
        for i in 0..MAX_IPV6_EXT_HEADERS {
            // SAFETY: as above.
            let (count, record, mask) =
                unsafe { (get(&self.count), get(&self.headers[i]), get(&out.mask)) };
            if i as u32 >= count {
                break;
            }
            let [nh, len, b2, b3] = record.to_le_bytes();
            let bit = match nh {
                0 => ipv6_mask::HOPOPTS,
                60 => ipv6_mask::DSTOPTS,
                43 => ipv6_mask::ROUTING,
                44 => ipv6_mask::FRAGMENT,
                _ => ipv6_mask::AH,
            };
            // SAFETY: as above.
            unsafe { set(&mut out.mask, mask | bit) };
            if mask & bit != 0 {
                continue;
            }
            if nh == 43 {
                // SAFETY: as above.
                unsafe {
                    set(&mut out.rt_type, b2);
                    set(&mut out.rt_segsleft, b3);
                    set(&mut out.rt_len, (len as u16 + 1) * 8);
                }
            } else if nh == 44 {
                let frag_off = u16::from_be_bytes([b2, b3]);
                let mut flags = 0;
                if frag_off & 1 != 0 {
                    flags |= ipv6_frag::MORE;
                }
                if frag_off & 0xfff8 == 0 {
                    flags |= ipv6_frag::FIRST;
                }
                if len != 0 || frag_off & 6 != 0 {
                    flags |= ipv6_frag::RESERVED;
                }
                // SAFETY: as above.
                unsafe {
                    set(&mut out.frag, flags);
                    set(&mut out.frag_id, get(&self.frag_id));
                }
            }
        }
        let last = match end {
            59 => ipv6_mask::NONE,
            50 => ipv6_mask::ESP,
            _ => ipv6_mask::PROTO,
        };
        // SAFETY: as above.
        unsafe { set(&mut out.mask, get(&out.mask) | last) };
    }
}

/// ip6t_ipv6header's header bits.
pub mod ipv6_mask {
    pub const HOPOPTS: u8 = 128;
    pub const DSTOPTS: u8 = 64;
    pub const ROUTING: u8 = 32;
    pub const FRAGMENT: u8 = 16;
    pub const AH: u8 = 8;
    pub const ESP: u8 = 4;
    pub const NONE: u8 = 2;
    /// An upper-layer protocol ends the chain.
    pub const PROTO: u8 = 1;
}

/// The fragment header's facts for `-m frag`.
pub mod ipv6_frag {
    /// More fragments follow (M flag).
    pub const MORE: u8 = 1;
    /// Offset 0: the first fragment.
    pub const FIRST: u8 = 2;
    /// A reserved field is not zero (the reserved byte or the two bits
    /// before M).
    pub const RESERVED: u8 = 4;
}

/// The tests of a `-m rt` or `-m frag` guard, in `Guard::_pad`: a test's
/// bit says it is made, the bit shifted by `INVERT_SHIFT` that it is
/// negated.
pub mod ipv6_test {
    /// `--rt-type` (`a` bits 0–31).
    pub const RT_TYPE: u32 = 1;
    /// `--rt-len` (`a` bits 32–63, in bytes).
    pub const RT_LEN: u32 = 2;
    /// The segments left / fragment id range: `b` (first low 32 bits,
    /// last high 32); always tested (0:4294967295 unless given).
    pub const RANGE: u32 = 4;
    /// `--fragres`, `--fragfirst`, `--fragmore`, `--fraglast`.
    pub const FRAG_RES: u32 = 8;
    pub const FRAG_FIRST: u32 = 16;
    pub const FRAG_MORE: u32 = 32;
    pub const FRAG_LAST: u32 = 64;
    pub const INVERT_SHIFT: u32 = 8;
}

/// The bits of `Guard::_pad` for the conntrack guards
/// ([`guard_kind::CT_TUPLE`], [`guard_kind::CT_PROTO_EXPIRE`]).
pub mod ct_match {
    /// `CT_TUPLE`: the reply tuple (else the original one).
    pub const REPLY: u32 = 1;
    /// `CT_TUPLE` parts tested: source address, destination address,
    /// source port, destination port. `CT_PROTO_EXPIRE`: `SRC_ADDR` is the
    /// protocol, `DST_ADDR` the expiry.
    pub const SRC_ADDR: u32 = 1 << 1;
    pub const DST_ADDR: u32 = 1 << 2;
    pub const SRC_PORT: u32 = 1 << 3;
    pub const DST_PORT: u32 = 1 << 4;
    pub const PROTO: u32 = SRC_ADDR;
    pub const EXPIRE: u32 = DST_ADDR;
    /// A part's bit shifted by this: the part is negated (`!`).
    pub const INVERT_SHIFT: u32 = 4;
}

/// A tuple of a connection as the conntrack guards read it: addresses in
/// network order, ports in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtTuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
}

/// `-m recent`'s command and flags, packed in `Guard::_pad`.
pub mod recent {
    pub const SET: u32 = 1;
    pub const CHECK: u32 = 2;
    pub const UPDATE: u32 = 4;
    pub const REMOVE: u32 = 8;
    pub const REAP: u32 = 16;
    /// `--rttl`: an entry counts only if the packet's TTL is the one it
    /// recorded.
    pub const TTL: u32 = 32;
    /// `--rdest`: the destination address is the key.
    pub const DEST: u32 = 64;
    /// An ip6tables rule: the key is the IPv6 address, and `Guard::c`'s
    /// high half is `--mask`'s prefix length (0..=128) instead of an
    /// IPv4 mask.
    pub const V6: u32 = 128;
}

/// Times one `-m recent` entry remembers (the kernel remembers 20 by
/// default): `--hitcount` may be at most this.
pub const RECENT_STAMPS: usize = 32;
/// Entries all `-m recent` lists hold together. An LRU table: past it, a
/// new address's entry takes the place of the one used least recently, of
/// any list (see docs/FEATURES.md).
pub const RECENT_ENTRIES: u32 = 65_536;

/// A `-m recent` entry's key: its list's name number and the masked
/// address. A list holds both families, as xt_recent's does (one name,
/// one list, for iptables and ip6tables): `v6` keeps an IPv4 address
/// apart from an IPv6 one of the same first word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentKey {
    pub name: u32,
    /// 1 for an IPv6 address, 0 for IPv4.
    pub v6: u32,
    /// Network byte order; an IPv4 address in the first word, the rest 0.
    pub addr: [u32; 4],
}

/// A `-m recent` entry: the times (bpf_ktime_get_ns) of the last
/// `RECENT_STAMPS` packets that set or updated it, in a ring. `lock`
/// serializes the CPUs that check it (0 free, 1 held).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentEntry {
    pub lock: u64,
    pub stamps: [u64; RECENT_STAMPS],
    /// The next stamp's slot.
    pub index: u32,
    /// Stamps recorded (at most `RECENT_STAMPS`).
    pub count: u32,
    /// The TTL of the packet that last set or updated it.
    pub ttl: u32,
    pub _pad: u32,
}

/// `-m hashlimit`'s settings packed in `Guard::_pad`.
pub mod hashlimit {
    pub const SRCIP: u32 = 1;
    pub const SRCPORT: u32 = 2;
    pub const DSTIP: u32 = 4;
    pub const DSTPORT: u32 = 8;
    /// Bytes mode (`--hashlimit-upto 10kb/s`).
    pub const BYTES: u32 = 16;
    /// `--hashlimit-rate-match`: `Guard::a` is the rate a window may reach,
    /// `b` the count a packet may bring its window to (packets or bytes),
    /// the window `--hashlimit-rate-interval` seconds, in bits 24..31.
    pub const RATE_MATCH: u32 = 32;
    pub const INTERVAL_SHIFT: u32 = 24;
    /// An ip6tables rule: the key holds the packet's IPv6 addresses
    /// (masked by prefix lengths up to 128), in the table of its name
    /// for IPv6, apart from the IPv4 table of the same name (as
    /// xt_hashlimit finds a table by name and family).
    pub const V6: u32 = 64;
    /// `--hashlimit-srcmask` in bits 8..15, `--hashlimit-dstmask` in
    /// 16..23 (prefix lengths: up to 32, or 128 for ip6tables).
    pub const SRCMASK_SHIFT: u32 = 8;
    pub const DSTMASK_SHIFT: u32 = 16;
    /// A mask's bits in `_pad` (after its shift).
    pub const MASK_BITS: u32 = 0xff;
    /// In bytes mode a packet costs at most one second of the rate, as in
    /// xt_hashlimit, and the bucket holds one second.
    pub const BYTES_DEPTH_NS: u64 = 1_000_000_000;
    /// Bytes are counted in chunks of 2^4 (whole ones, plus one), as
    /// xt_hashlimit does.
    pub const BYTE_SHIFT: u32 = 4;
}

/// The cost in ns of a bytes-mode `-m hashlimit` packet of `length`
/// bytes: its whole 16-byte chunks plus one (a 60-byte datagram is 4), at
/// `chunk_ns` each, at most one second (the bucket's depth), as
/// xt_hashlimit charges it. Divided out rather than multiplied with an
/// overflow check: BPF has no 128-bit multiply.
#[inline(always)]
pub fn hashlimit_byte_cost(length: u32, chunk_ns: u64) -> u64 {
    let chunks = u64::from(length >> hashlimit::BYTE_SHIFT) + 1;
    if chunks != 0 && chunk_ns > hashlimit::BYTES_DEPTH_NS / chunks {
        hashlimit::BYTES_DEPTH_NS
    } else {
        chunks * chunk_ns
    }
}

/// One step of a bytes-mode `-m hashlimit` bucket (depth one second, see
/// [`limit_take`] for `tat`) with its `--hashlimit-burst`: xt_hashlimit
/// turns a burst in bytes into a number of refills (the burst over the
/// rate, rounded up) that an entry may use once each: when a packet costs
/// more than the credit left and a refill is left, the bucket is full
/// again. Refills do not come back while the entry lives (an entry idle
/// past its expiry starts again with all of them). `used` is the refills
/// spent so far, `refills` the rule's number. Returns the new `tat` and
/// whether a refill was spent, or `None` when the packet is over the
/// limit. The one meaning for the kernel and the models.
#[inline(always)]
pub fn hashlimit_byte_take(
    tat: u64,
    used: u64,
    now: u64,
    cost: u64,
    refills: u64,
) -> Option<(u64, bool)> {
    if let Some(new) = limit_take(tat, now, cost, hashlimit::BYTES_DEPTH_NS) {
        return Some((new, false));
    }
    if used < refills {
        // A full bucket (`tat` now) always covers a cost, capped at its
        // depth.
        return limit_take(now, now, cost, hashlimit::BYTES_DEPTH_NS).map(|new| (new, true));
    }
    None
}

/// Buckets all `-m hashlimit` tables hold together: `HASHLIMIT_SETS`
/// sets of `HASHLIMIT_WAYS` slots in one BPF array (`HASHLIMIT`). Each
/// table also holds at most its `--hashlimit-htable-max` (see
/// [`HashlimitTable`] and docs/FEATURES.md).
pub const HASHLIMIT_ENTRIES: u32 = 262_144;
/// Slots of one set: a key's bucket can live in any slot of the set its
/// hash names ([`hashlimit_set`]), so a lookup compares at most this many
/// keys, all in one set's 640 contiguous bytes.
pub const HASHLIMIT_WAYS: usize = 8;
pub const HASHLIMIT_SETS: u32 = HASHLIMIT_ENTRIES / HASHLIMIT_WAYS as u32;
/// Tables (name and family) of `-m hashlimit` kept at once
/// (`HASHLIMIT_TABLES`): a ruleset naming more is refused, naming this
/// limit.
pub const MAX_HASHLIMIT_TABLES: u32 = 1024;

/// The set (`HASHLIMIT` index) of a `-m hashlimit` key: a hash of all
/// its words, the table's name and family included, so that tables spread
/// over every set. The one definition for the kernel and the tests that
/// predict evictions.
#[inline(always)]
pub fn hashlimit_set(key: &HashlimitKey) -> u32 {
    hashlimit_set_of_words(&key.words())
}

/// [`hashlimit_set`] of a key's [`HashlimitKey::words`].
#[inline(always)]
pub fn hashlimit_set_of_words(k: &[u64; HASHLIMIT_KEY_WORDS]) -> u32 {
    // Each word times an odd constant of its own (independent multiplies,
    // not a chain), folded with XOR, then MurmurHash3's 64-bit finalizer
    // once: every input bit reaches the set number's bits (a plain
    // multiply carries the address's last octet, the top byte of its
    // word, only upwards). The finalizer over each word in turn, as
    // before, was a chain of twelve multiplies on every packet's path.
    const ODD: [u64; HASHLIMIT_KEY_WORDS] = [
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
        0x85eb_ca77_c2b2_ae63,
        0x27d4_eb2f_1656_67c5,
        0xff51_afd7_ed55_8ccd,
    ];
    let mut h = 0u64;
    let mut i = 0;
    while i < HASHLIMIT_KEY_WORDS {
        h ^= k[i].wrapping_mul(ODD[i]);
        i += 1;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as u32) & (HASHLIMIT_SETS - 1)
}

/// A [`HashlimitKey`]'s size in 64-bit words: how a slot's key is
/// compared and copied.
pub const HASHLIMIT_KEY_WORDS: usize = 6;

impl HashlimitKey {
    /// The key as the words it is in memory (little-endian: the name and
    /// family, the source's four words, the destination's, the ports).
    #[inline(always)]
    pub fn words(&self) -> [u64; HASHLIMIT_KEY_WORDS] {
        let pair = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
        [
            pair(self.name, self.v6),
            pair(self.src[0], self.src[1]),
            pair(self.src[2], self.src[3]),
            pair(self.dst[0], self.dst[1]),
            pair(self.dst[2], self.dst[3]),
            pair(self.ports, self._pad),
        ]
    }

    /// Its table: the name's number and the family (the key's first
    /// word), as `HASHLIMIT_TABLES` is keyed.
    #[inline(always)]
    pub fn table(&self) -> u64 {
        self.words()[0]
    }
}

/// One slot of a `-m hashlimit` set: a key and its bucket (free while
/// `bucket.last_ns` is 0), and the expiry of its table in ns, so that a
/// key of another table that replaces it knows whether it was still live.
/// 80 bytes: an IPv6 key's two addresses do not fit one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashlimitSlot {
    pub key: HashlimitKey,
    pub bucket: HashlimitBucket,
    pub expire_ns: u64,
}

/// A set of `HASHLIMIT_WAYS` slots: the value of the `HASHLIMIT` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashlimitSet {
    pub slots: [HashlimitSlot; HASHLIMIT_WAYS],
}

/// A `-m hashlimit` table (`HASHLIMIT_TABLES`, keyed by
/// [`HashlimitKey::table`]: the name's number and the family, as
/// xt_hashlimit keeps an IPv4 and an IPv6 table of one name apart): written by the loader for every name a ruleset uses, its
/// `live` count kept by the kernel. A new key takes a free slot of its
/// set only while `live` is below `max`; at `max` it replaces the
/// stalest bucket of the same table in its set (`stats::HASHLIMIT_EVICTED`),
/// and with none there it gets no bucket (`stats::HASHLIMIT_FULL`), as
/// every new key of a full table in xt_hashlimit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashlimitTable {
    /// `--hashlimit-htable-max` as the kernel reads it (see
    /// `rules::ext::hashlimit::Hashlimit::table_max`).
    pub max: u64,
    /// Buckets of the table in `HASHLIMIT` (updated atomically).
    pub live: u64,
}

/// A `-m hashlimit` bucket's key: its table's name number and the
/// packet's masked fields its mode names (0 for the others). 8-byte
/// aligned: the kernel compares and copies it as [`HASHLIMIT_KEY_WORDS`]
/// words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashlimitKey {
    pub name: u32,
    /// 1 for an ip6tables rule's key (IPv6 addresses), 0 for IPv4: the
    /// two families' tables of one name are apart.
    pub v6: u32,
    /// Network byte order; an IPv4 address in the first word, the rest 0.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Source port << 16 | destination port.
    pub ports: u32,
    /// Always 0: the last word's high half.
    pub _pad: u32,
}

/// A `-m hashlimit` bucket: its theoretical arrival time (as
/// [`limit_take`]) and when a packet last met it (for the expiry); in
/// rate-match mode its window instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashlimitBucket {
    pub tat: u64,
    pub last_ns: u64,
    /// Rate-match mode (where `tat` is the window's start): the window's
    /// count (packets or bytes) times 2, plus 1 when the window before it
    /// was over the rate. Bytes mode with a burst: the refills spent
    /// (see [`hashlimit_byte_take`]).
    pub window: u64,
}

/// `Guard::b` bit of `-m connlimit --connlimit-daddr` (the destination
/// address is counted, not the source).
pub const CONNLIMIT_DADDR: u64 = 1 << 32;
/// `Guard::b` bit of an ip6tables `-m connlimit` rule: its low 32 bits
/// are then `--connlimit-mask`'s prefix length (0..=128), the lists are
/// `CONNLIMIT6`'s (IPv6 addresses, IPv6 conntrack keys).
pub const CONNLIMIT_V6: u64 = 1 << 33;
/// Connections one `-m connlimit` list (one masked address of one rule)
/// remembers: a limit must stay below it (`--connlimit-above 63` at
/// most), so that "more than the limit" is always seen.
pub const CONNLIMIT_SLOTS: usize = 64;
/// Masked addresses all `-m connlimit` rules track at once. An LRU table:
/// past it, the list of the address checked least recently goes, and its
/// connections count again only as their packets meet the rule (see
/// docs/FEATURES.md).
pub const CONNLIMIT_LISTS: u32 = 8192;
/// Masked IPv6 addresses all ip6tables `-m connlimit` rules track at once
/// (`CONNLIMIT6`, as `CONNLIMIT_LISTS`): fewer, as a list of IPv6
/// conntrack keys takes 2.5 KiB against 1 KiB, preallocated.
pub const CONNLIMIT6_LISTS: u32 = 2048;

/// Which list of `-m connlimit` connections: guard, masked address and
/// conntrack zone (xt_connlimit keys its counts by zone too: connections
/// of one address in two zones are counted apart).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnlimitKey {
    /// The state slot of the rule's guard (`Guard::c`, below
    /// [`MAX_GUARDS`]), the same in every generation that keeps the rule.
    pub guard: u16,
    /// The zone of the packet's connection (0 without one). It took the
    /// high half of what was a 32-bit slot number, always 0 there: lists
    /// of an older netbeast read as zone 0's, which they were.
    pub zone: u16,
    /// The masked address, network byte order.
    pub addr: u32,
}

/// Which list of ip6tables `-m connlimit` connections: guard, masked
/// IPv6 address and conntrack zone (as [`ConnlimitKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnlimitKey6 {
    /// As [`ConnlimitKey::guard`].
    pub guard: u16,
    /// As [`ConnlimitKey::zone`].
    pub zone: u16,
    /// The masked address, network byte order words.
    pub addr: [u32; 4],
}

/// The connections of one masked address for one `-m connlimit` rule: the
/// conntrack keys of those seen, checked against conntrack each time the
/// rule is evaluated (a closed or expired one is dropped), as the kernel's
/// nf_conncount keeps a list of tuples per key. `lock` (0 free, 1 held)
/// serializes the CPUs that check the same list.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnlimitListOf<K> {
    pub lock: u64,
    /// Slots with a protocol of 0 are free.
    pub conns: [K; CONNLIMIT_SLOTS],
}

/// An IPv4 address's list.
pub type ConnlimitList = ConnlimitListOf<CtKey>;
/// An IPv6 address's list (`CONNLIMIT6`).
pub type ConnlimitList6 = ConnlimitListOf<CtKey6>;

/// One step of a token bucket kept as a single word, so that every CPU can
/// update it with one compare-and-exchange: `tat` (theoretical arrival
/// time, ns) is when the bucket would be full again, so its credit at
/// `now` is `depth - max(tat - now, 0)`, refilled by elapsed time and
/// capped at `depth`, as xt_limit's and nft_limit's credit is. A packet
/// costing `cost` passes when that credit covers it; the new state is then
/// `max(tat, now) + cost`. `None` when the bucket is short (the state
/// stays). A `tat` of 0 (a new rule) is a full bucket. The one meaning of
/// the bucket for the kernel and the models.
#[inline(always)]
pub fn limit_take(tat: u64, now: u64, cost: u64, depth: u64) -> Option<u64> {
    let start = if tat > now { tat } else { now };
    let owed = start - now;
    if owed.saturating_add(cost) <= depth {
        Some(start.saturating_add(cost))
    } else {
        None
    }
}

impl Guard {
    /// Whether the match can drop the packet on the spot (xt_sctp's and
    /// xt_dccp's hotdrop, [`Held::Hotdrop`]).
    pub fn can_hotdrop(&self) -> bool {
        self.kind == guard_kind::SCTP_CHUNKS || self.kind == guard_kind::DCCP
    }

    /// What this record decides when its match decides `held`: the same,
    /// unless it is a hotdrop test only ([`GUARD_HOTDROP_ONLY`]), which
    /// never holds.
    #[inline(always)]
    pub fn outcome(&self, held: Held) -> Held {
        if self.negated & GUARD_HOTDROP_ONLY != 0 && held != Held::Hotdrop {
            Held::Fails
        } else {
            held
        }
    }

    /// Whether the guard holds for a packet: `count` is the guard's state
    /// before this packet (`STATISTIC_NTH`: packets that reached it
    /// before), `random` a uniform 32-bit random number. The one meaning
    /// of every guard kind, for the kernel and for userspace's models.
    /// An unknown kind never holds.
    #[inline(always)]
    pub fn holds(&self, count: u64, random: u32) -> bool {
        let hit = match self.kind {
            guard_kind::STATISTIC_RANDOM => u64::from(random & 0x7fff_ffff) < self.a,
            guard_kind::STATISTIC_NTH => self.a != 0 && count % self.a == self.b,
            _ => return false,
        };
        hit != (self.negated != 0)
    }

    /// Whether part `bit` (`ct_match::*`) of a conntrack guard holds, given
    /// the test's outcome: untested parts hold, a negated one holds when
    /// the test fails (xt_conntrack's `^ !!invert`).
    #[inline(always)]
    fn ct_part(&self, bit: u32, test: bool) -> bool {
        self._pad & bit == 0 || test != (self._pad & (bit << ct_match::INVERT_SHIFT) != 0)
    }

    /// [`guard_kind::CT_TUPLE`] on the tuple it names (the caller picks the
    /// original or reply one by `ct_match::REPLY`): addresses compared
    /// under their masks, ports against their ranges (xt_conntrack
    /// revision 3).
    #[inline(always)]
    pub fn holds_ct_tuple(&self, t: &CtTuple) -> bool {
        let addr = |word: u64, value: u32| (value ^ word as u32) & (word >> 32) as u32 == 0;
        let port = |range: u64, value: u16| {
            let (first, last) = (range as u16, (range >> 16) as u16);
            value >= first && value <= last
        };
        self.ct_part(ct_match::SRC_ADDR, addr(self.a, t.src))
            && self.ct_part(ct_match::DST_ADDR, addr(self.b, t.dst))
            && self.ct_part(ct_match::SRC_PORT, port(self.c, t.sport))
            && self.ct_part(ct_match::DST_PORT, port(self.c >> 32, t.dport))
    }

    /// [`guard_kind::CT_PROTO_EXPIRE`] for a connection of `protocol` with
    /// `expires` whole seconds left.
    #[inline(always)]
    pub fn holds_ct_proto_expire(&self, protocol: u8, expires: u64) -> bool {
        let (min, max) = (self.b & 0xffff_ffff, self.b >> 32);
        self.ct_part(ct_match::PROTO, u64::from(protocol) == self.a)
            && self.ct_part(ct_match::EXPIRE, expires >= min && expires <= max)
    }

    /// [`guard_kind::TCP_OPTION`] on the kinds a packet's options walk met
    /// (bit `k` of the 256-bit set: kind `k`), `None` when its options
    /// could not be read.
    #[inline(always)]
    pub fn holds_tcp_option(&self, kinds: Option<&[u64; 4]>) -> bool {
        let Some(kinds) = kinds else {
            return false;
        };
        let kind = self.a as u32 & 0xff;
        let met = kinds[(kind >> 6) as usize & 3] >> (kind & 63) & 1 != 0;
        met != (self.negated != 0)
    }

    /// [`guard_kind::SCTP_CHUNKS`]: whether the chunk type is in the
    /// match's list.
    #[inline(always)]
    pub fn sctp_lists(&self, t: u8) -> bool {
        self._pad & sctp::EVERY != 0 || sctp::type_bit(t).is_some_and(|b| self.a >> b & 1 != 0)
    }

    /// xt_sctp's flag test for a chunk of type `t` with `flags`: the first
    /// entry for its type decides (`flags & mask == flag`); none, it holds.
    #[inline(always)]
    pub fn sctp_flags_hold(&self, t: u8, flags: u8) -> bool {
        let count = (self._pad >> sctp::FLAG_COUNT_SHIFT) as usize;
        let mut i = 0;
        while i < sctp::MAX_FLAG_ENTRIES {
            if i >= count {
                break;
            }
            let word = if i < 2 { self.b } else { self.c };
            let entry = word >> (32 * (i & 1));
            if entry as u8 == t {
                return flags & (entry >> 16) as u8 == (entry >> 8) as u8;
            }
            i += 1;
        }
        true
    }

    /// One chunk of xt_sctp's walk for [`guard_kind::SCTP_CHUNKS`]:
    /// `Some(outcome)` (before `!`) where the kernel's walk returns at
    /// this chunk, `None` to go on. `left`: the listed types not met yet
    /// (for `all`; start from `a`).
    #[inline(always)]
    pub fn sctp_step(&self, left: &mut u64, t: u8, flags: u8) -> Option<bool> {
        let mode = self._pad & sctp::MODE_MASK;
        if self.sctp_lists(t) {
            let flags_hold = self.sctp_flags_hold(t, flags);
            if mode == sctp::ANY && flags_hold {
                return Some(true);
            }
            if mode == sctp::ONLY && !flags_hold {
                return Some(false);
            }
            if mode == sctp::ALL
                && flags_hold
                && let Some(b) = sctp::type_bit(t)
            {
                *left &= !(1u64 << b);
            }
        } else if mode == sctp::ONLY {
            return Some(false);
        }
        None
    }

    /// The outcome (before `!`) once every chunk was walked without the
    /// walk returning: `all` when every listed type was met (never for
    /// `ALL`, whose kernel map holds bits no chunk type clears), `any`
    /// false, `only` true.
    #[inline(always)]
    pub fn sctp_end(&self, left: u64) -> bool {
        match self._pad & sctp::MODE_MASK {
            sctp::ALL => self._pad & sctp::EVERY == 0 && left == 0,
            sctp::ANY => false,
            _ => true,
        }
    }

    /// [`guard_kind::SCTP_CHUNKS`] on a packet's chunk walk, as xt_sctp
    /// decides it: walked in order with the kernel's early returns; a walk
    /// that comes to a chunk the kernel drops the packet at
    /// ([`sctp::status::BAD`]) is a hotdrop, negated or not; one cut short
    /// otherwise (past [`sctp::MAX_SCTP_CHUNKS`], or the bytes the program
    /// reads) or absent fails, negated or not. The kernel runs the same
    /// steps in `bpf_loop`.
    pub fn sctp_chunks(&self, walk: &sctp::SctpChunks) -> Held {
        if walk.status == sctp::status::NONE {
            return Held::Fails;
        }
        let negated = self.negated & 1 != 0;
        let mut left = self.a;
        for i in 0..(walk.count as usize).min(sctp::MAX_SCTP_CHUNKS) {
            if let Some(outcome) = self.sctp_step(&mut left, walk.types[i], walk.flags[i]) {
                return Held::of(outcome != negated);
            }
        }
        match walk.status {
            sctp::status::WHOLE => Held::of(self.sctp_end(left) != negated),
            sctp::status::BAD => Held::Hotdrop,
            _ => Held::Fails,
        }
    }

    /// [`guard_kind::DCCP`] on what the pipeline read of a DCCP header, as
    /// xt_dccp decides: the type test, then the option test, each
    /// inverted by its `!`. Where the kernel drops the packet instead —
    /// no whole generic header; options that cannot be read when an
    /// option is tested after a type test that held — a hotdrop.
    #[inline(always)]
    pub fn dccp(&self, f: &dccp::DccpFacts) -> Held {
        let bits = self._pad;
        if f.status == dccp::status::NONE {
            return Held::Fails;
        }
        if f.status == dccp::status::SHORT {
            return Held::Hotdrop;
        }
        if bits & dccp::TYPES != 0 {
            let listed = self.a >> (f.packet_type & 0xf) & 1 != 0;
            if listed == (bits & dccp::TYPES_NEGATED != 0) {
                return Held::Fails;
            }
        }
        if bits & dccp::OPTION == 0 {
            return Held::Holds;
        }
        if f.status != dccp::status::OPTIONS {
            return Held::Hotdrop;
        }
        let kind = self.b as u32 & 0xff;
        let met = f.options[(kind >> 6) as usize & 3] >> (kind & 63) & 1 != 0;
        Held::of(met != (bits & dccp::OPTION_NEGATED != 0))
    }

    /// `-m ipv6header`: the headers met, exactly (`b` inverts the test)
    /// or, with `--soft` (`c` 1), each listed header present (absent where
    /// `b` inverts it), as ip6t_ipv6header decides.
    #[inline(always)]
    pub fn holds_ipv6_header(&self, ext: &Ipv6Ext) -> bool {
        let (have, want, inv) = (ext.mask, self.a as u8, self.b as u8);
        if self.c != 0 {
            (have ^ want ^ inv) & want == 0
        } else if inv != 0 {
            have != want
        } else {
            have == want
        }
    }

    /// A range test of `value` against `b` (first, last), negated by the
    /// `RANGE` bit's inversion.
    #[inline(always)]
    fn range_holds(&self, value: u32) -> bool {
        let (lo, hi) = (self.b as u32, (self.b >> 32) as u32);
        let inverted = self._pad & (ipv6_test::RANGE << ipv6_test::INVERT_SHIFT) != 0;
        (value >= lo && value <= hi) != inverted
    }

    /// Whether test `bit` of `_pad` is made and negated.
    #[inline(always)]
    fn test(&self, bit: u32) -> (bool, bool) {
        (
            self._pad & bit != 0,
            self._pad & (bit << ipv6_test::INVERT_SHIFT) != 0,
        )
    }

    /// `-m rt`: a routing header whose segments left are in the range and
    /// whose type and length (in bytes) are the given ones, as ip6t_rt
    /// decides; never without a routing header.
    #[inline(always)]
    pub fn holds_ipv6_rt(&self, ext: &Ipv6Ext) -> bool {
        if ext.mask & ipv6_mask::ROUTING == 0 || !self.range_holds(ext.rt_segsleft as u32) {
            return false;
        }
        let (typed, type_inv) = self.test(ipv6_test::RT_TYPE);
        if typed && ((ext.rt_type as u32 == self.a as u32) == type_inv) {
            return false;
        }
        let (sized, len_inv) = self.test(ipv6_test::RT_LEN);
        !(sized && ((ext.rt_len as u32 == (self.a >> 32) as u32) == len_inv))
    }

    /// `-m frag`: a fragment header whose id is in the range and whose
    /// flags pass the `--fragres/first/more/last` tests, as ip6t_frag
    /// decides (it reads no length: `--fraglen` is printed, not tested);
    /// never without a fragment header.
    #[inline(always)]
    pub fn holds_ipv6_frag(&self, ext: &Ipv6Ext) -> bool {
        if ext.mask & ipv6_mask::FRAGMENT == 0 || !self.range_holds(ext.frag_id) {
            return false;
        }
        let flags = ext.frag;
        !(self._pad & ipv6_test::FRAG_RES != 0 && flags & ipv6_frag::RESERVED != 0
            || self._pad & ipv6_test::FRAG_FIRST != 0 && flags & ipv6_frag::FIRST == 0
            || self._pad & ipv6_test::FRAG_MORE != 0 && flags & ipv6_frag::MORE == 0
            || self._pad & ipv6_test::FRAG_LAST != 0 && flags & ipv6_frag::MORE != 0)
    }

    /// [`guard_kind::ADDR_MASK`] for a packet from `src` to `dst` (host
    /// byte order).
    #[inline(always)]
    pub fn holds_addr_mask(&self, src: u32, dst: u32) -> bool {
        let addr = if self._pad == 0 { src } else { dst };
        let (value, mask) = (self.a as u32, (self.a >> 32) as u32);
        (addr & mask == value) != (self.negated != 0)
    }

    /// [`guard_kind::MARK`] for a packet whose mark is `mark` (xt_mark:
    /// `(mark & mask) == value`, the value not masked).
    #[inline(always)]
    pub fn holds_mark(&self, mark: u32) -> bool {
        (mark & self.b as u32 == self.a as u32) != (self.negated != 0)
    }

    /// [`guard_kind::CONNMARK`] for a packet whose connection's mark is
    /// `ctmark`, `None` for a packet without a connection.
    #[inline(always)]
    pub fn holds_connmark(&self, ctmark: Option<u32>) -> bool {
        match ctmark {
            Some(m) => (m & self.b as u32 == self.a as u32) != (self.negated != 0),
            None => false,
        }
    }

    /// Whether the guard keeps a count in `GUARD_STATE` that the kernel
    /// bumps for every packet it is evaluated on.
    #[inline(always)]
    pub fn counts(&self) -> bool {
        self.kind == guard_kind::STATISTIC_NTH
    }

    /// Whether the guard keeps state in `GUARD_STATE` (an nth count, a
    /// limit bucket), which a new slot starts from zero.
    #[inline(always)]
    pub fn keeps_state(&self) -> bool {
        self.counts() || self.kind == guard_kind::LIMIT
    }

    /// Whether the guard keeps state of its own rule (in `GUARD_STATE` or
    /// `CONNLIMIT`), found through its state slot `c`. hashlimit and
    /// recent keep theirs by name instead.
    #[inline(always)]
    pub fn has_state_slot(&self) -> bool {
        self.keeps_state() || self.kind == guard_kind::CONNLIMIT
    }
}

/// Guard records one generation of a ruleset may hold (one per stateful
/// match of a rule, the checks of guarded jumps, addresses under a
/// non-contiguous or coarsened mask); `GUARDS` holds both generations.
/// kube-proxy's services of two endpoints take seven each (the draw, each
/// endpoint's coarsened source, four checks): 10,000 services, 70,000.
/// 40 bytes a record, twice (the generations): 10 MiB; and 8 bytes a
/// record per CPU in `GUARD_MEMO` (which the generations share): 1 MiB a
/// CPU.
pub const MAX_GUARDS: u32 = 131_072;
/// Of those, the guards that keep state of their own rule
/// (`Guard::has_state_slot`: nth counts, limit buckets, connlimit lists)
/// one generation may hold: each takes a state slot, which must fit
/// `ConnlimitKey::guard`.
pub const MAX_STATEFUL_GUARDS: u32 = 32768;
/// State slots of the guards that keep state per rule (`Guard::c`): room
/// for the active generation's and the next one's at once, as a slot the
/// running ruleset uses is never given to another rule before the switch.
pub const STATE_SLOTS: u32 = GENERATIONS as u32 * MAX_STATEFUL_GUARDS;
/// Guards (stateful matches) one rule may have, besides the guards of its
/// `-s`/`-d` under a non-contiguous netmask (at most two).
pub const MAX_GUARDS_PER_RULE: u32 = 8;
/// Records one slot's guard chain may hold: its requirements (see
/// `guard_kind::REQUIRE`: one per guard of the enclosing guarded jumps and
/// the guarded RETURNs/gotos before it) and then its rule's own guards.
/// The kernel follows at most this many; the compiler refuses longer ones.
pub const MAX_GUARD_CHAIN: u32 = 32;
/// Slots carrying a guard chain one packet may reach in one chain. The
/// kernel visits such a slot whenever its static match holds, and may go on
/// past it (a guard that failed), so each costs a step of the search, like
/// a slot without a verdict: with a kube-proxy cascade of guarded jumps a
/// packet statically matches every endpoint's rules. The compiler bounds
/// this per path and refuses chains past it.
pub const MAX_GUARDED_SLOTS: usize = 1024;

/// Index in `GUARDS` and `GUARD_STATE` of guard `n` (0-based) of a
/// generation.
#[inline(always)]
pub const fn guard_index(capacity: Capacity, generation: u32, n: u32) -> u32 {
    generation * capacity.guards() + n
}

/// The class of a value that every slot of its chain accepts (a field
/// whose rules all take that value, like `-p udp` in a chain of UDP
/// rules): the field tables hold it in place of a class id, and the search
/// skips the field as if no rule looked at it, without reading a header.
pub const CLASS_ALL: u32 = u32::MAX;

/// A set of rules, one bit per rule index, with a summary of its non-zero
/// words: a class as the compiler builds it. The kernel reads it packed
/// ([`ClassHeader`] and `CLASS_WORDS`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ClassVector {
    pub summary: [u64; SUMMARY_WORDS],
    pub words: [u64; RULE_WORDS],
}

/// Where a class vector lives: the `CLASS_HEADERS` value at its class id.
/// The vector's non-zero words are stored in order, and only they, in
/// `CLASS_WORDS` from `offset` on. A *dense* class (every word from
/// `first` to `last` non-zero) needs nothing more: word `w` is at
/// `offset + w - first`. Another has a summary pair per block of 64 words
/// that holds a non-zero word, in block order from `summaries` on: the
/// block's summary (bit `i`: word `64 * block + i` is non-zero) and the
/// number of non-zero words in the blocks before it (its *rank*). Word `w`
/// is then at `offset + rank + (set bits of the summary below bit w % 64)`.
/// Two levels, so the header stays 32 bytes however long the chain: a flat
/// summary of `MAX_RULES_PER_CHAIN` words would take 256 bytes in every
/// header, for classes that mostly hold a word or two.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassHeader {
    /// Word `first` of the vector: word 0 when `first` is 0 (the only word
    /// a chain of at most 64 slots has: small chains are searched without
    /// the summaries and `CLASS_WORDS`), and a large chain's first candidate
    /// word when this class is the one that starts latest.
    pub first_word: u64,
    /// Bit `b` set: block `b` (words `64 * b ..`) holds a non-zero word
    /// past word 0 (which the search reads from `first_word`, never
    /// through the blocks).
    pub blocks: u64,
    /// Index in `CLASS_WORDS` (counted in words, from the map's start) of
    /// the vector's first non-zero word.
    pub offset: u32,
    /// Index in `CLASS_WORDS` of the first summary pair (even, so a pair
    /// never straddles two entries); unused for a dense class.
    pub summaries: u32,
    /// 1 when every word from `first` to `last` is non-zero: word `w` is
    /// then at `offset + w - first`, no bits to count.
    pub dense: u32,
    /// The vector's first and last non-zero words (0 for an empty vector):
    /// no slot before word `first` matches, so a search can start there.
    pub first: u16,
    pub last: u16,
}

impl ClassHeader {
    /// The summary of block `b` of a dense class: its words between
    /// `first` and `last`.
    #[inline(always)]
    pub const fn dense_block(&self, b: u32) -> u64 {
        let (lo, first, last) = (b * 64, self.first as u32, self.last as u32);
        if last < lo || first > lo + 63 {
            return 0;
        }
        let from = first.saturating_sub(lo);
        let to = if last < lo + 63 { last - lo } else { 63 };
        // Bits from..=to.
        (u64::MAX >> (63 - to)) & (u64::MAX << from)
    }

    /// Where block `b`'s summary pair is (`summaries + 2 * rank of b among
    /// the blocks`), when the class has words in block `b`.
    #[inline(always)]
    pub const fn pair_index(&self, b: u32) -> Option<u32> {
        if b >= 64 || self.blocks & (1u64 << b) == 0 {
            return None;
        }
        let below = self.blocks & ((1u64 << b) - 1);
        Some(self.summaries + 2 * below.count_ones())
    }
}

/// Key of the address LPM tries. The trie prefix covers `generation`,
/// `chain` and `field` (24 bits) plus the address prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrKey {
    pub generation: u8,
    pub chain: u8,
    pub field: u8,
    /// Network byte order.
    pub addr: [u8; 4],
}
/// Bits of `AddrKey` before the address.
pub const ADDR_KEY_HEADER_BITS: u32 = 24;

/// Key of the interface (by ifindex) and MAC tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    pub generation: u8,
    pub chain: u8,
    pub field: u8,
    pub _pad: u8,
    pub ifindex: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub generation: u8,
    pub chain: u8,
    pub mac: [u8; 6],
}

/// The address of a tracked endpoint. Conntrack is one design for both
/// families: its key and entry are generic over the address (a network-
/// order word for IPv4, [`Addr6`] for IPv6), and the kernel's tracker is
/// generic over a family that supplies its tables and its packet layout.
pub trait FlowAddr: Copy + Default + PartialEq + Eq {
    /// A total order for the key's canonical endpoint order (any order
    /// works, as long as both directions of a flow agree on it).
    fn before(&self, other: &Self) -> bool;
    /// The address folded to one word (for a hash; equal addresses fold
    /// equal).
    fn fold(&self) -> u32;
}

impl FlowAddr for u32 {
    #[inline(always)]
    fn before(&self, other: &Self) -> bool {
        *self < *other
    }
    #[inline(always)]
    fn fold(&self) -> u32 {
        *self
    }
}

/// An IPv6 address as four words in packet order, each as it loads from
/// the packet (network byte order in a native word). Compared word by word
/// (no `memcmp`, which BPF does not have).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Addr6(pub [u32; 4]);

impl core::hash::Hash for Addr6 {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // The words, as `eq` compares them.
        self.0.hash(state)
    }
}

impl PartialEq for Addr6 {
    #[inline(always)]
    fn eq(&self, o: &Self) -> bool {
        let (a, b) = (&self.0, &o.0);
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
    }
}

impl Eq for Addr6 {}

impl FlowAddr for Addr6 {
    #[inline(always)]
    fn before(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        if a[0] != b[0] {
            return a[0] < b[0];
        }
        if a[1] != b[1] {
            return a[1] < b[1];
        }
        if a[2] != b[2] {
            return a[2] < b[2];
        }
        a[3] < b[3]
    }
    #[inline(always)]
    fn fold(&self) -> u32 {
        let a = &self.0;
        a[0] ^ a[1].rotate_left(8) ^ a[2].rotate_left(16) ^ a[3].rotate_left(24)
    }
}

/// Conntrack key: the two endpoints in a canonical order (lower address
/// first; for equal addresses lower port first), so both directions of a
/// flow find the same entry. ICMP echo uses its identifier as both ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKeyOf<A> {
    /// Network byte order.
    pub addr_lo: A,
    pub addr_hi: A,
    /// Host byte order.
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: u8,
    pub _pad: u8,
    /// The conntrack zone (`-j CT --zone N` in the raw table; 0, the
    /// default zone, otherwise): the same tuple in two zones is two
    /// connections, as in the kernel. It took two of the three padding
    /// bytes the key had, which were always 0: the key's size and layout
    /// are unchanged, so the entries of an older netbeast stay valid
    /// across an upgrade as connections of zone 0, which they were.
    pub zone: u16,
}

/// The IPv4 conntrack key.
pub type CtKey = CtKeyOf<u32>;
/// The IPv6 conntrack key (`CT6_*` tables).
pub type CtKey6 = CtKeyOf<Addr6>;

/// One tracked connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntryOf<A> {
    /// The original direction (who sent the first packet), network order
    /// addresses, host order ports.
    pub orig_src: A,
    pub orig_dst: A,
    pub orig_sport: u16,
    pub orig_dport: u16,
    pub protocol: u8,
    /// `tcp_state::*` for TCP, 0 otherwise.
    pub tcp_state: u8,
    /// `ct_status::*` bits.
    pub status: u8,
    /// `ct_flags::*` bits: netbeast's own marks of the connection (in what
    /// was a padding byte, always 0 before, so pinned entries keep their
    /// meaning across an upgrade).
    pub flags: u8,
    /// bpf_ktime_get_ns() of the last packet (CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
    /// Packets and bytes, original direction then reply.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The reply direction as it appears on the wire (netfilter's reply
    /// tuple): the inverse of the original one unless translated. DNAT makes
    /// `reply_src:reply_sport` the new destination, SNAT makes
    /// `reply_dst:reply_dport` the new source.
    pub reply_src: A,
    pub reply_dst: A,
    pub reply_sport: u16,
    pub reply_dport: u16,
    /// The connection's mark (the kernel's ct->mark): 0 when it opens,
    /// set by `-j CONNMARK`, read by `-m connmark`. It fills what was the
    /// struct's tail padding, so neither family's entry grew.
    pub mark: u32,
}

/// An IPv4 connection.
pub type CtEntry = CtEntryOf<u32>;
/// An IPv6 connection.
pub type CtEntry6 = CtEntryOf<Addr6>;

/// `CtEntryOf::flags` bits.
pub mod ct_flags {
    /// A connection `-j SYNPROXY` replays to a server behind the router:
    /// its packets are translated by the shield (`synproxy::translate`).
    pub const PROXIED: u8 = 1;
}

pub mod ct_status {
    /// A packet in the reply direction has been seen: ESTABLISHED.
    pub const SEEN_REPLY: u8 = 1;
    /// Bits 1 and 2 are the FINs seen (kernel side).
    /// The destination is translated (DNAT, REDIRECT).
    pub const DST_NAT: u8 = 8;
    /// The source is translated (SNAT, MASQUERADE).
    pub const SRC_NAT: u8 = 16;
}

/// Entries of the index from a translated connection's other keys (its
/// reply tuple, and the half-translated tuple TC egress sees) to its
/// conntrack key. Two per translated connection at most; an LRU like the
/// conntrack tables.
pub const CT_NAT_INDEX_ENTRIES: u32 = 131072;
/// Ports tried, from the preferred one on, before a new connection needing
/// source port allocation is dropped (`stats::NAT_EXHAUSTED`).
pub const NAT_PORT_ATTEMPTS: u32 = 32;

/// TCP connection states, as far as conntrack-lite follows them.
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    /// One side sent FIN.
    pub const FIN_WAIT: u8 = 4;
    /// Both sides sent FIN.
    pub const TIME_WAIT: u8 = 5;
    /// RST seen.
    pub const CLOSE: u8 = 6;
    pub const NAMES: [&str; 7] = [
        "NONE",
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
    ];
}

/// Conntrack timeouts in seconds (netfilter's defaults unless set at
/// attach time), [`Config::conntrack`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtConfig {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp: u32,
    pub udp_stream: u32,
    pub icmp: u32,
    pub generic: u32,
}

impl CtConfig {
    /// The timeout of a connection in its current state, in seconds: one
    /// rule for the kernel's expiry and for `conntrack -L`.
    #[inline(always)]
    pub fn timeout_secs<A>(&self, e: &CtEntryOf<A>) -> u32 {
        const TCP: u8 = 6;
        const UDP: u8 = 17;
        const ICMP: u8 = 1;
        const ICMPV6: u8 = 58;
        match e.protocol {
            TCP => match e.tcp_state {
                tcp_state::SYN_SENT => self.tcp_syn_sent,
                tcp_state::SYN_RECV => self.tcp_syn_recv,
                tcp_state::FIN_WAIT => self.tcp_fin_wait,
                tcp_state::TIME_WAIT => self.tcp_time_wait,
                tcp_state::CLOSE => self.tcp_close,
                _ => self.tcp_established,
            },
            UDP if e.status & ct_status::SEEN_REPLY != 0 => self.udp_stream,
            UDP => self.udp,
            // nf_conntrack_icmpv6_timeout is the ICMP one's default (30 s).
            ICMP | ICMPV6 => self.icmp,
            _ => self.generic,
        }
    }

    /// nf_conntrack's defaults (`sysctl net.netfilter.nf_conntrack_*_timeout*`).
    pub const DEFAULT: CtConfig = CtConfig {
        tcp_syn_sent: 120,
        tcp_syn_recv: 60,
        tcp_established: 432_000,
        tcp_fin_wait: 120,
        tcp_time_wait: 120,
        tcp_close: 10,
        udp: 30,
        udp_stream: 120,
        icmp: 30,
        generic: 600,
    };
}

/// The `CONFIG` map's one value: the data plane's settings of one value
/// each, which had a single-entry map each before (`ROUTE_EPOCH`,
/// `CT_CONFIG`, `SYN_GUARD_COUNT`: a program may use at most 64 maps, and
/// the IPv4 XDP program had reached it). One lookup still reads each, as
/// before; the map is `BPF_F_MMAPABLE` and every writer writes its own
/// fields in place through the mapping (userspace: `loader::config`),
/// never the whole value with a map update, which would undo what another
/// writer (the daemon's route watcher, a command, the data plane's ICMP
/// budget) wrote in between.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The forwarding route cache's epoch and lease ([`route_cache`]'s
    /// `WATCH_EPOCH`, `USER_EPOCH`, `LEASE_UNTIL`).
    pub route_epoch: [u64; route_cache::EPOCH_WORDS as usize],
    /// The namespace-wide ICMP error budget, kept by the data plane.
    pub icmp_budget: IcmpBudget,
    /// Conntrack timeouts; all zero (never set): netfilter's defaults.
    pub conntrack: CtConfig,
    /// The namespace's ICMP rate limits, copied by userspace from its
    /// sysctls at every command.
    pub icmp_limits: IcmpLimits,
    /// How many ports `SYN_GUARD_PORTS` holds: a packet looks them up
    /// only while there is one.
    pub syn_guard_ports: u32,
    /// The limits of ip6tables REJECT's ICMPv6 errors, copied by
    /// userspace from the namespace's sysctls at every command, as
    /// [`icmp6_limit`] encodes them: [`ICMP6_NOT_LIMITED`], or
    /// `net.ipv6.icmp.ratelimit` (ms, the per-host limit) plus one, the
    /// namespace-wide budget then applying too ([`IcmpLimits`]': the
    /// kernel shares it). Was padding, so the value's layout, and the pins
    /// of earlier versions, stay; 0, as never written, is no limit, as
    /// all-zero `icmp_limits` are.
    pub icmp6_limit: u32,
}

/// `Config::icmp6_limit` when REJECT's ICMPv6 errors are not limited at
/// all (as `icmp6_send` limits no type out of `net.ipv6.icmp.ratemask`),
/// or the limits were never written.
pub const ICMP6_NOT_LIMITED: u32 = 0;

/// `Config::icmp6_limit` for `net.ipv6.icmp.ratelimit` `ratelimit_ms`,
/// `None` when `net.ipv6.icmp.ratemask` leaves out type 1 (destination
/// unreachable, the one REJECT sends). A ratelimit of `u32::MAX` ms (no
/// int of the kernel's) counts as one less.
pub const fn icmp6_limit(ratelimit_ms: Option<u32>) -> u32 {
    match ratelimit_ms {
        None => ICMP6_NOT_LIMITED,
        Some(ms) => ms.saturating_add(1),
    }
}

/// The per-host limit (ms) of `Config::icmp6_limit` `limit`; `None`: not
/// limited.
#[inline(always)]
pub const fn icmp6_ratelimit_ms(limit: u32) -> Option<u32> {
    if limit == ICMP6_NOT_LIMITED {
        None
    } else {
        Some(limit - 1)
    }
}

/// The namespace's limits on the ICMP errors REJECT sends, as the kernel's
/// `icmp_send` applies them (IPv4): `net.ipv4.icmp_ratelimit` (ms; a token
/// bucket per destination host, [`ICMP_RATE_BURST`] periods deep) for the
/// types in `icmp_ratemask`, and `icmp_msgs_per_sec` / `icmp_msgs_burst`
/// for all of them together. All zero (never written): no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpLimits {
    pub ratelimit_ms: u32,
    pub ratemask: u32,
    pub msgs_per_sec: u32,
    pub msgs_burst: u32,
}

/// The namespace-wide ICMP error budget (the kernel's
/// `icmp_global_credit` and `icmp_global_stamp`): credits, and when they
/// were last added (ns, `bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpBudget {
    pub credit: i64,
    pub stamp: u64,
}

/// How many `icmp_ratelimit` periods a destination's bucket holds (the
/// kernel's `XRLIM_BURST_FACTOR`): a burst of 6 errors, then one a period.
pub const ICMP_RATE_BURST: u64 = 6;

/// Destination hosts whose ICMPv6 error budget is kept (`ICMP6_HOSTS`,
/// an LRU keyed by the full address, as the kernel's IPv6 `inet_peer`).
pub const ICMP6_HOST_ENTRIES: u32 = 65_536;

/// Destination hosts whose ICMP error budget is kept (`ICMP_HOSTS`, an
/// LRU: the least recently answered are forgotten, and start with a full
/// bucket again, as an evicted `inet_peer` does).
pub const ICMP_HOST_ENTRIES: u32 = 65_536;

/// Entries of the table for connections that have not seen a reply yet. A
/// SYN flood fills this one, and only this one: established connections
/// live in their own table and are never pushed out by it.
pub const CT_UNREPLIED_ENTRIES: u32 = 65536;
/// Entries of the table for connections that have seen a reply.
pub const CT_ESTABLISHED_ENTRIES: u32 = 262144;
/// The most entries `attach --ct-unreplied-size` or `--ct-established-size`
/// may give one IPv4 conntrack table.
pub const MAX_CT_TABLE_ENTRIES: u32 = 1 << 24;
/// A `-m connlimit` count can never exceed this: every connection it
/// counts is an entry of one of the two IPv4 conntrack tables (at most
/// [`MAX_CT_TABLE_ENTRIES`] each), plus the packet's own when it has none.
/// A limit at or above it is never passed, as iptables' limits far above
/// `nf_conntrack_max` are not.
pub const CONNLIMIT_UNREACHABLE: u32 = 2 * MAX_CT_TABLE_ENTRIES + 1;
/// The IPv6 tables' sizes (`CT6_UNREPLIED`, `CT6_ESTABLISHED`), split as
/// the IPv4 ones are. A quarter of theirs: an IPv6 entry and key take 168
/// bytes against 88, and dual-stack hosts still carry most connections
/// over IPv4; about 14 MiB preallocated for both.
pub const CT6_UNREPLIED_ENTRIES: u32 = 16384;
pub const CT6_ESTABLISHED_ENTRIES: u32 = 65536;
/// `CT6_NAT_INDEX`: the IPv6 connections' [`CT_NAT_INDEX_ENTRIES`], two
/// per translated connection at most, in proportion to the IPv6 tables.
pub const CT6_NAT_INDEX_ENTRIES: u32 = 32768;
/// Connections a FORWARD `-j SYNPROXY` replays at once (`PROXIED`, an LRU
/// table: a connection evicted from it is passed on untranslated, which its
/// ends then reset).
pub const PROXIED_CONNECTIONS: u32 = 65_536;
/// Translated local sockets whose original destination nat OUTPUT
/// remembers (`SOCK_NAT`, `SOCK_NAT6`; and `SOCK_MARK`'s sockets): LRU
/// tables, entries of closed sockets age out.
pub const SOCK_NAT_ENTRIES: u32 = 65536;

/// The default sizes of the keyed state tables above (conntrack, `-m
/// recent`, connlimit, nat OUTPUT's sockets, REJECT's ICMP hosts, the
/// SYN proxy, ipset members) are their largest too for a data plane sized
/// from memory (`attach --table-memory`): a smaller budget divides them,
/// down to one part in this many (`loader::sizing`).
pub const TABLE_SHRINK_MAX: u32 = 64;

/// The local address cache (`LOCAL_ADDR_CACHE`): an array of buckets of
/// `LOCAL_ADDR_WAYS` addresses (network byte order), the bucket chosen by
/// [`local_addr_bucket`]. An array lookup and four compares instead of a
/// hash table's lookup. Addresses that do not fit in their bucket are left
/// out: the FIB lookup still finds them local.
pub const LOCAL_ADDR_BUCKET_BITS: u32 = 10;
pub const LOCAL_ADDR_BUCKETS: u32 = 1 << LOCAL_ADDR_BUCKET_BITS;
pub const LOCAL_ADDR_WAYS: usize = 4;
/// A free way of the local address cache: the limited broadcast address,
/// which the data plane treats as local anyway.
pub const LOCAL_ADDR_FREE: u32 = u32::MAX;

/// The bucket of address `addr` (network byte order) in the local address
/// cache: a multiplicative hash.
#[inline(always)]
pub const fn local_addr_bucket(addr: u32) -> u32 {
    addr.wrapping_mul(0x9e37_79b1) >> (32 - LOCAL_ADDR_BUCKET_BITS)
}

/// The IPv6 local address cache (`LOCAL_ADDR6_CACHE`), as the IPv4 one:
/// buckets of `LOCAL_ADDR6_WAYS` addresses (four words each, as they sit
/// in the packet), the bucket chosen by [`local_addr6_bucket`]. It spares
/// the IPv6 program its FIB lookup for the host's own global and
/// unique-local addresses; link-local ones, which belong to one interface,
/// and addresses that do not fit in their bucket are left to the FIB.
pub const LOCAL_ADDR6_BUCKET_BITS: u32 = 8;
pub const LOCAL_ADDR6_BUCKETS: u32 = 1 << LOCAL_ADDR6_BUCKET_BITS;
pub const LOCAL_ADDR6_WAYS: usize = 2;

/// The bucket of the IPv6 address `words` (the packet's four words) in
/// the IPv6 local address cache. A free way is `::`, never a destination
/// the cache answers for.
#[inline(always)]
pub const fn local_addr6_bucket(words: [u32; 4]) -> u32 {
    let h =
        words[0] ^ words[1].rotate_left(8) ^ words[2].rotate_left(16) ^ words[3].rotate_left(24);
    h.wrapping_mul(0x9e37_79b1) >> (32 - LOCAL_ADDR6_BUCKET_BITS)
}

/// Packet and byte counter of one rule (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Index of a chain header in `CHAINS`.
#[inline(always)]
pub const fn chain_index(generation: u32, chain: u32) -> u32 {
    generation * chain::COUNT as u32 + chain
}

/// Index in `RULES` of slot `slot` of the chain whose slots start at
/// `rule_base` (its `ChainConfig::rule_base`) in `generation`.
#[inline(always)]
pub const fn rule_index(capacity: Capacity, generation: u32, rule_base: u32, slot: u32) -> u32 {
    generation * capacity.rules() + rule_base + slot
}

/// Index in `COUNTERS` of counter `n` (a chain's `counter_base` plus the
/// slot's `RuleAction::counter`, or its `policy_counter`) of `generation`.
#[inline(always)]
pub const fn counter_index(capacity: Capacity, generation: u32, n: u32) -> u32 {
    generation * capacity.counters() + n
}

/// Where the counters of a ruleset sit in its generation's share of
/// `COUNTERS`: each built-in chain's rules (`builtin_rules[c]` of chain
/// `c`, in `chain::*` order) then its policy, chain after chain; then the
/// rules of every user-defined chain. Returns each chain's
/// `(counter_base, policy_counter)` and the user chains' base, or `None`
/// when `user_rules` more do not fit [`MAX_RULESET_COUNTERS`].
pub const fn counter_layout(
    builtin_rules: &[u32; chain::COUNT],
    user_rules: u32,
) -> Option<([(u32, u32); chain::COUNT], u32)> {
    let mut out = [(0u32, 0u32); chain::COUNT];
    let mut next = 0u64;
    let mut c = 0;
    while c < chain::COUNT {
        out[c] = (next as u32, (next + builtin_rules[c] as u64) as u32);
        next += builtin_rules[c] as u64 + 1;
        c += 1;
    }
    if next + user_rules as u64 > MAX_RULESET_COUNTERS as u64 {
        return None;
    }
    Some((out, next as u32))
}

/// `BPF_F_NO_PREALLOC`: a hash map whose entries are allocated as they are
/// added, so that its capacity costs only its bucket array until it holds
/// something. For every hash map only userspace fills (interfaces, local
/// addresses, MAC classes, guarded ports, ipsets): the data plane only
/// looks them up, which costs the same either way.
pub const MAP_NO_PREALLOC: u32 = 1;

/// Map sizes, used by the kernel declarations and checked by userspace.
pub mod size {
    use super::*;
    pub const CHAINS: u32 = (GENERATIONS * chain::COUNT) as u32;
    pub const RULES: u32 = GENERATIONS as u32 * MAX_RULESET_SLOTS;
    pub const COUNTERS: u32 = GENERATIONS as u32 * MAX_RULESET_COUNTERS;
    /// Every key field's class ids, for every chain and generation.
    pub const KEY_CLASSES: u32 = GENERATIONS as u32 * MAX_KEY_CHUNKS;
    /// Routes of the local routing table (`ADDR_TYPES`).
    pub const ADDR_TYPES: u32 = 4096;
    /// IPv6 routes of the local and main routing tables (`ADDR_TYPES6`).
    pub const ADDR_TYPES6: u32 = 4096;
    pub const CLASS_HEADERS: u32 = GENERATIONS as u32 * MAX_CLASSES;
    pub const CLASS_WORD_CHUNKS: u32 =
        GENERATIONS as u32 * MAX_CLASS_WORDS / super::CLASS_WORD_CHUNK as u32;
    /// Address prefixes: one per rule and address field (source and
    /// destination, and an IPv6 chain's three more words of each) plus the
    /// default per field, for every chain and generation. A cap: the trie
    /// allocates its entries as they come.
    pub const ADDR_PREFIXES: u32 = GENERATIONS as u32
        * super::field::ADDR_FIELDS.len() as u32
        * (MAX_RULESET_SLOTS + super::chain::COUNT as u32);
    pub const IFACES: u32 = 16384;
    /// Slots of `IFACE_GUARDS`: interfaces with a larger ifindex are not
    /// checked for frames the kernel would discard (`netbeast attach` says
    /// so when it meets one).
    pub const IFACE_GUARDS: u32 = 4096;
    pub const LOCAL_ADDRS: u32 = 4096;
    pub const MACS: u32 = 65536;
    pub const NAT_TARGETS: u32 = GENERATIONS as u32 * MAX_NAT_TARGETS;
    /// `NAT6_ADDRS`: one entry per `NAT_TARGETS` entry.
    pub const NAT6_ADDRS: u32 = NAT_TARGETS;
    pub const LOG_TARGETS: u32 = GENERATIONS as u32 * super::MAX_LOG_TARGETS;
    pub const MARK_TARGETS: u32 = GENERATIONS as u32 * super::MAX_MARK_TARGETS;
    pub const CONNMARK_TARGETS: u32 = GENERATIONS as u32 * super::MAX_CONNMARK_TARGETS;
    pub const ADDR_HASH: u32 = GENERATIONS as u32 * ADDR_HASH_BUCKETS;
    pub const GUARDS: u32 = GENERATIONS as u32 * MAX_GUARDS;
    /// `GUARD_STATE` words: the state slots (see [`super::STATE_SLOTS`]).
    pub const GUARD_STATE: u32 = super::STATE_SLOTS;
    /// Ports `attach --syn-flood-guard` may protect (`SYN_GUARD_PORTS`):
    /// every TCP port.
    pub const SYN_GUARD_PORTS: u32 = 65536;

    /// The maps a [`Capacity`] sizes, each with its entries at `capacity`
    /// (the declarations above are [`Capacity::FULL`]'s).
    pub const fn by_capacity(capacity: Capacity) -> [(&'static str, u32); 10] {
        let g = GENERATIONS as u32;
        [
            ("RULES", g * capacity.rules()),
            ("COUNTERS", g * capacity.counters()),
            ("CLASS_HEADERS", g * capacity.classes()),
            (
                "CLASS_WORDS",
                g * capacity.class_words() / super::CLASS_WORD_CHUNK as u32,
            ),
            ("GUARDS", g * capacity.guards()),
            // One generation's: the search of one packet.
            ("GUARD_MEMO", capacity.guards()),
            ("NAT_TARGETS", g * capacity.nat_targets()),
            ("NAT6_ADDRS", g * capacity.nat_targets()),
            ("KEY_CLASSES", g * capacity.key_chunks()),
            // The rules' state, not a generation's.
            ("HASHLIMIT", capacity.hashlimit_sets()),
        ]
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), contain only integers and have no
    // padding (checked by the layout tests).
    unsafe impl aya::Pod for ChainConfig {}
    unsafe impl aya::Pod for RuleAction {}
    unsafe impl aya::Pod for MarkTarget {}
    unsafe impl aya::Pod for NatAddrs6 {}
    unsafe impl aya::Pod for ConnmarkTarget {}
    unsafe impl aya::Pod for ClassVector {}
    unsafe impl aya::Pod for ClassHeader {}
    unsafe impl aya::Pod for AddrSlot {}
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for IfaceKey {}
    unsafe impl aya::Pod for MacKey {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for CtKey6 {}
    unsafe impl aya::Pod for CtEntry6 {}
    unsafe impl aya::Pod for CtConfig {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for NatTarget {}
    unsafe impl aya::Pod for Guard {}
    unsafe impl aya::Pod for ConnlimitKey {}
    unsafe impl aya::Pod for ConnlimitKey6 {}
    unsafe impl aya::Pod for ConnlimitList6 {}
    unsafe impl aya::Pod for HashlimitKey {}
    unsafe impl aya::Pod for RecentKey {}
    unsafe impl aya::Pod for IpsetHeader {}
    unsafe impl aya::Pod for IpsetKey {}
    unsafe impl aya::Pod for IpsetValue {}
    unsafe impl aya::Pod for RecentEntry {}
    unsafe impl aya::Pod for HashlimitBucket {}
    unsafe impl aya::Pod for HashlimitSet {}
    unsafe impl aya::Pod for HashlimitTable {}
    unsafe impl aya::Pod for ConnlimitList {}
    unsafe impl aya::Pod for LogTarget {}
    unsafe impl aya::Pod for LogEvent {}
    unsafe impl aya::Pod for TraceKeys {}
    unsafe impl aya::Pod for TraceEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(
            size_of::<ChainConfig>(),
            16 + 4 * field::COUNT
                + field::ADDR_FIELDS.len() * MAX_ADDR_HASH_LENGTHS
                + 4
                + 16
                + 8 * field::COUNT
                + 4
        );
        assert_eq!(size_of::<AddrSlot>(), 16);
        // Chain numbers fit the key's 5 bits (`addr_hash_base`).
        const { assert!(chain::COUNT <= 32) };
        assert_eq!(size_of::<RuleAction>(), 16);
        assert_eq!(size_of::<ClassVector>(), 8 * (SUMMARY_WORDS + RULE_WORDS));
        assert_eq!(size_of::<AddrKey>(), 7);
        assert_eq!(size_of::<IfaceKey>(), 8);
        assert_eq!(size_of::<MacKey>(), 8);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<ConnlimitKey>(), 8);
        // A guard's state slot fits `ConnlimitKey::guard`.
        const { assert!(STATE_SLOTS <= 1 << 16) };
        // The zone sits where padding that was always 0 sat: an older
        // key's bytes read as the same tuple in zone 0 (see `CtKeyOf::zone`).
        assert_eq!(core::mem::offset_of!(CtKey, zone), 14);
        assert_eq!(core::mem::offset_of!(CtKey6, zone), 38);
        assert_eq!(size_of::<IpsetHeader>(), 24);
        assert_eq!(size_of::<IpsetKey>(), 24);
        assert_eq!(size_of::<IpsetValue>(), 8);
        assert_eq!(size_of::<CtEntry>(), 72);
        // The flags sit where a padding byte that was always 0 sat.
        assert_eq!(core::mem::offset_of!(CtEntry, flags), 15);
        assert_eq!(core::mem::offset_of!(CtEntry6, flags), 39);
        assert_eq!(size_of::<CtKey6>(), 40);
        assert_eq!(size_of::<CtEntry6>(), 120);
        assert_eq!(size_of::<CtConfig>(), 40);
        assert_eq!(stats::NAMES.len(), stats::COUNT as usize);
        assert_eq!(stats::REJECT_RATE_LIMITED + 1, stats::COUNT);
        assert_eq!(size_of::<IcmpLimits>(), 16);
        assert_eq!(size_of::<IcmpBudget>(), 16);
        assert_eq!(icmp6_limit(None), ICMP6_NOT_LIMITED);
        assert_eq!(icmp6_ratelimit_ms(icmp6_limit(Some(0))), Some(0));
        assert_eq!(icmp6_ratelimit_ms(icmp6_limit(Some(1000))), Some(1000));
        assert_eq!(icmp6_ratelimit_ms(0), None);
        assert_eq!(
            size_of::<Config>(),
            8 * route_cache::EPOCH_WORDS as usize + 16 + 40 + 16 + 8
        );
        assert_eq!(size_of::<HashlimitKey>(), 8 * HASHLIMIT_KEY_WORDS);
        assert_eq!(size_of::<HashlimitSlot>(), 80);
        assert_eq!(size_of::<HashlimitSet>(), 80 * HASHLIMIT_WAYS);
        assert_eq!(HASHLIMIT_SETS.count_ones(), 1);
        // Guard kinds: one number each (three branches once took 11).
        {
            use guard_kind::*;
            let kinds = [
                STATISTIC_RANDOM,
                STATISTIC_NTH,
                REQUIRE,
                LIMIT,
                CONNLIMIT,
                HASHLIMIT,
                RECENT,
                CT_TUPLE,
                CT_PROTO_EXPIRE,
                TCP_OPTION,
                SET,
                IPV6_HEADER,
                IPV6_RT,
                IPV6_FRAG,
                ADDR_MASK,
                MARK,
                SCTP_CHUNKS,
            ];
            for (i, a) in kinds.iter().enumerate() {
                assert!(*a != 0, "guard kind 0 is no guard");
                for b in &kinds[i + 1..] {
                    assert_ne!(a, b, "two guard kinds share the number {a}");
                }
            }
        }
        // The ACTIVE word's flags: one bit each, below the commit's
        // sequence number (two branches once took the same bit).
        let flags = [
            ACTIVE_TRACKING,
            ACTIVE_NAT,
            ACTIVE_TRANSLATIONS,
            ACTIVE_TCP_FLAGS,
            ACTIVE_LB,
            ACTIVE_TRACE,
            ACTIVE_TCP_OPTIONS,
            ACTIVE_IPV6,
            ACTIVE_RAW,
            ACTIVE_IPV6_HEADERS,
            ACTIVE_SCTP_CHUNKS,
            ACTIVE_MANGLE,
        ];
        let mut seen = 1u32; // bit 0: the generation
        for flag in flags {
            assert!(flag.is_power_of_two() && flag < 1 << 16, "{flag:#x}");
            assert_eq!(seen & flag, 0, "ACTIVE bit {flag:#x} taken twice");
            seen |= flag;
        }
        assert_eq!(size_of::<TraceKeys>(), 56);
        assert_eq!(
            size_of::<TraceEvent>(),
            16 + 56 + 4 * 6 + 4 * MAX_TRACE_HITS + 4 * 6
        );
        assert_eq!(size_of::<LogTarget>(), 40);
        assert_eq!(size_of::<LogEvent>(), 8 + 40 + 40 + LOG_CAPTURE_BYTES);
        assert_eq!(
            core::mem::offset_of!(LogEvent, frame),
            LOG_SHORT_EVENT_BYTES - LOG_SHORT_CAPTURE_BYTES
        );
        assert_eq!(LOG_SHORT_EVENT_BYTES % 8, 0);
        // Every code of the table is known; the next one is not.
        for code in 0..target::COUNT {
            assert_ne!(target::flags(code) & target::flag::KNOWN, 0);
        }
        assert_eq!(target::flags(target::COUNT), 0);
        // A guard entry is never 0 (0 means "not checked"), whatever the MAC.
        assert_ne!(iface_guard::entry([0; 6], false), 0);
        assert_eq!(
            iface_guard::entry([1, 2, 3, 4, 5, 6], true) & iface_guard::MAC_MASK,
            u64::from_le_bytes([1, 2, 3, 4, 5, 6, 0, 0])
        );
        assert_eq!(size_of::<NatTarget>(), 20);
        assert_eq!(size_of::<NatAddrs6>(), 32);
        assert_eq!(size_of::<MarkTarget>(), 8);
        assert_eq!(size_of::<ConnmarkTarget>(), 16);
        assert_eq!(size_of::<Guard>(), 40);
        const { assert!(SUMMARY_WORDS * 64 == RULE_WORDS) };
        // Every share the smallest capacity takes is whole: the class words
        // in whole chunks, the guards and translations at least one each.
        for c in [Capacity::SMALLEST, Capacity::FULL] {
            assert_eq!(c.class_words() % CLASS_WORD_CHUNK as u32, 0);
            assert!(c.guards() > 0 && c.nat_targets() > 0);
            assert_eq!(Capacity::of_slots(c.slots()), Some(c));
        }
        assert_eq!(Capacity::SMALLEST.slots(), 8192);
        // The counters' pool is no power of two: its shares are exact too.
        assert_eq!(Capacity::SMALLEST.counters() << 6, MAX_RULESET_COUNTERS);
        assert_eq!(Capacity::of_slots(Capacity::SMALLEST.slots() / 2), None);
        assert_eq!(Capacity::of_slots(Capacity::SMALLEST.slots() + 1), None);
        assert_eq!(Capacity::of_slots(2 * MAX_RULESET_SLOTS), None);
        assert_eq!(Capacity::FULL.classes(), MAX_CLASSES);
        assert_eq!(Capacity::SMALLEST.key_chunks() << 6, MAX_KEY_CHUNKS);
        assert!(Capacity::SMALLEST.hashlimit_sets().is_power_of_two());
        assert_eq!(size_of::<ClassHeader>(), 32);
        const {
            assert!(
                SUMMARY_WORDS <= 64,
                "ClassHeader::blocks has a bit per block"
            )
        };
        const { assert!(CLASS_WORD_CHUNK % 2 == 0, "a summary pair fits one entry") };
        assert_eq!(MAX_CLASS_WORDS as usize % CLASS_WORD_CHUNK, 0);
        // The pools hold a whole chain, and the last of each is in its map.
        const { assert!(MAX_RULESET_SLOTS as usize >= MAX_RULES_PER_CHAIN) };
        // At every capacity, the last entry of the last generation is the
        // last of the map the capacity sizes.
        for shift in 0..=CAPACITY_SHRINK_MAX.trailing_zeros() {
            let c = Capacity { shift };
            let entries = |name: &str| {
                size::by_capacity(c)
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, e)| *e)
                    .unwrap()
            };
            let last = GENERATIONS as u32 - 1;
            assert_eq!(rule_index(c, last, c.rules() - 1, 0), entries("RULES") - 1);
            assert_eq!(
                counter_index(c, last, c.counters() - 1),
                entries("COUNTERS") - 1
            );
            assert_eq!(guard_index(c, last, c.guards() - 1), entries("GUARDS") - 1);
            assert_eq!(
                nat_target_index(c, last, c.nat_targets() - 1),
                entries("NAT_TARGETS") - 1
            );
            assert_eq!(
                last * c.key_chunks() + c.key_chunks() - 1,
                entries("KEY_CLASSES") - 1
            );
        }
        assert_eq!(size::by_capacity(Capacity::FULL)[0], ("RULES", size::RULES));
        // Counters: each chain's rules then its policy, then user chains'.
        let mut rules = [0u32; chain::COUNT];
        (rules[0], rules[2]) = (2, 1);
        let (bases, user) = counter_layout(&rules, 5).unwrap();
        assert_eq!(bases[0], (0, 2));
        assert_eq!(bases[1], (3, 3));
        assert_eq!(bases[2], (4, 5));
        // Three rules, then every chain's policy.
        assert_eq!(user, 3 + chain::COUNT as u32);
        let full = [0u32; chain::COUNT];
        let room = MAX_RULESET_COUNTERS - chain::COUNT as u32;
        assert!(counter_layout(&full, room).is_some());
        assert!(counter_layout(&full, room + 1).is_none());
        // Dense blocks.
        let h = ClassHeader {
            first: 3,
            last: 130,
            ..Default::default()
        };
        assert_eq!(h.dense_block(0), u64::MAX << 3);
        assert_eq!(h.dense_block(1), u64::MAX);
        assert_eq!(h.dense_block(2), 0b111);
        assert_eq!(h.dense_block(3), 0);
    }
}

/// The forwarding benchmarks' redirect floor (`netbeast-ebpf`
/// redirect_floor.rs): the layout of its one configuration entry.
pub mod redirect_floor {
    /// The interface to redirect to, a little-endian u32.
    pub const IFINDEX: usize = 0;
    /// The MAC addresses to write: the next hop's, then the interface's.
    pub const DST_MAC: usize = 4;
    pub const SRC_MAC: usize = 10;
    pub const CONFIG_BYTES: usize = 16;
}

/// The benchmark's packet generator (`netbeast-ebpf` generator.rs): indexes
/// of its configuration array, which `netbeast bench` writes before a run.
/// Flow `f` is sent from address `FIRST_SOURCE + f % ADDRESSES`, port
/// `FIRST_PORT + f / ADDRESSES`.
pub mod generator {
    /// Flows to spread frames over; 0 or 1 sends the template unchanged.
    pub const FLOWS: u32 = 0;
    /// First source address, host byte order.
    pub const FIRST_SOURCE: u32 = 1;
    pub const FIRST_PORT: u32 = 2;
    /// One's-complement sum of the template's IPv4 header without its
    /// checksum and source address: the checksum of each flow's header is
    /// this plus its source address, folded.
    pub const HEADER_SUM: u32 = 3;
    /// Non-zero: the template is IPv6 (`HEADER_BYTES6`), and `HEADER_SUM`
    /// is the one's-complement sum of its UDP pseudo-header and header
    /// without the checksum, the source address' last 32 bits and the
    /// source port: each flow's UDP checksum is this plus those, folded
    /// (IPv6 has no header checksum, and UDP's is mandatory).
    pub const IPV6: u32 = 4;
    pub const CONFIG_ENTRIES: u32 = 5;
    /// Bytes of the template the generator copies over every frame before
    /// sending it: Ethernet, IPv4 without options, UDP. A receiver may have
    /// rewritten them in the recycled page (a router its MACs and TTL, NAT
    /// the destination).
    pub const HEADER_BYTES: usize = 14 + 20 + 8;
    /// The same for an IPv6 template: Ethernet, IPv6, UDP.
    pub const HEADER_BYTES6: usize = 14 + 40 + 8;
    /// Size of the template map's value: the longer template rounded up to
    /// words.
    pub const TEMPLATE_WORDS: usize = HEADER_BYTES6.div_ceil(8);
    /// Source addresses per source port (fits a /24 without its network
    /// and broadcast addresses).
    pub const ADDRESSES: u32 = 250;
    /// Most flows: `ADDRESSES` × 4,096 source ports (1,024,000: issue 20's
    /// million flows fit, with ports 1024..=5119).
    pub const MAX_FLOWS: u32 = ADDRESSES * 4096;
    /// The SYN generator (`bench --scenario synflood`): the bytes of its
    /// template, Ethernet, IPv4 without options and a TCP SYN with 20
    /// bytes of options (MSS, SACK permitted, timestamps, window scale),
    /// copied over every frame (a shield rewrites the page into its
    /// SYN-ACK).
    pub const SYN_BYTES: usize = 14 + 20 + 40;
    pub const SYN_TEMPLATE_WORDS: usize = SYN_BYTES.div_ceil(8);
    /// Its configuration beside `FLOWS`, `FIRST_SOURCE`, `FIRST_PORT` and
    /// `HEADER_SUM`: the one's-complement sum of the TCP pseudo-header and
    /// header without the checksum, source address and source port.
    pub const TCP_SUM: u32 = 4;
    pub const SYN_CONFIG_ENTRIES: u32 = 5;
    /// Where each generator writes a flow's fields, from the frame's start.
    pub const IP_CHECKSUM: usize = 14 + 10;
    pub const IP_SOURCE: usize = 14 + 12;
    pub const UDP_SOURCE_PORT: usize = 14 + 20;
    /// The last 32 bits of an IPv6 source address.
    pub const IP6_SOURCE_LOW: usize = 14 + 8 + 12;
    pub const UDP6_SOURCE_PORT: usize = 14 + 40;
    pub const UDP6_CHECKSUM: usize = 14 + 40 + 6;
    pub const TCP_SOURCE_PORT: usize = 14 + 20;
    pub const TCP_CHECKSUM: usize = 14 + 20 + 16;
    /// The fan-out generator (`bench --generator fanout`): entries of its
    /// devmap, all the same veth, so every frame injected into its own
    /// veth pair leaves the generator's port as this many XDP frames.
    pub const FANOUT: u32 = 64;
}

/// `netbeast lb` services (DESIGN §10): a service map keyed by VIP, port and
/// protocol; per service a lookup table of backend ids (Maglev for the hash
/// scheduler, a ring for round-robin), in two generations switched by one
/// write of the service's entry; backends by stable id.
pub mod lb {
    /// Services one namespace may define (slots of the table maps).
    pub const MAX_SERVICES: u32 = 32;
    /// Backends one service may hold (ids `0..MAX_BACKENDS`).
    pub const MAX_BACKENDS: u32 = 1024;
    /// Entries of one lookup table slot: room for the Maglev table of
    /// `MAX_BACKENDS` backends (the smallest prime ≥ 100 × 1,024 is
    /// 102,407).
    pub const TABLE_CAPACITY: u32 = 131_072;
    /// Table entries per array element of `LB_TABLES`: fewer, larger writes
    /// (a whole table is at most 64 writes of 4 KiB; with chunks of 256 a
    /// change at 1,000 backends took 2–3 times longer, mostly syscalls).
    pub const TABLE_CHUNK: usize = 2048;
    pub const CHUNKS_PER_TABLE: u32 = TABLE_CAPACITY / TABLE_CHUNK as u32;
    /// A table entry that names no backend (never written by userspace for
    /// a live table; the kernel leaves such a connection alone).
    pub const NO_BACKEND: u16 = u16::MAX;

    /// How a service picks a table entry for a new connection.
    pub mod pick {
        /// The hash of the connection's 5-tuple (Maglev, consistent).
        pub const HASH: u32 = 0;
        /// A random entry (weighted by the table's shares).
        pub const RANDOM: u32 = 1;
        /// The next entry of a ring, by one atomic counter per service.
        pub const COUNTER: u32 = 2;
    }

    /// `LB_SERVICES` key: the service's virtual address as it sits in the
    /// packet (network byte order), its port (host byte order, as the
    /// parser's keys and conntrack hold ports) and its IP protocol.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ServiceKey {
        pub vip: u32,
        pub port: u16,
        pub protocol: u8,
        pub _pad: u8,
    }

    /// `LB_SERVICES` value. `generation` selects which of the slot's two
    /// tables is live; userspace rewrites the other one and then this whole
    /// value (one map update, atomic for the kernel's reader).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Service {
        pub slot: u32,
        pub generation: u32,
        /// Live entries of the table (≤ `TABLE_CAPACITY`); 0: no backend
        /// at all, connections to the VIP are left alone.
        pub table_size: u32,
        /// `pick::*`.
        pub pick: u32,
    }

    /// `LB_BACKENDS` value, at `backend_index(slot, id)`: the address as it
    /// sits in the packet, the port in host byte order.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Backend {
        pub addr: u32,
        pub port: u16,
        pub _pad: u16,
    }

    pub const TABLE_CHUNKS: u32 = MAX_SERVICES * 2 * CHUNKS_PER_TABLE;
    pub const BACKENDS: u32 = MAX_SERVICES * MAX_BACKENDS;

    /// `LB_TABLES` index of the chunk holding entry `entry` of a slot's
    /// generation.
    #[inline(always)]
    pub fn table_chunk(slot: u32, generation: u32, entry: u32) -> u32 {
        (slot * 2 + (generation & 1)) * CHUNKS_PER_TABLE + entry / TABLE_CHUNK as u32
    }

    /// `LB_BACKENDS` / `LB_PICKS` index of backend `id` of a slot.
    #[inline(always)]
    pub fn backend_index(slot: u32, id: u32) -> u32 {
        slot * MAX_BACKENDS + id
    }

    /// The hash of a connection's 5-tuple (addresses as they sit in the
    /// packet, ports in host byte order) that picks its Maglev entry. Every netbeast computes
    /// the same one, so boxes with the same services behind ECMP send a flow
    /// to the same backend with no shared state.
    #[inline(always)]
    pub fn flow_hash(src: u32, dst: u32, sport: u16, dport: u16, protocol: u8) -> u32 {
        // murmur3's finalizer over the tuple folded into 64 bits: cheap,
        // and every input bit moves every output bit.
        let mut h = (src as u64) << 32 | dst as u64;
        h ^= ((sport as u64) << 24 | (dport as u64) << 8 | protocol as u64).rotate_left(17);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h as u32
    }

    #[cfg(feature = "user")]
    mod user {
        use super::*;
        // SAFETY: repr(C), integers only, no padding (layout test below).
        unsafe impl aya::Pod for ServiceKey {}
        unsafe impl aya::Pod for Service {}
        unsafe impl aya::Pod for Backend {}
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use core::mem::size_of;

        #[test]
        fn layout() {
            assert_eq!(size_of::<ServiceKey>(), 8);
            assert_eq!(size_of::<Service>(), 16);
            assert_eq!(size_of::<Backend>(), 8);
            assert_eq!(TABLE_CAPACITY % TABLE_CHUNK as u32, 0);
            // The largest Maglev table fits a slot.
            assert!(100 * MAX_BACKENDS < TABLE_CAPACITY);
        }
    }
}
