//! choir's load generator: forwarded packets per core and forwarding latency, beside the
//! machine's limit (a bare UDP relay with the same sockets, fan-out and syscalls).
//!
//! ```text
//! cargo bench --bench loadgen -- [--target both|choir|relay|janus] [--streams 900,1800,...]
//! ```
//!
//! `--target janus` drives a running Janus 1.1 (benches/janus/janus.sh starts one) through its
//! HTTP API and videoroom plugin with the same rooms, packets and measurements (see `janus.rs`).
//!
//! It starts choir (the release binary cargo built, `taskset -c <server-cpus>`, `--shards N`)
//! unless given `--url` of a running one, creates rooms of P participants through the voice API
//! (everyone consumes every speaker: S·(P−1) consumer streams per room), completes ICE/DTLS with
//! `choir::client::ClientTransport` over real UDP sockets on 127.0.0.1, publishes Opus-sized
//! SRTP at 50 packets/s per speaker with a send timestamp in the payload, and counts everything
//! forwarded. Each step adds rooms, warms up, measures, drains; the ramp stops at the first step
//! with loss > --max-loss % or p99 > --max-p99-ms. Latency is send → kernel receive timestamp
//! (SO_TIMESTAMPNS) on the generator's socket, so the generator's own wake-up is not counted
//! (its own view is the `appp99` column). Output: a table, `<out>/loadgen.csv`, `<out>/loadgen.svg`.
//!
//! The generator runs one worker thread per --gen-cpus entry, each pinned, each an epoll loop
//! over its sockets with one recvmmsg per ready socket (see `worker.rs`, `sys.rs`).

mod args;
mod cascade;
mod churn;
mod compare;
mod headline;
mod janus;
mod relay;
mod report;
mod server;
mod setup;
mod sys;
mod worker;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;

pub use args::{cpu_list, Args};
use report::Row;
use server::{room_name, start_choir, start_janus, start_relay, Server, JANUS_PORTS};
use worker::{Cmd, LegSpec, Reply, RunSpec, StepStats};

struct Workers {
    tx: Vec<mpsc::Sender<Cmd>>,
    rx: mpsc::Receiver<(usize, Reply)>,
}

