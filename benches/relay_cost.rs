//! What cascading costs one shard's core (issue 22, "Relay cost"), in memory, side by side in one
//! run: per packet of one speaker,
//!
//! - `seal`, `open`: the relay link's AES-256-GCM alone (write + seal a 120-octet RTP packet as
//!   a media message, as `Link::send` does; open + parse one);
//! - `local/N`: plain forwarding, `Sfu::handle_datagram` of the speaker's SRTP packet fanned out
//!   to N local consumers (decrypt once; per consumer rewrite, encrypt, egress);
//! - `out/L/N`: the same on a node whose room has links to L other nodes (each accepted packet
//!   is also sealed once per link and handed to `Egress::send_to`);
//! - `in/N`: `Sfu::on_link_datagram` of a relayed packet (open, replay check, remote producer
//!   lookup) fanned out to N local consumers.
//!
//! The cores and clients are those of the tests (tests/common/loopback.rs, cascade.rs: real
//! ICE, DTLS, SRTP, links added as the control plane does). Each round prepares a batch of
//! `--packets` datagrams per case (SRTP by the speaker's client; for `in`, relayed by the
//! speaker's node: not timed) and times the core over the batch; the cases take turns round by
//! round (the starting case rotates), so that the ratios compare the same moments of a shared
//! machine. A warm-up round is not recorded. Every timed batch runs inside the counting
//! allocator of tests/common/counting_alloc.rs and must allocate nothing.
//!
//! ```sh
//! cargo bench --bench relay_cost -- [--rounds 21] [--packets 10000] [--only out/]
//! # instructions of one case (deterministic; only the last batch is counted):
//! cargo bench --bench relay_cost --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   --toggle-collect='relay_cost::counted' \
//!   target/release/deps/relay_cost-<hash> --instructions out/4/10 --packets 5000
//! ```

#[path = "../tests/common/cascade.rs"]
mod cascade;
#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;
#[path = "../tests/common/loopback.rs"]
mod loopback;

use std::hint::black_box;
use std::time::Instant;

use cascade::{addr, link_id, link_key, Mesh, PORT};
use choir::wire::relay::payload::Payload;
use choir::wire::relay::{LinkKey, Receiver, Sender, HEADER_LEN};
use counting_alloc::allocations_in;
use loopback::{Counter, Queue};

const CH: &str = "relay";
const BUF: usize = 256;

/// One prepared datagram: bytes and length.
type Datagram = ([u8; BUF], usize);

enum Work {
    /// Writes and seals a media message per packet.
    Seal { sender: Sender, rtp: [u8; 120] },
    /// Opens sealed media messages.
    Open { sender: Sender, receiver: Receiver },
    /// Node 0's speaker sends; node 0 forwards (and relays, if it has links).
    Forward { mesh: Mesh, speaker: usize },
    /// Node 0's speaker sends, node 0 relays (not timed), node 1 receives and fans out.
    In { mesh: Mesh, speaker: usize },
}

struct Case {
    name: String,
    /// Datagrams the core sends per packet (consumer copies + link copies).
    copies: u64,
    /// The plain-forwarding case to compare with (`local/N`).
    base: Option<String>,
    work: Work,
    seq: u16,
    /// Nanoseconds per packet, per recorded round.
    ns: Vec<f64>,
}

fn forward_case(links: usize, consumers: usize) -> Case {
    let mut mesh = Mesh::new(links + 1, CH);
    let speaker = mesh.nodes[0].speaker_with_listeners(CH, consumers);
    let name = if links == 0 {
        format!("local/{consumers}")
    } else {
        format!("out/{links}/{consumers}")
    };
    Case {
        base: (links > 0).then(|| format!("local/{consumers}")),
        name,
        copies: (links + consumers) as u64,
        work: Work::Forward { mesh, speaker },
        seq: 0,
        ns: Vec::new(),
    }
}

fn in_case(consumers: usize) -> Case {
    let mut mesh = Mesh::new(2, CH);
    let speaker = mesh.nodes[0].join(CH, "speaker", true);
    let listeners: Vec<usize> = (0..consumers)
        .map(|i| mesh.nodes[1].join(CH, &format!("b{i}"), false))
        .collect();
    mesh.announce(CH);
    let pid = mesh.nodes[0].members[speaker].producer_id.clone().unwrap();
    for l in listeners {
        mesh.nodes[1].consume_id(CH, l, &pid, false, false);
    }
    mesh.settle();
    Case {
        name: format!("in/{consumers}"),
        copies: consumers as u64,
        base: Some(format!("local/{consumers}")),
        work: Work::In { mesh, speaker },
        seq: 0,
        ns: Vec::new(),
    }
}

