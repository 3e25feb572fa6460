//! Configuration: the plan's environment variables plus CLI flags (a flag wins over its env var).
//!
//! Every value is read as text and validated here, so that a bad value ends the process with
//! exit status 2 and one line naming it (`choir: invalid RTC_MIN_PORT "abc": ...`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

mod speaking;
mod values;

pub use values::parse_duration;
use values::{as_millis, first_non_loopback_ipv4, parse_bool, parse_listen_ips};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

/// choir: a voice SFU speaking the mediasoup-client voice API.
#[derive(Parser, Debug, Clone)]
#[command(name = "choir", version, about, long_about = None)]
pub struct Cli {
    /// IP address put in ICE candidates (the address browsers send media to).
    /// Default: the first non-loopback IPv4 address of this host, else 127.0.0.1.
    #[arg(long, env = "SFU_ANNOUNCED_IP", value_name = "IP")]
    pub announced_ip: Option<String>,

    /// Lowest UDP port for RTC transports.
    #[arg(
        long,
        env = "RTC_MIN_PORT",
        value_name = "PORT",
        default_value = "40000"
    )]
    pub rtc_min_port: String,

    /// Highest UDP port for RTC transports (inclusive).
    #[arg(
        long,
        env = "RTC_MAX_PORT",
        value_name = "PORT",
        default_value = "49999"
    )]
    pub rtc_max_port: String,

    /// Local IP address RTC sockets bind to.
    #[arg(
        long,
        env = "CHOIR_RTC_LISTEN_IP",
        value_name = "IP",
        default_value = "0.0.0.0"
    )]
    pub rtc_listen_ip: String,

    /// RTC listen addresses, each with the address announced in candidates:
    /// "IP[=ANNOUNCED],..." (IPv4 and IPv6, e.g. "10.0.0.5=203.0.113.5,::=2001:db8::5").
    /// Overrides --rtc-listen-ip/--announced-ip. A specific IP without "=" announces itself;
    /// 0.0.0.0 announces --announced-ip.
    #[arg(long, env = "SFU_LISTEN_IPS", value_name = "LIST")]
    pub listen_ips: Option<String>,

    /// Offer UDP host candidates.
    #[arg(
        long,
        env = "CHOIR_ENABLE_UDP",
        value_name = "BOOL",
        default_value = "true"
    )]
    pub enable_udp: String,

    /// Offer passive TCP host candidates (ICE-TCP, RFC 6544; media framed per RFC 4571), ranked
    /// below UDP.
    #[arg(
        long,
        env = "CHOIR_ENABLE_TCP",
        value_name = "BOOL",
        default_value = "true"
    )]
    pub enable_tcp: String,

    /// "per-transport": every transport binds its own port from the range (mediasoup's
    /// WebRtcTransport). "single": shard i listens on RTC_MIN_PORT+i (UDP and TCP) for all its
    /// transports, routing by ICE ufrag and remote address (mediasoup's WebRtcServer).
    #[arg(
        long,
        env = "CHOIR_PORT_MODE",
        value_name = "MODE",
        default_value = "per-transport"
    )]
    pub port_mode: String,

    /// Address of the HTTP control server (the voice API under /api/voice).
    #[arg(
        long,
        env = "CHOIR_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:3001"
    )]
    pub listen: String,

    /// Number of media shards (one glommio executor each). Default: available cores.
    #[arg(long, env = "CHOIR_SHARDS", value_name = "N")]
    pub shards: Option<String>,

    /// Pin shard i to CPU i (when that CPU is available to the process).
    #[arg(long, env = "CHOIR_PIN", value_name = "BOOL", default_value = "true")]
    pub pin: String,

    /// Access-Control-Allow-Origin sent on API replies ("" disables CORS headers).
    #[arg(
        long,
        env = "CHOIR_CORS_ORIGIN",
        value_name = "ORIGIN",
        default_value = "*"
    )]
    pub cors_origin: String,

    /// ICE consent timeout: a transport with no valid STUN request for this long is closed
    /// (e.g. "30s", "500ms").
    #[arg(
        long,
        env = "CHOIR_CONSENT_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub consent_timeout: String,

    /// A DTLS handshake not finished within this time fails and closes its transport.
    #[arg(
        long,
        env = "CHOIR_DTLS_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub dtls_timeout: String,

    /// A participant with no connected transport this long after its last successful API
    /// call is removed (like a leave); so is a room nobody joined (0 = never).
    #[arg(
        long,
        env = "CHOIR_JOIN_TIMEOUT",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub join_timeout: String,

    /// A consumer other than its transport's first starts forwarding after this delay, the
    /// time a browser takes to apply the consumer's SDP (0 disables the hold).
    #[arg(
        long,
        env = "CHOIR_CONSUMER_HOLD",
        value_name = "DURATION",
        default_value = "500ms"
    )]
    pub consumer_hold: String,

    /// Log filter (tracing EnvFilter syntax, e.g. "info", "choir=debug").
    #[arg(long, env = "CHOIR_LOG", value_name = "FILTER", default_value = "info")]
    pub log: String,

    /// Print the effective configuration as JSON and exit (checks env and flags).
    #[arg(long)]
    pub print_config: bool,

    /// Secret for API tokens (JWT HS256, at least 32 bytes; `openssl rand -hex 32`). When set,
    /// every voice API route needs `Authorization: Bearer <token>`. Prefer the environment or
    /// --auth-secret-file: a flag's value is visible in the process list.
    #[arg(
        long,
        env = "CHOIR_AUTH_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,

    /// File holding the token secret (surrounding whitespace ignored).
    #[arg(long, env = "CHOIR_AUTH_SECRET_FILE", value_name = "PATH")]
    pub auth_secret_file: Option<String>,

    /// Bearer token required on GET /metrics and /api/voice/stats ("" = open).
    #[arg(
        long,
        env = "CHOIR_METRICS_TOKEN",
        value_name = "TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub metrics_token: String,

    /// Most rooms per process (0 = no limit); each shard takes its share, rounded up.
    #[arg(
        long,
        env = "CHOIR_MAX_ROOMS",
        value_name = "N",
        default_value = "1000"
    )]
    pub max_rooms: String,

    /// Most participants per room (0 = no limit).
    #[arg(
        long,
        env = "CHOIR_MAX_ROOM_PARTICIPANTS",
        value_name = "N",
        default_value = "100"
    )]
    pub max_room_participants: String,

    /// API requests per second per client IP (token bucket; 0 = no limit).
    #[arg(
        long,
        env = "CHOIR_RATE_LIMIT",
        value_name = "N",
        default_value = "100"
    )]
    pub rate_limit: String,

    /// Burst of the per-IP token bucket (requests).
    #[arg(
        long,
        env = "CHOIR_RATE_BURST",
        value_name = "N",
        default_value = "200"
    )]
    pub rate_burst: String,

    /// Most open event streams (SSE) per userId (0 = no limit).
    #[arg(
        long,
        env = "CHOIR_MAX_EVENT_STREAMS_PER_USER",
        value_name = "N",
        default_value = "4"
    )]
    pub max_event_streams_per_user: String,

    /// Log format: "text" (one line per event) or "json" (one object per line).
    #[arg(
        long,
        env = "CHOIR_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: String,

    /// Speaking indicators: the window after which each producer's speaking state is decided
    /// (0 turns speaking detection off).
    #[arg(
        long,
        env = "CHOIR_SPEAKING_INTERVAL",
        value_name = "DURATION",
        default_value = "200ms"
    )]
    pub speaking_interval: String,

    /// A packet is loud when its RFC 6464 audio level is at or above this (dBov, -127..0).
    #[arg(
        long,
        env = "CHOIR_SPEAKING_THRESHOLD",
        value_name = "DBOV",
        default_value = "-40",
        allow_hyphen_values = true
    )]
    pub speaking_threshold: String,

    /// Share of a window that must be loud to start speaking (0-1, e.g. 0.4 or 40%).
    #[arg(
        long,
        env = "CHOIR_SPEAKING_RATIO",
        value_name = "SHARE",
        default_value = "0.4"
    )]
    pub speaking_ratio: String,

    /// Speaking stops after this long without a loud window (rounded up to whole windows).
    #[arg(
        long,
        env = "CHOIR_SPEAKING_HANG",
        value_name = "DURATION",
        default_value = "600ms"
    )]
    pub speaking_hang: String,

    /// Test only: enables POST /api/voice/test/panic-shard/:n (fault tests). Never in production.
    #[arg(
        long,
        env = "CHOIR_TEST_FAULTS",
        value_name = "BOOL",
        default_value = "false",
        hide = true
    )]
    pub test_faults: String,

    #[command(flatten)]
    pub http: crate::control::limits::HttpArgs,

    #[command(flatten)]
    pub cluster: crate::cluster::config::ClusterArgs,
    /// Serve the try-it page at `/` (join a channel from a browser; embedded, no network).
    #[arg(
        long,
        env = "CHOIR_DEMO_PAGE",
        value_name = "BOOL",
        default_value = "true"
    )]
    pub demo_page: String,

    #[command(subcommand)]
    pub command: Option<crate::control::auth::Subcommand>,
}

