//! Join time in cluster mode: the plan's API flow through the room's owner vs through a node
//! that proxies to it (see BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench cluster_join -- [--rooms 20] [--joins 10]
//! ```
//!
//! Starts a `redis-server` (on a free loopback port outside the ephemeral range) and two release
//! choir nodes on loopback, then joins `--joins` users per room and per path into `--rooms`
//! rooms, alternating "owner" and "proxied" joins (and which goes first) so that both see the
//! same room sizes. A join is the plan's sequence of API calls, over one keep-alive client:
//! rtp-capabilities, create-transport (send), connect-transport, produce, create-transport
//! (recv), connect-transport, producers, and a consume per producer listed. ICE and DTLS go
//! straight to the owner on both paths, so they are not part of what differs and not timed.

#[path = "../tests/common/net.rs"]
mod net;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(redis: &str, id: &str, rtc: u16) -> (Proc, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["--listen", "127.0.0.1:0", "--announced-ip", "127.0.0.1"])
        .args([
            "--rtc-listen-ip",
            "127.0.0.1",
            "--shards",
            "1",
            "--pin",
            "false",
        ])
        .args(["--rtc-min-port", &rtc.to_string()])
        .args(["--rtc-max-port", &(rtc + 999).to_string()])
        .args(["--rate-limit", "0", "--log", "warn", "--node-id", id])
        .args(["--max-room-participants", "0"])
        .env("CHOIR_REDIS_URL", redis)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start choir");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().strip_prefix("choir listening on ").unwrap();
    (Proc(child), base.to_string())
}

struct Api {
    agent: ureq::Agent,
}

impl Api {
    fn get(&self, base: &str, path: &str) -> (Value, Option<String>) {
        let r = self
            .agent
            .get(&format!("{base}/api/voice/{path}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let node = r.header("x-choir-node").map(String::from);
        (r.into_json().unwrap(), node)
    }

    fn post(&self, base: &str, path: &str, body: Value) -> Value {
        self.agent
            .post(&format!("{base}/api/voice/{path}"))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .into_json()
            .unwrap()
    }
}

fn dtls() -> Value {
    let fp = vec!["AB"; 32].join(":");
    json!({"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": fp}]})
}

/// The plan's join, through `base`; returns its duration.
fn join(api: &Api, base: &str, channel: &str, user: &str, ssrc: u32) -> Duration {
    let started = Instant::now();
    let (caps, _) = api.get(base, &format!("rtp-capabilities/{channel}"));
    let send = api.post(
        base,
        "create-transport",
        json!({"channelId": channel, "userId": user, "direction": "send"}),
    );
    api.post(base, "connect-transport", json!({"channelId": channel, "userId": user, "transportId": send["id"], "dtlsParameters": dtls()}));
    let rtp = json!({"mid": "0", "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2, "parameters": {}, "rtcpFeedback": []}],
        "headerExtensions": [], "encodings": [{"ssrc": ssrc}], "rtcp": {"cname": user, "reducedSize": true}});
    api.post(
        base,
        "produce",
        json!({"channelId": channel, "userId": user, "kind": "audio", "rtpParameters": rtp}),
    );
    let recv = api.post(
        base,
        "create-transport",
        json!({"channelId": channel, "userId": user, "direction": "recv"}),
    );
    api.post(base, "connect-transport", json!({"channelId": channel, "userId": user, "transportId": recv["id"], "dtlsParameters": dtls()}));
    let (list, _) = api.get(base, &format!("producers/{channel}/{user}"));
    for p in list["producers"].as_array().unwrap() {
        api.post(base, "consume", json!({"channelId": channel, "userId": user, "producerId": p["producerId"], "rtpCapabilities": caps["rtpCapabilities"]}));
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs benches without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (rooms, joins) = (arg("--rooms", 20), arg("--joins", 10));
    let port = net::free_port_range(1).0;
    let dir = std::env::temp_dir().join(format!("choir-bench-redis-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _redis = Proc(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)"),
    );
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two RTC ranges of 1000 ports, outside the ephemeral range and probed free (UDP and TCP).
    let (rtc, _) = net::free_port_range(2000);
    let (_a, base_a) = start_node(&url, "bench-a", rtc);
    let (_b, base_b) = start_node(&url, "bench-b", rtc + 1000);
    let api = Api {
        agent: ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_idle_connections_per_host(4)
            .build(),
    };
    // Both nodes registered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get(&base_a, "cluster").0["nodes"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "nodes did not register");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Rooms and their owners; warm both paths (connections, caches).
    let mut plan = Vec::new();
    for r in 0..rooms {
        let channel = format!("bench-room-{r}");
        let (_, owner) = api.get(&base_a, &format!("rtp-capabilities/{channel}"));
        let (owner, other) = if owner.as_deref() == Some("bench-a") {
            (&base_a, &base_b)
        } else {
            (&base_b, &base_a)
        };
        api.get(other, &format!("rtp-capabilities/{channel}"));
        plan.push((channel, owner.clone(), other.clone()));
    }
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    let mut ssrc = 1000u32;
    for j in 0..joins {
        for (r, (channel, owner, other)) in plan.iter().enumerate() {
            ssrc += 2;
            let d = |api: &Api| join(api, owner, channel, &format!("d{j}"), ssrc);
            let p = |api: &Api| join(api, other, channel, &format!("p{j}"), ssrc + 1);
            if (j + r) % 2 == 0 {
                direct.push(d(&api));
                proxied.push(p(&api));
            } else {
                proxied.push(p(&api));
                direct.push(d(&api));
            }
        }
    }
    direct.sort();
    proxied.sort();
    println!(
        "{} joins per path, {rooms} rooms of up to {} participants, 2 nodes + Redis on loopback",
        direct.len(),
        2 * joins
    );
    println!("| path | mean ms | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("through the owner", &direct),
        ("through a proxying node", &proxied),
    ] {
        let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1000.0;
        println!(
            "| {name} | {mean:.2} | {:.2} | {:.2} | {:.2} |",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
