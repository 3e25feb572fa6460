//! `--target cascade` (issue 22, "added latency per hop"): two choir nodes in regions `a` and
//! `b` on one `redis-server` (all on loopback), rooms that span them. In every room the
//! speakers and half of the listeners join through node a, the other half through node b, and
//! everyone consumes every speaker: a's listeners get the speakers' packets from a directly,
//! b's after one hop (a seals each packet once for b; b opens it and fans it out). Both groups'
//! latencies (send time in the payload → kernel receive timestamp, as in the other targets) are
//! recorded side by side in the same step; their difference is what the hop adds. Both nodes
//! run on `--server-cpus` (one shard each), the generator on `--gen-cpus`.

#[path = "../../tests/common/net.rs"]
mod net;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::setup::{spread_room, Api, Clients, Layout};
use crate::worker::LegSpec;
use crate::{cpu_list, server::room_name, sys, Args, Workers};

/// Kills its process when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_node(args: &Args, redis: &str, region: &str, rtc: u16) -> Result<(Proc, Api), String> {
    let log = std::fs::File::create(args.out.join(format!("choir-{region}.log")))
        .map_err(|e| e.to_string())?;
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(&args.server_cpus)
        .arg(env!("CARGO_BIN_EXE_choir"))
        .args(["--listen", "127.0.0.1:0", "--announced-ip", "127.0.0.1"])
        .args(["--rtc-listen-ip", "127.0.0.1", "--log", "warn"])
        .args(["--dtls-timeout", "60s", "--rate-limit", "0"])
        .args([
            "--max-room-participants",
            "0",
            "--shards",
            "1",
            "--pin",
            "false",
        ])
        .args(["--node-id", &format!("bench-{region}"), "--region", region])
        .args(["--port-mode", &args.port_mode])
        .args(["--rtc-min-port", &rtc.to_string()])
        .args(["--rtc-max-port", &(rtc + 1999).to_string()])
        .env("CHOIR_REDIS_URL", redis)
        .env(
            "CHOIR_CLUSTER_SECRET",
            "loadgen-cascade-secret-0123456789abcdef-0123",
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start choir: {e}"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let base = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("choir listening on ").map(str::to_string))
        .ok_or("choir did not print its address")?;
    std::thread::spawn(move || for _ in lines {});
    Ok((Proc(child), Api::new(&base)))
}

/// One room across the nodes; returns its legs (b's listeners' receive legs marked remote).
fn room(
    a: &Api,
    b: &Api,
    clients: &Clients,
    room: &str,
    participants: usize,
    speakers: usize,
    ssrc_base: u32,
) -> Result<Vec<LegSpec>, String> {
    let on_b = |u: usize| u >= speakers && (u - speakers) % 2 == 1;
    let layout = Layout {
        nodes: &[a, b],
        node: &|u| usize::from(on_b(u)),
        remote: &on_b,
    };
    spread_room(&layout, clients, room, participants, speakers, ssrc_base)
}

pub fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A `redis-server` on a free loopback port: the process and its URL.
pub fn start_redis() -> Result<(Proc, String), String> {
    let (redis_port, _) = net::free_port_range(1);
    let dir = std::env::temp_dir().join(format!("choir-loadgen-redis-{redis_port}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let redis = Proc(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((redis, format!("redis://127.0.0.1:{redis_port}")))
}

/// `n` consecutive free ports (for the nodes' RTC ranges).
pub fn free_ports(n: u16) -> u16 {
    net::free_port_range(n).0
}

/// Runs the ramp of `--streams` (consumer streams over both nodes, whole rooms).
pub fn run(args: &Args) -> Result<(), String> {
    let (_redis, redis) = start_redis()?;
    let rtc = free_ports(4000);
    let (node_a, a) = start_node(args, &redis, "a", rtc)?;
    let (node_b, b) = start_node(args, &redis, "b", rtc + 2000)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.get("cluster")?["nodes"].as_array().map_or(0, Vec::len) < 2 {
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
        "\ncascade: rooms of {p} participants, {s} speakers on node a, listeners alternately on \
         a and b; both nodes on CPUs {}, generator on {gen_cpus:?}",
        args.server_cpus
    );
    println!(
        "| rooms | consumer streams | forwarded pkt/s | relayed a→b pkt/s | loss % | \
         a p50 / p99 µs | b p50 / p99 µs | b − a p50 / p99 µs | CPU a % | CPU b % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rooms = 0;
    let mut gen_ports = std::collections::HashSet::new();
    for &streams in &args.streams {
        let want = streams.div_ceil(per_room).max(1);
        let t_setup = Instant::now();
        while rooms < want {
            let ssrc_base = 0x1000_0000 + (rooms * p) as u32;
            let legs = room(&a, &b, &clients, &room_name(rooms, 1), p, s, ssrc_base)?;
            workers.add(rooms % gen_cpus.len(), legs, &mut gen_ports)?;
            rooms += 1;
        }
        workers.connect()?;
        eprintln!(
            "loadgen: cascade: {rooms} rooms set up and connected in {:.1} s",
            t_setup.elapsed().as_secs_f64()
        );
        // choir's 500 ms consumer hold.
        std::thread::sleep(Duration::from_millis(600));
        for _ in 0..args.repeat.max(1) {
            let warmup = Duration::from_secs_f64(args.warmup);
            let measure = Duration::from_secs_f64(args.measure);
            workers.start_step(args);
            std::thread::sleep(warmup);
            let (a0, b0) = (cpu(&node_a), cpu(&node_b));
            std::thread::sleep(measure);
            let (a1, b1) = (cpu(&node_a), cpu(&node_b));
            let stats = workers.step_stats()?;
            let window = stats.window_ns.max(1) as f64 / 1e9;
            let loss = stats.loss_pct();
            let (la, lb) = (&stats.latency, &stats.latency_remote);
            let pct = |t0: u64, t1: u64| 100.0 * (t1 - t0) as f64 / hz / measure.as_secs_f64();
            println!(
                "| {rooms} | {} | {:.0} | {} | {loss:.3} | {:.0} / {:.0} | {:.0} / {:.0} | \
                 {:.0} / {:.0} | {:.1} | {:.1} |",
                rooms * per_room,
                stats.received_window as f64 / window,
                rooms * s * 50,
                us(la, 0.5),
                us(la, 0.99),
                us(lb, 0.5),
                us(lb, 0.99),
                us(lb, 0.5) - us(la, 0.5),
                us(lb, 0.99) - us(la, 0.99),
                pct(a0, a1),
                pct(b0, b1),
            );
        }
    }
    let (_, stats_b) = (a.get("stats")?, b.get("stats")?);
    let t = &stats_b["total"];
    println!(
        "node b: relayPacketsIn {}, drops {}",
        t["relayPacketsIn"], t["drops"]
    );
    Ok(())
}
