//! `--target headline` (issue 22, "the headline as Phase 2 would run it"): three choir nodes in
//! regions `a`, `b` and `c` on one `redis-server` (all on loopback), rooms of `--participants`
//! spread over them: in room k participant u joins through the node of region (u + k) mod 3, so
//! a room of 10 has its 2 speakers on two of the regions (in turn) and its listeners on all
//! three, and everyone consumes every speaker. Each node relays its speakers once to each other node of the room; reported per
//! step: delivery (all heard: loss %), latency, CPU per node, and the link traffic per ordered
//! node pair (relayed packets/s from `/metrics`, and the bandwidth they take: each relayed
//! datagram is the SRTP packet + 35 octets of link header and tag + 28 of UDP/IPv4). All nodes
//! run on `--server-cpus` (one shard each), the generator on `--gen-cpus`.

use std::time::{Duration, Instant};

use crate::cascade::{free_ports, start_node, start_redis, us, Proc};
use crate::setup::{spread_room, Api, Clients, Layout};
use crate::worker::LegSpec;
use crate::{cpu_list, server::room_name, sys, Args, Workers};

const REGIONS: [&str; 3] = ["a", "b", "c"];
/// A relayed datagram on the wire: SRTP packet (120 + 10) + link header and tag (35) +
/// UDP/IPv4 (28).
const RELAYED_OCTETS: f64 = 193.0;

/// Room number `k` over the nodes (participant u on node (u + k) mod 3; one latency histogram
/// for all: a recv leg hears speakers of its own node and of others).
fn room(
    nodes: &[Api],
    clients: &Clients,
    (k, room): (usize, &str),
    participants: usize,
    speakers: usize,
    ssrc_base: u32,
) -> Result<Vec<LegSpec>, String> {
    let nodes: Vec<&Api> = nodes.iter().collect();
    let layout = Layout {
        nodes: &nodes,
        node: &|u| (u + k) % nodes.len(),
        remote: &|_| false,
    };
    spread_room(&layout, clients, room, participants, speakers, ssrc_base)
}

/// Relayed packets node `api` sent to each peer so far, by peer id (its `/metrics`).
fn relayed_out(api: &Api) -> Result<Vec<(String, f64)>, String> {
    let text = api.text("/metrics")?;
    let mut out: Vec<(String, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("choir_relay_packets_total{"))
    {
        if !line.contains("direction=\"out\"") {
            continue;
        }
        let peer = line
            .split("peer=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match out.iter_mut().find(|(p, _)| p == peer) {
            Some((_, total)) => *total += n,
            None => out.push((peer.to_string(), n)),
        }
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(out)
}

/// Runs the ramp of `--streams` (consumer streams over the three nodes, whole rooms).
pub fn run(args: &Args) -> Result<(), String> {
    let (_redis, redis) = start_redis()?;
    let rtc = free_ports(6000);
    let mut procs: Vec<Proc> = Vec::new();
    let mut nodes: Vec<Api> = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let (proc, api) = start_node(args, &redis, region, rtc + 2000 * i as u16)?;
        procs.push(proc);
        nodes.push(api);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].get("cluster")?["nodes"]
        .as_array()
        .map_or(0, Vec::len)
        < REGIONS.len()
    {
        if Instant::now() > deadline {
            return Err("the nodes did not register".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let clients = Clients::new();
    let gen_cpus = cpu_list(&args.gen_cpus);
    let workers = Workers::spawn(&gen_cpus);
    let p = args.participants.max(3);
    let s = args.speakers.unwrap_or(2).min(p - 1);
    let per_room = s * (p - 1);
    let hz = sys::ticks_per_second() as f64;
    let cpu = |proc: &Proc| sys::process_cpu_ticks(proc.0.id()).unwrap_or(0);
    println!(
        "\nheadline: rooms of {p} participants over regions a, b, c (in room k participant u on \
         region (u + k) mod 3; {s} speakers); the nodes on CPUs {}, the generator on {gen_cpus:?}",
        args.server_cpus
    );
    println!(
        "| participants | consumer streams | forwarded pkt/s | loss % | p50 / p99 µs | \
         CPU a / b / c % | link pkt/s (a→b a→c b→a b→c c→a c→b) | link kbit/s per pair |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rooms = 0;
    let mut gen_ports = std::collections::HashSet::new();
    for &streams in &args.streams {
        let want = streams.div_ceil(per_room).max(1);
        let t_setup = Instant::now();
        while rooms < want {
            let ssrc_base = 0x1000_0000 + (rooms * p) as u32;
            let name = room_name(rooms, 1);
            let legs = room(&nodes, &clients, (rooms, &name), p, s, ssrc_base)?;
            workers.add(rooms % gen_cpus.len(), legs, &mut gen_ports)?;
            rooms += 1;
        }
        workers.connect()?;
        eprintln!(
            "loadgen: headline: {rooms} rooms set up and connected in {:.1} s",
            t_setup.elapsed().as_secs_f64()
        );
        // choir's 500 ms consumer hold.
        std::thread::sleep(Duration::from_millis(600));
        for _ in 0..args.repeat.max(1) {
            let warmup = Duration::from_secs_f64(args.warmup);
            let measure = Duration::from_secs_f64(args.measure);
            workers.start_step(args);
            std::thread::sleep(warmup);
            let c0: Vec<u64> = procs.iter().map(cpu).collect();
            let l0: Vec<Vec<(String, f64)>> =
                nodes.iter().map(relayed_out).collect::<Result<_, _>>()?;
            let t0 = Instant::now();
            std::thread::sleep(measure);
            let c1: Vec<u64> = procs.iter().map(cpu).collect();
            let l1: Vec<Vec<(String, f64)>> =
                nodes.iter().map(relayed_out).collect::<Result<_, _>>()?;
            let secs = t0.elapsed().as_secs_f64();
            let stats = workers.step_stats()?;
            let window = stats.window_ns.max(1) as f64 / 1e9;
            let loss = stats.loss_pct();
            let all = &stats.latency;
            let cpu_pct: Vec<String> = c0
                .iter()
                .zip(&c1)
                .map(|(a, b)| format!("{:.1}", 100.0 * (b - a) as f64 / hz / measure.as_secs_f64()))
                .collect();
            let mut pairs = Vec::new();
            for (i, (before, after)) in l0.iter().zip(&l1).enumerate() {
                for (peer, n) in after {
                    let was = before.iter().find(|(p, _)| p == peer).map_or(0.0, |x| x.1);
                    let to = peer.trim_start_matches("bench-");
                    pairs.push((format!("{}→{to}", REGIONS[i]), (n - was) / secs));
                }
            }
            let rates: Vec<String> = pairs.iter().map(|(_, r)| format!("{r:.0}")).collect();
            let kbits: Vec<String> = pairs
                .iter()
                .map(|(_, r)| format!("{:.0}", r * RELAYED_OCTETS * 8.0 / 1000.0))
                .collect();
            println!(
                "| {} | {} | {:.0} | {loss:.3} | {:.0} / {:.0} | {} | {} | {} |",
                rooms * p,
                rooms * per_room,
                stats.received_window as f64 / window,
                us(all, 0.5),
                us(all, 0.99),
                cpu_pct.join(" / "),
                rates.join(" "),
                kbits.join(" "),
            );
        }
    }
    Ok(())
}