impl Workers {
    fn spawn(cpus: &[usize]) -> Workers {
        let (reply_tx, rx) = mpsc::channel();
        let tx = cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| {
                let (tx, cmd_rx) = mpsc::channel();
                let (inner_tx, inner_rx) = mpsc::channel();
                let reply_tx = reply_tx.clone();
                std::thread::Builder::new()
                    .name(format!("loadgen-{i}"))
                    .spawn(move || worker::run(Some(cpu), cmd_rx, inner_tx))
                    .expect("spawn a worker");
                std::thread::spawn(move || {
                    for r in inner_rx {
                        if reply_tx.send((i, r)).is_err() {
                            return;
                        }
                    }
                });
                tx
            })
            .collect();
        Workers { tx, rx }
    }

    /// Sends `cmd(i)` to every worker and collects the replies.
    fn all(&self, cmd: impl Fn(usize) -> Cmd) -> Vec<Reply> {
        for (i, tx) in self.tx.iter().enumerate() {
            let _ = tx.send(cmd(i));
        }
        let mut replies: Vec<(usize, Reply)> = (0..self.tx.len())
            .filter_map(|_| self.rx.recv().ok())
            .collect();
        replies.sort_by_key(|(i, _)| *i);
        replies.into_iter().map(|(_, r)| r).collect()
    }

    /// Hands `legs` to worker `i`; the generator's ports they bound go to `gen_ports`.
    fn add(
        &self,
        i: usize,
        legs: Vec<LegSpec>,
        gen_ports: &mut HashSet<u16>,
    ) -> Result<(), String> {
        match self.one(i, Cmd::Add(legs)) {
            Reply::Added(ports) => {
                gen_ports.extend(ports);
                Ok(())
            }
            Reply::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Has every worker connect its new legs (ICE, DTLS); an error names the legs that did not.
    fn connect(&self) -> Result<(), String> {
        let pending: usize = self
            .all(|_| Cmd::Connect(Duration::from_secs(60)))
            .into_iter()
            .map(|r| match r {
                Reply::Connected(n) => n,
                _ => 0,
            })
            .sum();
        match pending {
            0 => Ok(()),
            n => Err(format!("{n} legs did not connect")),
        }
    }

    /// Starts one step (warm-up, measurement, drain from `args`) on every worker.
    fn start_step(&self, args: &Args) {
        for tx in &self.tx {
            let _ = tx.send(Cmd::Run(RunSpec {
                warmup: Duration::from_secs_f64(args.warmup),
                measure: Duration::from_secs_f64(args.measure),
                drain: Duration::from_millis(300),
                sample: args.sample,
                busy_poll: args.busy_poll,
            }));
        }
    }

    /// Every worker's figures of the step [`Workers::start_step`] started, merged.
    fn step_stats(&self) -> Result<StepStats, String> {
        let mut stats = StepStats::empty();
        for _ in 0..self.tx.len() {
            match self.rx.recv() {
                Ok((_, Reply::Step(st))) => stats.merge(&st),
                Ok((_, Reply::Failed(e))) => return Err(e),
                _ => {}
            }
        }
        Ok(stats)
    }

    fn one(&self, i: usize, cmd: Cmd) -> Reply {
        let _ = self.tx[i].send(cmd);
        match self.rx.recv() {
            Ok((_, r)) => r,
            Err(_) => Reply::Failed("worker gone".into()),
        }
    }
}

/// Runs the ramp against one target; returns its rows.
fn ramp(args: &Args, target: &str) -> Result<Vec<Row>, String> {
    let mut server = match target {
        "relay" => start_relay(args, false)?,
        "relay-shared" => start_relay(args, true)?,
        "janus" => start_janus(args)?,
        "choir-single" => start_choir(args, "single", None)?,
        "choir-per-transport" => start_choir(args, "per-transport", None)?,
        "before-single" | "before-per-transport" => {
            let bin = args
                .before_bin
                .as_ref()
                .ok_or("before-* targets need --before-bin")?;
            let mode = target.trim_start_matches("before-");
            start_choir(args, mode, Some(bin))?
        }
        _ => start_choir(args, &args.port_mode, None)?,
    };
    let gen_cpus = cpu_list(&args.gen_cpus);
    let server_cpus = cpu_list(&args.server_cpus);
    let workers = Workers::spawn(&gen_cpus);
    let p = args.participants.max(2);
    let s = args.speakers.unwrap_or(p).min(p);
    let per_room = s * (p - 1);
    let mut rooms = 0usize;
    let mut gen_ports: HashSet<u16> = HashSet::new();
    let mut server_ports: HashSet<u16> = HashSet::new();
    let hz = sys::ticks_per_second() as f64;
    let pid = server.pid();
    let rss0 = pid.and_then(sys::rss_kib).unwrap_or(0);
    let mut rows: Vec<Row> = Vec::new();
    let mut churn: Option<churn::Churn> = None;
    println!(
        "\n{target}: rooms of {p} participants, {s} speakers ({per_room} consumer streams per room); server on CPUs {}, generator on {:?}",
        args.server_cpus, gen_cpus
    );
    println!("{}", report::table_header());
    for &streams in &args.streams {
        let want = streams.div_ceil(per_room).max(1);
        if churn.is_some() && want > rooms {
            return Err("with --churn every step must have the first step's streams".into());
        }
        let t_setup = std::time::Instant::now();
        while rooms < want {
            let worker = rooms % gen_cpus.len();
            if let Server::Janus {
                janus, clients, ip, ..
            } = &mut server
            {
                // Janus lets subscribers in once a feed's media is up: publishers first.
                let room = 1000 + rooms as u64;
                let ssrc_base = 0x1000_0000 + (rooms * p) as u32;
                let (legs, feeds) = janus::publishers(janus, clients, room, p, s, ssrc_base, *ip)?;
                workers.add(worker, legs, &mut gen_ports)?;
                if let Reply::Connected(n @ 1..) =
                    workers.one(worker, Cmd::Connect(Duration::from_secs(30)))
                {
                    return Err(format!("{n} Janus publisher legs did not connect"));
                }
                let legs = janus::subscribers(janus, clients, room, p, &feeds, *ip)?;
                workers.add(worker, legs, &mut gen_ports)?;
                rooms += 1;
                continue;
            }
            let legs = match &mut server {
                Server::Choir { api, clients, .. } => setup::choir_room(
                    api,
                    clients,
                    &room_name(rooms, args.shards),
                    p,
                    s,
                    0x1000_0000 + (rooms * p) as u32,
                )?,
                Server::Relay(r) => {
                    let legs = r.room(p, s)?;
                    server_ports.extend(legs.iter().map(|l| l.server.port()));
                    legs
                }
                Server::Janus { .. } => unreachable!("set up above"),
            };
            workers.add(worker, legs, &mut gen_ports)?;
            rooms += 1;
        }
        workers.connect()?;
        let setup_s = t_setup.elapsed().as_secs_f64();
        // choir holds a new consumer for 500 ms (--consumer-hold) while the browser applies its
        // SDP; packets held then are not losses of the step.
        if matches!(server, Server::Choir { .. }) {
            std::thread::sleep(Duration::from_millis(600));
        }
        if let (true, None, Server::Choir { api, .. }) = (args.churn > 0.0, &churn, &server) {
            let steady = (0..rooms).map(|i| room_name(i, args.shards)).collect();
            let spec = churn::Spec {
                rate: args.churn,
                life: Duration::from_secs_f64(args.churn_life),
                consent: Duration::from_secs_f64(args.churn_consent_timeout),
                join: Duration::from_secs_f64(args.churn_join_timeout),
                rss_tolerance: args.churn_rss_tolerance,
            };
            churn = Some(churn::Churn::start(
                api.base(),
                pid,
                steady,
                gen_cpus.first().copied(),
                spec,
            )?);
        }
        let choir_range = match &server {
            Server::Choir { ports, .. } => Some(*ports),
            Server::Janus { .. } => Some(JANUS_PORTS),
            Server::Relay(_) => None,
        };
        let is_server_port = |port: u16| match choir_range {
            Some((a, b)) => (a..=b).contains(&port) && !gen_ports.contains(&port),
            None => server_ports.contains(&port),
        };
        let mut best: Option<Row> = None;
        for attempt in 0..args.repeat.max(1) {
            let drops0 = (
                sys::udp_drops(is_server_port),
                sys::udp_drops(|p| gen_ports.contains(&p)),
                server.send_failed(),
            );
            let warmup = Duration::from_secs_f64(args.warmup);
            let measure = Duration::from_secs_f64(args.measure);
            workers.start_step(args);
            std::thread::sleep(warmup);
            let cpu0 = pid.and_then(sys::process_cpu_ticks);
            let steal0 = sys::cpu_steal_ticks(&server_cpus);
            let gsteal0 = sys::cpu_steal_ticks(&gen_cpus);
            std::thread::sleep(measure);
            let cpu1 = pid.and_then(sys::process_cpu_ticks);
            let steal1 = sys::cpu_steal_ticks(&server_cpus);
            let gsteal1 = sys::cpu_steal_ticks(&gen_cpus);
            let stats = workers.step_stats()?;
            let drops = (
                sys::udp_drops(is_server_port) - drops0.0,
                sys::udp_drops(|p| gen_ports.contains(&p)) - drops0.1,
                server.send_failed().saturating_sub(drops0.2),
            );
            let window = stats.window_ns.max(1) as f64 / 1e9;
            let pct =
                |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let loss_pct = stats.loss_pct();
            let mut row = Row {
                target: target.to_string(),
                rooms,
                participants: rooms * p,
                streams: rooms * per_room,
                offered_pps: stats.expected_window as f64 / window,
                forwarded_pps: stats.received_window as f64 / window,
                loss_pct,
                latency_us: [
                    pct(&stats.latency, 0.5),
                    pct(&stats.latency, 0.9),
                    pct(&stats.latency, 0.99),
                    pct(&stats.latency, 0.999),
                    stats.latency.max() as f64 / 1000.0,
                ],
                app_p99_us: pct(&stats.app_latency, 0.99),
                server_cpu_pct: match (cpu0, cpu1) {
                    (Some(a), Some(b)) => 100.0 * (b - a) as f64 / hz / measure.as_secs_f64(),
                    _ => f64::NAN,
                },
                server_steal_pct: 100.0 * (steal1.0 - steal0.0) as f64
                    / (steal1.1 - steal0.1).max(1) as f64,
                gen_steal_pct: 100.0 * (gsteal1.0 - gsteal0.0) as f64
                    / (gsteal1.1 - gsteal0.1).max(1) as f64,
                server_rss_mib: pid.and_then(sys::rss_kib).unwrap_or(0) as f64 / 1024.0,
                gen_cpu_pct: 100.0 * stats.cpu_ns as f64 / stats.window_ns.max(1) as f64,
                gen_lag_p99_us: pct(&stats.send_lag, 0.99),
                server_rx_drops: drops.0,
                gen_rx_drops: drops.1,
                server_send_failed: drops.2,
                good: false,
                server_fds: pid.and_then(sys::fd_count).unwrap_or(0),
            };
            row.good =
                row.loss_pct <= args.max_loss && row.latency_us[2] <= args.max_p99_ms * 1000.0;
            println!("{}", report::table_line(&row));
            if stats.decrypt_failed > 0 || stats.send_failed > 0 {
                println!(
                    "       (undecryptable {}, generator send failures {})",
                    stats.decrypt_failed, stats.send_failed
                );
            }
            eprintln!(
            "loadgen: {target} step {streams}: set-up {setup_s:.1}s, sent {}, expected {}, received {}, rss {:.1} MiB (+{:.1} since start) {}",
            stats.sent,
            stats.expected,
            stats.received,
            row.server_rss_mib,
            (row.server_rss_mib * 1024.0 - rss0 as f64) / 1024.0,
            server.drops()
        );
            let better = match &best {
                None => true,
                Some(b) => (row.loss_pct, row.latency_us[2]) < (b.loss_pct, b.latency_us[2]),
            };
            if better {
                best = Some(row);
            }
            if attempt + 1 < args.repeat
                && best
                    .as_ref()
                    .is_some_and(|b| b.good && b.loss_pct == 0.0 && b.latency_us[2] < 2000.0)
            {
                break;
            }
        }
        let Some(row) = best else { continue };
        if args.repeat > 1 {
            println!(
                "{}  (best of up to {})",
                report::table_line(&row),
                args.repeat
            );
        }
        let good = row.good;
        rows.push(row);
        if !good && !args.no_stop {
            break;
        }
    }
    if let Some(c) = churn {
        println!("{}", c.finish());
    }
    let last_good = rows.iter().rev().find(|r| r.good);
    match last_good {
        Some(r) => println!(
            "{target}: last good step: {} streams, {:.0} forwarded packets/s, loss {:.4} %, p99 {:.0} µs, server CPU {:.0} %",
            r.streams, r.forwarded_pps, r.loss_pct, r.latency_us[2], r.server_cpu_pct
        ),
        None => println!("{target}: no step passed"),
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        if last.streams > first.streams && rss0 > 0 {
            println!(
                "{target}: memory per consumer stream ≈ {:.1} KiB (RSS {:.1} → {:.1} MiB from {} to {} streams)",
                (last.server_rss_mib - first.server_rss_mib) * 1024.0
                    / (last.streams - first.streams) as f64,
                first.server_rss_mib,
                last.server_rss_mib,
                first.streams,
                last.streams
            );
        }
    }
    Ok(rows)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs bench targets with no argument:
    // a load test is not a unit test, so that run does nothing.
    if std::env::args().len() <= 1 {
        println!("loadgen: run it with `cargo bench --bench loadgen -- [options]` (see --help)");
        return;
    }
    let args = Args::parse();
    if args.relay_server {
        if let Err(e) = relay::serve(args.relay_shared) {
            eprintln!("relay: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(dir) = &args.compare {
        if let Err(e) = compare::summarize(dir) {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(csv) = &args.plot {
        let svg = csv.with_extension("svg");
        let title = args.title.clone().unwrap_or_else(|| "choir load".into());
        match report::read_csv(csv).and_then(|rows| report::plot(&rows, &svg, &title)) {
            Ok(()) => println!("wrote {}", svg.display()),
            Err(e) => {
                eprintln!("loadgen: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    // The main thread (HTTP set-up, /proc readings) belongs to the generator's side too.
    if let Some(&cpu) = cpu_list(&args.gen_cpus).first() {
        let _ = sys::pin_to(cpu);
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("loadgen: cannot create {}: {e}", args.out.display());
        std::process::exit(1);
    }
    let targets: Vec<&str> = args
        .target
        .split(',')
        .flat_map(|t| match t {
            "both" => vec!["relay", "choir"],
            "all" => vec![
                "relay",
                "relay-shared",
                "choir-per-transport",
                "choir-single",
            ],
            t => vec![t],
        })
        .collect();
    let mut rows = Vec::new();
    for target in targets {
        if target == "cascade" || target == "headline" {
            let run = if target == "cascade" {
                cascade::run
            } else {
                headline::run
            };
            if let Err(e) = run(&args) {
                eprintln!("loadgen: {target}: {e}");
                std::process::exit(1);
            }
            continue;
        }
        match ramp(&args, target) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("loadgen: {target}: {e}");
                std::process::exit(1);
            }
        }
    }
    let best = |t: &str| {
        rows.iter()
            .filter(|r| r.target == t && r.good)
            .map(|r| r.forwarded_pps)
            .fold(0.0, f64::max)
    };
    let choirs = ["choir", "choir-single", "choir-per-transport"];
    let c = choirs.iter().map(|t| best(t)).fold(0.0, f64::max);
    let mut measured: Vec<&str> = Vec::new();
    for r in &rows {
        if !measured.contains(&r.target.as_str()) {
            measured.push(&r.target);
        }
    }
    // Capacity ratios of every pair measured in this run (last good step's forwarded/s).
    for (i, a) in measured.iter().enumerate() {
        for b in &measured[i + 1..] {
            let (x, y) = (best(a), best(b));
            if x > 0.0 && y > 0.0 {
                println!("capacity {b} / {a} = {y:.0} / {x:.0} = {:.2}", y / x);
            }
        }
    }
    if c > 0.0 {
        let met = rows.iter().any(|x| {
            choirs.contains(&x.target.as_str())
                && x.forwarded_pps >= 250_000.0
                && x.loss_pct == 0.0
                && x.latency_us[2] < 2000.0
        });
        println!(
            "target (≥ 250,000 forwarded SRTP packets/s per shard, 0 loss, p99 < 2 ms): {}",
            if met { "met" } else { "not met" }
        );
    }
    if rows.is_empty() {
        return;
    }
    let csv = args.out.join("loadgen.csv");
    let svg = args.out.join("loadgen.svg");
    if let Err(e) = report::write_csv(&rows, &csv) {
        eprintln!("loadgen: {}: {e}", csv.display());
    }
    let title = format!(
        "choir load: rooms of {} participants, {} shard(s)",
        args.participants, args.shards
    );
    if let Err(e) = report::plot(&rows, &svg, &title) {
        eprintln!("loadgen: {}: {e}", svg.display());
    }
    println!("wrote {} and {}", csv.display(), svg.display());
    if churn::failed() {
        std::process::exit(1);
    }
}
