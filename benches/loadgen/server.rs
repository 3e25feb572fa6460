//! The server under test: choir (started here or running), the bare relay (a child process),
//! or a running Janus; its pid for CPU and RSS, its drop counters.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::janus;
use crate::setup::{Api, Clients, Relay};
use crate::Args;

/// A room name that choir places on shard `index % shards` (rooms spread evenly over shards).
pub fn room_name(index: usize, shards: usize) -> String {
    let shards = shards.max(1);
    (0..)
        .map(|k| format!("bench-{index}-{k}"))
        .find(|name| choir::shard::shard_for(name, shards) == index % shards)
        .expect("some name lands on every shard")
}

/// The server under test.
pub enum Server {
    Choir {
        api: Api,
        clients: Clients,
        child: Option<Child>,
        pid: Option<u32>,
        ports: (u16, u16),
    },
    Relay(Relay),
    Janus {
        janus: janus::Janus,
        clients: Clients,
        pid: Option<u32>,
        ip: IpAddr,
    },
}

/// Janus's RTP port range (benches/janus/configs/janus.jcfg): below the generator's ephemeral
/// ports and choir's benchmark range.
pub const JANUS_PORTS: (u16, u16) = (10000, 19999);

impl Server {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Server::Choir { pid, .. } => *pid,
            Server::Relay(r) => Some(r.child.id()),
            Server::Janus { pid, .. } => *pid,
        }
    }

    /// Choir's `egress.udp_send_failed` drops (or the relay's send failures) so far.
    pub fn send_failed(&mut self) -> u64 {
        match self {
            Server::Choir { api, .. } => api
                .get("stats")
                .ok()
                .and_then(|v| v["total"]["drops"]["egress.udp_send_failed"].as_u64())
                .unwrap_or(0),
            Server::Relay(r) => r.stats().1,
            Server::Janus { .. } => 0,
        }
    }

    /// Choir's drop counters, for the log.
    pub fn drops(&self) -> String {
        match self {
            Server::Choir { api, .. } => api
                .get("stats")
                .map(|v| {
                    let per_shard = |key: &str| {
                        v["shards"].as_array().map(|s| {
                            s.iter()
                                .map(|x| x[key].as_u64().unwrap_or(0))
                                .collect::<Vec<_>>()
                        })
                    };
                    format!(
                        "drops {} loop lag {:?} parks {:?} unheard {:?}",
                        v["total"]["drops"],
                        per_shard("loopLagUs"),
                        per_shard("loopParks"),
                        per_shard("loopUnheard"),
                    )
                })
                .unwrap_or_default(),
            Server::Relay(_) | Server::Janus { .. } => String::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = match self {
            Server::Choir { child, .. } => child.as_mut(),
            Server::Relay(r) => Some(&mut r.child),
            Server::Janus { .. } => None,
        };
        if let Some(c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// choir's RTC range: `--rtc-min-port` and `--rtc-ports`, ended below the kernel's ephemeral
/// range when it would reach into it (the generator's sockets and every other port-0 bind on
/// the machine land there: choir would skip the ports they hold, and the drop accounting,
/// which tells choir's sockets by their range, would count theirs).
fn rtc_range(args: &Args) -> (u16, u16) {
    let min = args.rtc_min_port;
    let max = min.saturating_add(args.rtc_ports.max(1) - 1);
    let (lo, hi) = crate::sys::ephemeral_range();
    if args.url.is_some() || max < lo || min > hi {
        return (min, max);
    }
    if min < lo {
        eprintln!(
            "loadgen: choir's RTC ports end at {} (the ephemeral range {lo}-{hi} starts there)",
            lo - 1
        );
        return (min, lo - 1);
    }
    eprintln!(
        "loadgen: warning: choir's RTC ports {min}-{max} lie in the ephemeral range {lo}-{hi}"
    );
    (min, max)
}

/// choir's consent timeout (long: set-up of thousands of legs must not lose any), and in a
/// churn run (churn.rs) the churn's consent timeout and join deadline, so that vanished and
/// never-connecting churners are removed within the run.
fn timeouts(args: &Args) -> Vec<String> {
    if args.churn <= 0.0 {
        return vec!["--consent-timeout".into(), "120s".into()];
    }
    let ms = |secs: f64| format!("{}ms", (secs * 1000.0) as u64);
    vec![
        "--consent-timeout".into(),
        ms(args.churn_consent_timeout),
        "--join-timeout".into(),
        ms(args.churn_join_timeout),
    ]
}

/// Starts choir (`bin`, else the one cargo built) in `port_mode`, or connects to `--url`.
pub fn start_choir(args: &Args, port_mode: &str, bin: Option<&PathBuf>) -> Result<Server, String> {
    let clients = Clients::new();
    let (min_port, max_port) = rtc_range(args);
    if let Some(url) = &args.url {
        return Ok(Server::Choir {
            api: Api::new(url),
            clients,
            child: None,
            pid: args.pid,
            ports: (min_port, max_port),
        });
    }
    let bin = bin
        .or(args.choir_bin.as_ref())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_choir")));
    let log = std::fs::File::create(args.out.join("choir.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(&args.server_cpus)
        .arg(&bin)
        .args(["--listen", "127.0.0.1:0", "--announced-ip", "127.0.0.1"])
        .args(["--rtc-listen-ip", "127.0.0.1", "--log", "warn"])
        .args(["--dtls-timeout", "60s"])
        .args(timeouts(args))
        // Set-up sends thousands of API requests from one address: no per-IP rate limit.
        .args(["--rate-limit", "0"])
        .arg("--rtc-min-port")
        .arg(min_port.to_string())
        .arg("--rtc-max-port")
        .arg(max_port.to_string())
        .arg("--shards")
        .arg(args.shards.to_string())
        .arg("--port-mode")
        .arg(port_mode)
        .arg("--pin")
        .arg(if args.shards > 1 { "true" } else { "false" })
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let base = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("choir listening on ").map(str::to_string))
        .ok_or("choir did not print its address")?;
    std::thread::spawn(move || for _ in lines {});
    let pid = child.id();
    Ok(Server::Choir {
        api: Api::new(&base),
        clients,
        child: Some(child),
        pid: Some(pid),
        ports: (min_port, max_port),
    })
}

pub fn start_janus(args: &Args) -> Result<Server, String> {
    let ip = match args.janus_ip {
        Some(ip) => ip,
        None => first_ipv4().ok_or("no IPv4 address for Janus: give --janus-ip")?,
    };
    let pid = args.pid.or_else(|| {
        let out = Command::new("pgrep").args(["-xn", "janus"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    });
    Ok(Server::Janus {
        janus: janus::Janus::connect(&args.janus_url)?,
        clients: Clients::new(),
        pid,
        ip,
    })
}

/// This machine's first non-loopback IPv4 address (`hostname -I`).
fn first_ipv4() -> Option<IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

pub fn start_relay(args: &Args, shared: bool) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(&args.server_cpus)
        .arg(exe)
        .arg("--relay-server")
        .args(shared.then_some("--relay-shared"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    Ok(Server::Relay(Relay::new(child)))
}