fn crypto_cases() -> [Case; 2] {
    let key = link_key(0, 0, 1);
    let id = link_id(0, 0, 1);
    let mut rtp = [0u8; 120];
    for (i, b) in rtp.iter_mut().enumerate() {
        *b = i as u8;
    }
    rtp[0] = 0x80;
    let new = |work| Case {
        name: String::new(),
        copies: 1,
        base: None,
        work,
        seq: 0,
        ns: Vec::new(),
    };
    let mut seal = new(Work::Seal {
        sender: Sender::new(LinkKey::new(&key).unwrap(), id),
        rtp,
    });
    seal.name = "seal".into();
    let mut open = new(Work::Open {
        sender: Sender::new(LinkKey::new(&key).unwrap(), id),
        receiver: Receiver::new(LinkKey::new(&key).unwrap(), id),
    });
    open.name = "open".into();
    open.copies = 0;
    [seal, open]
}

/// The speaker's next `n` SRTP packets on node 0 of `mesh`.
fn srtp_batch(mesh: &mut Mesh, speaker: usize, seq: &mut u16, n: usize, into: &mut Vec<Datagram>) {
    let lb = &mut mesh.nodes[0];
    for _ in 0..n {
        let mut d = [0u8; BUF];
        let len = lb.rtp_packet(speaker, *seq, &mut d);
        let len = lb.members[speaker]
            .send
            .client
            .protect_rtp(&mut d, len)
            .unwrap();
        *seq = seq.wrapping_add(1);
        into.push((d, len));
    }
}

/// Fills `batch` with the next `n` datagrams the case's timed step takes.
fn prepare(case: &mut Case, n: usize, batch: &mut Vec<Datagram>) {
    batch.clear();
    match &mut case.work {
        Work::Seal { .. } => {}
        Work::Open { sender, .. } => {
            for i in 0..n {
                let mut d = [0u8; BUF];
                let mut rtp = [0u8; 120];
                rtp[0] = 0x80;
                rtp[2..4].copy_from_slice(&(i as u16).to_be_bytes());
                let message = Payload::Media {
                    stream: 1,
                    rtp: &rtp,
                };
                let m = message.write(&mut d[HEADER_LEN..]).unwrap();
                let len = sender.seal_in_place(&mut d, m).unwrap();
                batch.push((d, len));
            }
        }
        Work::Forward { mesh, speaker } => srtp_batch(mesh, *speaker, &mut case.seq, n, batch),
        Work::In { mesh, speaker } => {
            let mut srtp = Vec::with_capacity(n);
            srtp_batch(mesh, *speaker, &mut case.seq, n, &mut srtp);
            let lb = &mut mesh.nodes[0];
            for (mut d, len) in srtp {
                let mut q = Queue::default();
                lb.sfu.handle_datagram(
                    Some(lb.members[*speaker].send.key),
                    lb.members[*speaker].send.path,
                    &mut d,
                    len,
                    lb.now,
                    &mut q,
                );
                let [(_, _, relayed)] = &q.1[..] else {
                    panic!("one relayed copy per packet, got {}", q.1.len());
                };
                let mut r = [0u8; BUF];
                r[..relayed.len()].copy_from_slice(relayed);
                batch.push((r, relayed.len()));
            }
        }
    }
}

/// The timed step: the case's core work over `batch` (or `n` seals).
fn run(case: &mut Case, n: usize, batch: &mut [Datagram], out: &mut Counter) {
    match &mut case.work {
        Work::Seal { sender, rtp } => {
            let mut scratch = [0u8; BUF];
            for _ in 0..n {
                let message = Payload::Media { stream: 1, rtp };
                let m = message.write(&mut scratch[HEADER_LEN..]).unwrap();
                let len = sender.seal_in_place(&mut scratch, m).unwrap();
                out.sent += 1;
                out.bytes += black_box(len) as u64;
            }
        }
        Work::Open { receiver, .. } => {
            for (d, len) in batch.iter_mut() {
                let (_, plain) = receiver.open(&mut d[..*len]).unwrap();
                let Ok(Payload::Media { rtp, .. }) = Payload::parse(plain) else {
                    panic!("a media message");
                };
                black_box(rtp);
            }
        }
        Work::Forward { mesh, speaker } => {
            let lb = &mut mesh.nodes[0];
            let (key, path, now) = (
                lb.members[*speaker].send.key,
                lb.members[*speaker].send.path,
                lb.now,
            );
            for (d, len) in batch.iter_mut() {
                lb.sfu.handle_datagram(Some(key), path, d, *len, now, out);
            }
        }
        Work::In { mesh, .. } => {
            let lb = &mut mesh.nodes[1];
            let now = lb.now;
            for (d, len) in batch.iter_mut() {
                lb.sfu
                    .on_link_datagram(PORT, addr(0), &mut d[..*len], now, out);
            }
        }
    }
}