/// Validated configuration.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub announced_ip: IpAddr,
    pub rtc_listen_ip: IpAddr,
    /// Where RTC sockets bind and what each announces (at least one).
    pub listen_ips: Vec<ListenIp>,
    pub enable_udp: bool,
    pub enable_tcp: bool,
    pub port_mode: PortMode,
    pub rtc_min_port: u16,
    pub rtc_max_port: u16,
    pub listen: SocketAddr,
    pub shards: usize,
    pub pin: bool,
    pub cors_origin: Option<String>,
    #[serde(serialize_with = "as_millis", rename = "consentTimeoutMs")]
    pub consent_timeout: Duration,
    #[serde(serialize_with = "as_millis", rename = "dtlsTimeoutMs")]
    pub dtls_timeout: Duration,
    #[serde(serialize_with = "as_millis", rename = "joinTimeoutMs")]
    pub join_timeout: Duration,
    #[serde(serialize_with = "as_millis", rename = "consumerHoldMs")]
    pub consumer_hold: Duration,
    pub log: String,
    #[serde(skip)]
    pub print_config: bool,
    /// Token secret; `None` leaves the API open (a warning at start).
    #[serde(serialize_with = "is_set", rename = "authEnabled")]
    pub auth: Option<crate::control::auth::Secret>,
    #[serde(serialize_with = "is_set", rename = "metricsTokenSet")]
    pub metrics_token: Option<String>,
    pub limits: crate::control::limits::Limits,
    pub log_format: crate::process::logging::LogFormat,
    pub speaking: crate::sfu::SpeakingSettings,
    #[serde(skip)]
    pub test_faults: bool,
    pub cluster: crate::cluster::config::ClusterConfig,
    pub demo_page: bool,
}

