//! The load generator's flags (see the module notes in main.rs).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "choir load generator (see BENCHMARKS.md)")]
pub struct Args {
    /// What to measure, a comma list run one after the other: choir (in --port-mode);
    /// choir-single, choir-per-transport (that port mode); before-single, before-per-transport
    /// (the binary --before-bin, e.g. main's, for before/after in one run); relay (the bare
    /// relay, choir's per-transport socket layout); relay-shared (one socket,
    /// recvmmsg/sendmmsg); janus (a running Janus, see --janus-url; --pid its pid). Shorthands:
    /// both (relay, choir); all (relay, relay-shared, choir-per-transport, choir-single).
    /// cascade: two nodes in regions a and b, rooms across them, the hop's added latency
    /// (cascade.rs; --speakers defaults to 2 there). headline: three nodes in regions a, b, c,
    /// each room spread over them; CPU per node and link traffic per node pair (headline.rs).
    #[arg(long, default_value = "both")]
    pub target: String,
    /// The choir binary of the before-* targets.
    #[arg(long)]
    pub before_bin: Option<PathBuf>,
    /// A running choir's base URL (http://ADDR); then choir is not started.
    #[arg(long)]
    pub url: Option<String>,
    /// Janus's HTTP API (with --target janus).
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    pub janus_url: String,
    /// The address Janus gathers its host candidates on (benches/janus/janus.sh prints it; Janus
    /// skips the loopback interface). Default: this machine's first IPv4 address.
    #[arg(long)]
    pub janus_ip: Option<IpAddr>,
    /// The running server's pid, for CPU and RSS (with --url, or with --target janus).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The choir binary to start (default: the one cargo built for this bench).
    #[arg(long)]
    pub choir_bin: Option<PathBuf>,
    /// CPUs for the server (taskset list).
    #[arg(long, default_value = "1")]
    pub server_cpus: String,
    /// CPUs for the generator: one pinned worker thread each (comma list or ranges).
    #[arg(long, default_value = "0")]
    pub gen_cpus: String,
    /// choir's shard count (with --shards > 1, choir pins shard i to CPU i).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Participants per room.
    #[arg(long, default_value_t = 10)]
    pub participants: usize,
    /// Speakers per room (default: everyone).
    #[arg(long)]
    pub speakers: Option<usize>,
    /// The ramp: consumer streams per step (rounded up to whole rooms).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "900,1800,2700,3600,4500,5400,6300,7200,8100,9000,10800,12600,14400,18000,21600,25200,28800,36000"
    )]
    pub streams: Vec<usize>,
    /// Seconds of warm-up per step (sending, not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured per step.
    #[arg(long, default_value_t = 5.0)]
    pub measure: f64,
    /// Decrypt and time one received packet in N (all are counted).
    #[arg(long, default_value_t = 1)]
    pub sample: u64,
    /// Busy-poll the generator's sockets while publishing (no wake-ups charged to the server's
    /// core by loopback delivery); `false` sleeps in epoll between packets.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub busy_poll: bool,
    /// A step fails above this loss, in percent.
    #[arg(long, default_value_t = 0.1)]
    pub max_loss: f64,
    /// A step fails above this p99, in ms.
    #[arg(long, default_value_t = 10.0)]
    pub max_p99_ms: f64,
    /// Measure each step this many times and keep the best (lowest loss, then p99): on a shared
    /// or virtual machine one scheduling hiccup can decide a short window's p99.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Run every step even after one fails.
    #[arg(long)]
    pub no_stop: bool,
    /// Churn beside the steady load: participants joining (and leaving, vanishing, never
    /// connecting) per second, from the first step on; at the end choir must be back at its
    /// baseline (churn.rs). Every step then has the first step's rooms.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Seconds a connecting churner stays before it leaves or vanishes.
    #[arg(long, default_value_t = 3.0)]
    pub churn_life: f64,
    /// choir's --consent-timeout in a churn run, in seconds (vanished churners go after it).
    #[arg(long, default_value_t = 30.0)]
    pub churn_consent_timeout: f64,
    /// choir's --join-timeout in a churn run, in seconds (never-connecting churners go after it).
    #[arg(long, default_value_t = 10.0)]
    pub churn_join_timeout: f64,
    /// In a churn run, choir's RSS at the end must be within this fraction of the baseline.
    #[arg(long, default_value_t = 0.05)]
    pub churn_rss_tolerance: f64,
    /// Output folder (CSV, SVG, choir's log).
    #[arg(long, default_value = "target/loadgen")]
    pub out: PathBuf,
    /// First port of choir's RTC range.
    #[arg(long, default_value_t = 20000)]
    pub rtc_min_port: u16,
    /// choir's port mode: per-transport (a UDP port per transport) or single (one per shard).
    #[arg(long, default_value = "per-transport")]
    pub port_mode: String,
    /// Size of choir's RTC port range.
    #[arg(long, default_value_t = 20000)]
    pub rtc_ports: u16,
    /// Only summarize scripts/compare-janus.sh's runs in this folder (choir-<i>/, janus-<i>/).
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Only plot: read this CSV (written by an earlier run) and write an SVG beside it.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Title of the plot.
    #[arg(long)]
    pub title: Option<String>,
    /// Internal: run as the bare relay (driven over stdin).
    #[arg(long, hide = true)]
    pub relay_server: bool,
    /// Internal: the relay uses one shared socket.
    #[arg(long, hide = true)]
    pub relay_shared: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

pub fn cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<usize>().ok()),
        }
    }
    v
}