/// The only function `--instructions` asks callgrind to count.
#[inline(never)]
fn counted(f: &mut dyn FnMut()) {
    f()
}

/// Prepares and times one batch; returns ns per packet. Panics if the core allocated, or sent
/// other than `copies` datagrams per packet.
fn round(case: &mut Case, n: usize, batch: &mut Vec<Datagram>, count_instructions: bool) -> f64 {
    prepare(case, n, batch);
    let mut out = Counter { sent: 0, bytes: 0 };
    let start = Instant::now();
    let ((), allocations) = allocations_in(|| {
        if count_instructions {
            counted(&mut || run(case, n, batch, &mut out));
        } else {
            run(case, n, batch, &mut out);
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(
        allocations, 0,
        "{}: heap allocations in the timed batch",
        case.name
    );
    assert_eq!(
        out.sent,
        case.copies * n as u64,
        "{}: datagrams sent",
        case.name
    );
    ns
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    // `cargo test --benches` runs this without `--bench`: then only a quick check (every case
    // set up, one small round, nothing allocated) instead of a measurement.
    let quick = !args.iter().any(|a| a == "--bench");
    let rounds: usize = value("--rounds").map_or(if quick { 1 } else { 21 }, |v| {
        v.parse().expect("--rounds N")
    });
    let packets: usize = value("--packets").map_or(if quick { 200 } else { 10_000 }, |v| {
        v.parse().expect("--packets N")
    });
    let instructions = value("--instructions");
    let only = instructions.clone().or_else(|| value("--only"));
    let wanted = |name: &str| match (&instructions, &only) {
        (Some(i), _) => name == i,
        (None, Some(o)) => name.contains(o.as_str()),
        (None, None) => true,
    };

    let mut cases: Vec<Case> = Vec::new();
    cases.extend(crypto_cases());
    for consumers in [0, 1, 10] {
        for links in [0, 1, 2, 4] {
            let name = if links == 0 {
                format!("local/{consumers}")
            } else {
                format!("out/{links}/{consumers}")
            };
            if wanted(&name) {
                cases.push(forward_case(links, consumers));
            }
        }
    }
    for consumers in [1, 10] {
        if wanted(&format!("in/{consumers}")) {
            cases.push(in_case(consumers));
        }
    }
    cases.retain(|c| wanted(&c.name));
    assert!(!cases.is_empty(), "no case named like that");

    let mut batch = Vec::with_capacity(packets);
    if instructions.is_some() {
        // One warm-up batch (per-stream state is made on first use), then the counted one.
        let case = &mut cases[0];
        round(case, packets, &mut batch, false);
        let ns = round(case, packets, &mut batch, true);
        println!(
            "{}: {packets} packets counted ({ns:.0} ns/packet under valgrind)",
            case.name
        );
        return;
    }

    for r in 0..=rounds {
        let len = cases.len();
        for i in 0..len {
            let case = &mut cases[(i + r) % len];
            let ns = round(case, packets, &mut batch, false);
            if r > 0 {
                case.ns.push(ns);
            }
        }
    }

    println!(
        "{rounds} rounds x {packets} packets per case, ns per packet (min / median over rounds); \
         vs base: median over rounds of this case / its local/N in the same round"
    );
    println!(
        "| case | datagrams out per packet | min ns | median ns | packets/s (median) | \
         vs local/N |"
    );
    println!("|---|---|---|---|---|---|");
    for case in &cases {
        let vs = case
            .base
            .as_ref()
            .and_then(|b| cases.iter().find(|c| &c.name == b))
            .map_or("–".to_string(), |base| {
                let ratios: Vec<f64> = case.ns.iter().zip(&base.ns).map(|(a, b)| a / b).collect();
                format!("{:.2}", median(&ratios))
            });
        let med = median(&case.ns);
        let min = case.ns.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "| {} | {} | {min:.0} | {med:.0} | {:.2} M | {vs} |",
            case.name,
            case.copies,
            1e3 / med
        );
    }
    for case in &cases {
        if let Work::Forward { mesh, .. } | Work::In { mesh, .. } = &case.work {
            for (i, lb) in mesh.nodes.iter().enumerate() {
                let drops = &lb.sfu.counters().drops;
                assert!(drops.is_empty(), "{} node {i}: {drops:?}", case.name);
            }
        }
    }
}