fn is_set<T, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(v.is_some())
}

/// An RTC listen address and the address candidates announce for it (they differ behind NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ListenIp {
    pub ip: IpAddr,
    pub announced: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// One port per transport, from the shard's slice of the range.
    PerTransport,
    /// One UDP and one TCP port per shard: RTC_MIN_PORT + shard index.
    Single,
}

/// A configuration error: one line, naming the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses flags and environment (flags win) and validates them.
    /// Clap's own errors (unknown flag, `--help`, `--version`) exit through clap.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().get_matches_from(args);
        let cli = Cli::from_arg_matches(&matches).map_err(|e| ConfigError(e.to_string()))?;
        Config::from_cli(&cli, &matches)
    }

    /// Validates a parsed command line; `matches` tells where each value came from.
    pub fn from_cli(cli: &Cli, matches: &ArgMatches) -> Result<Config, ConfigError> {
        let name = |id: &str, flag: &str, env: &str| -> String {
            match matches.value_source(id) {
                Some(ValueSource::EnvVariable) => env.to_string(),
                _ => flag.to_string(),
            }
        };
        let bad = |id: &str, flag: &str, env: &str, value: &str, why: &str| {
            ConfigError(format!(
                "invalid {} {:?}: {}",
                name(id, flag, env),
                value,
                why
            ))
        };

        let announced_ip = match &cli.announced_ip {
            Some(v) => v.trim().parse::<IpAddr>().map_err(|_| {
                bad(
                    "announced_ip",
                    "--announced-ip",
                    "SFU_ANNOUNCED_IP",
                    v,
                    "not an IP address",
                )
            })?,
            None => first_non_loopback_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        if announced_ip.is_unspecified() {
            return Err(bad(
                "announced_ip",
                "--announced-ip",
                "SFU_ANNOUNCED_IP",
                &announced_ip.to_string(),
                "an unspecified address cannot be announced",
            ));
        }
        let rtc_listen_ip = cli.rtc_listen_ip.trim().parse::<IpAddr>().map_err(|_| {
            bad(
                "rtc_listen_ip",
                "--rtc-listen-ip",
                "CHOIR_RTC_LISTEN_IP",
                &cli.rtc_listen_ip,
                "not an IP address",
            )
        })?;
        let port = |id: &str, flag: &str, env: &str, v: &str| -> Result<u16, ConfigError> {
            match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(bad(id, flag, env, v, "not a port number (1-65535)")),
            }
        };
        let rtc_min_port = port(
            "rtc_min_port",
            "--rtc-min-port",
            "RTC_MIN_PORT",
            &cli.rtc_min_port,
        )?;
        let rtc_max_port = port(
            "rtc_max_port",
            "--rtc-max-port",
            "RTC_MAX_PORT",
            &cli.rtc_max_port,
        )?;
        if rtc_min_port >= rtc_max_port {
            return Err(ConfigError(format!(
                "invalid {} {}: must be below {} {}",
                name("rtc_min_port", "--rtc-min-port", "RTC_MIN_PORT"),
                rtc_min_port,
                name("rtc_max_port", "--rtc-max-port", "RTC_MAX_PORT"),
                rtc_max_port
            )));
        }
        let listen = cli.listen.trim().parse::<SocketAddr>().map_err(|_| {
            bad(
                "listen",
                "--listen",
                "CHOIR_LISTEN",
                &cli.listen,
                "not an IP:port address",
            )
        })?;
        let shards = match &cli.shards {
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => n,
                _ => {
                    return Err(bad(
                        "shards",
                        "--shards",
                        "CHOIR_SHARDS",
                        v,
                        "not a shard count (1-1024)",
                    ))
                }
            },
        };
        let ports = usize::from(rtc_max_port - rtc_min_port) + 1;
        if ports < shards {
            return Err(ConfigError(format!(
                "invalid RTC port range {rtc_min_port}-{rtc_max_port}: {ports} ports cannot be split over {shards} shards"
            )));
        }
        let pin = parse_bool(&cli.pin).ok_or_else(|| {
            bad(
                "pin",
                "--pin",
                "CHOIR_PIN",
                &cli.pin,
                "not a boolean (true/false)",
            )
        })?;
        let cors_origin = match cli.cors_origin.trim() {
            "" => None,
            o if o.bytes().all(|b| b.is_ascii_graphic()) => Some(o.to_string()),
            _ => {
                return Err(bad(
                    "cors_origin",
                    "--cors-origin",
                    "CHOIR_CORS_ORIGIN",
                    &cli.cors_origin,
                    "not a valid header value",
                ))
            }
        };
        let consent_timeout = parse_duration(&cli.consent_timeout).ok_or_else(|| {
            bad(
                "consent_timeout",
                "--consent-timeout",
                "CHOIR_CONSENT_TIMEOUT",
                &cli.consent_timeout,
                "not a duration (e.g. 30s, 500ms)",
            )
        })?;
        let dtls_timeout = parse_duration(&cli.dtls_timeout).ok_or_else(|| {
            bad(
                "dtls_timeout",
                "--dtls-timeout",
                "CHOIR_DTLS_TIMEOUT",
                &cli.dtls_timeout,
                "not a duration (e.g. 30s, 500ms)",
            )
        })?;
        let join_timeout = match cli.join_timeout.trim() {
            "0" | "0s" | "0ms" => Duration::ZERO,
            v => parse_duration(v).ok_or_else(|| {
                bad(
                    "join_timeout",
                    "--join-timeout",
                    "CHOIR_JOIN_TIMEOUT",
                    &cli.join_timeout,
                    "not a duration (e.g. 60s, 0 = never)",
                )
            })?,
        };
        let consumer_hold = match cli.consumer_hold.trim() {
            "0" | "0s" | "0ms" => Duration::ZERO,
            v => parse_duration(v).ok_or_else(|| {
                bad(
                    "consumer_hold",
                    "--consumer-hold",
                    "CHOIR_CONSUMER_HOLD",
                    &cli.consumer_hold,
                    "not a duration (e.g. 500ms, 0)",
                )
            })?,
        };
        let listen_ips = match &cli.listen_ips {
            None => vec![ListenIp {
                ip: rtc_listen_ip,
                announced: announced_ip,
            }],
            Some(list) => parse_listen_ips(list, announced_ip)
                .map_err(|why| bad("listen_ips", "--listen-ips", "SFU_LISTEN_IPS", list, &why))?,
        };
        let enable_udp = parse_bool(&cli.enable_udp).ok_or_else(|| {
            bad(
                "enable_udp",
                "--enable-udp",
                "CHOIR_ENABLE_UDP",
                &cli.enable_udp,
                "not a boolean (true/false)",
            )
        })?;
        let enable_tcp = parse_bool(&cli.enable_tcp).ok_or_else(|| {
            bad(
                "enable_tcp",
                "--enable-tcp",
                "CHOIR_ENABLE_TCP",
                &cli.enable_tcp,
                "not a boolean (true/false)",
            )
        })?;
        if !enable_udp && !enable_tcp {
            return Err(ConfigError(
                "invalid --enable-udp false with --enable-tcp false: transports need UDP or TCP"
                    .into(),
            ));
        }
        let port_mode = match cli.port_mode.trim() {
            "per-transport" => PortMode::PerTransport,
            "single" => PortMode::Single,
            other => {
                return Err(bad(
                    "port_mode",
                    "--port-mode",
                    "CHOIR_PORT_MODE",
                    other,
                    "not a port mode (per-transport, single)",
                ))
            }
        };
        tracing_subscriber::EnvFilter::try_new(&cli.log)
            .map_err(|e| bad("log", "--log", "CHOIR_LOG", &cli.log, &e.to_string()))?;
        let hardening = crate::control::limits::parse_hardening(cli, &bad)?;
        let cluster = crate::cluster::config::parse(&cli.cluster, &bad)?;
        let demo_page = parse_bool(&cli.demo_page).ok_or_else(|| {
            let why = "not a boolean (true/false)";
            bad(
                "demo_page",
                "--demo-page",
                "CHOIR_DEMO_PAGE",
                &cli.demo_page,
                why,
            )
        })?;
        let speaking = speaking::parse(cli, &bad)?;
        Ok(Config {
            announced_ip,
            rtc_listen_ip,
            listen_ips,
            enable_udp,
            enable_tcp,
            port_mode,
            rtc_min_port,
            rtc_max_port,
            listen,
            shards,
            pin,
            cors_origin,
            consent_timeout,
            dtls_timeout,
            join_timeout,
            consumer_hold,
            log: cli.log.clone(),
            print_config: cli.print_config,
            auth: hardening.auth,
            metrics_token: hardening.metrics_token,
            limits: hardening.limits,
            log_format: hardening.log_format,
            speaking,
            test_faults: hardening.test_faults,
            cluster,
            demo_page,
        })
    }

    /// The inclusive port slice `[first, last]` owned by `shard`: the range is cut into
    /// `shards` consecutive slices whose sizes differ by at most one.
    pub fn port_slice(&self, shard: usize) -> (u16, u16) {
        let total = usize::from(self.rtc_max_port - self.rtc_min_port) + 1;
        let start = total * shard / self.shards;
        let end = total * (shard + 1) / self.shards;
        let first = usize::from(self.rtc_min_port) + start;
        let last = usize::from(self.rtc_min_port) + end - 1;
        (first as u16, last as u16)
    }
}

#[cfg(test)]
mod tests;
