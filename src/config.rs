//! Configuration: the plan's environment variables plus CLI flags (a flag wins over its env var).
//!
//! Every value is read as text and validated here, so that a bad value ends the process with
//! exit status 2 and one line naming it (`choir: invalid RTC_MIN_PORT "abc": ...`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

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
    #[arg(long, env = "CHOIR_RATE_LIMIT", value_name = "N", default_value = "50")]
    pub rate_limit: String,

    /// Burst of the per-IP token bucket (requests).
    #[arg(
        long,
        env = "CHOIR_RATE_BURST",
        value_name = "N",
        default_value = "100"
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

    /// Test only: enables POST /api/voice/test/panic-shard/:n (fault tests). Never in production.
    #[arg(
        long,
        env = "CHOIR_TEST_FAULTS",
        value_name = "BOOL",
        default_value = "false",
        hide = true
    )]
    pub test_faults: String,

    #[command(subcommand)]
    pub command: Option<crate::auth::Subcommand>,
}

/// Validated configuration.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub announced_ip: IpAddr,
    pub rtc_listen_ip: IpAddr,
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
    pub log: String,
    #[serde(skip)]
    pub print_config: bool,
    /// Token secret; `None` leaves the API open (a warning at start).
    #[serde(serialize_with = "is_set", rename = "authEnabled")]
    pub auth: Option<crate::auth::Secret>,
    #[serde(serialize_with = "is_set", rename = "metricsTokenSet")]
    pub metrics_token: Option<String>,
    pub limits: crate::control::limits::Limits,
    pub log_format: crate::logging::LogFormat,
    #[serde(skip)]
    pub test_faults: bool,
}

fn is_set<T, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(v.is_some())
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
        tracing_subscriber::EnvFilter::try_new(&cli.log)
            .map_err(|e| bad("log", "--log", "CHOIR_LOG", &cli.log, &e.to_string()))?;
        let hardening = crate::control::limits::parse_hardening(cli, &bad)?;
        Ok(Config {
            announced_ip,
            rtc_listen_ip,
            rtc_min_port,
            rtc_max_port,
            listen,
            shards,
            pin,
            cors_origin,
            consent_timeout,
            dtls_timeout,
            log: cli.log.clone(),
            print_config: cli.print_config,
            auth: hardening.auth,
            metrics_token: hardening.metrics_token,
            limits: hardening.limits,
            log_format: hardening.log_format,
            test_faults: hardening.test_faults,
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

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses "30s", "500ms", "2m" or a bare number of seconds; must be positive and ≤ 1 day.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs > 0.0 && secs <= 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// The first IPv4 address of an up, non-loopback interface (as the plan's getLocalIp()).
fn first_non_loopback_ipv4() -> Option<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        if !up || loopback || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of family sa_family.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_INET {
            // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() && !ip.is_unspecified() {
                found = Some(IpAddr::V4(ip));
                break;
            }
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["choir"];
        v.extend_from_slice(args);
        Config::from_args(v)
    }

    #[test]
    fn defaults_validate() {
        let c = parse(&["--announced-ip", "203.0.113.5", "--shards", "2"]).unwrap();
        assert_eq!(c.rtc_min_port, 40000);
        assert_eq!(c.rtc_max_port, 49999);
        assert_eq!(c.listen, "0.0.0.0:3001".parse::<SocketAddr>().unwrap());
        assert_eq!(c.consent_timeout, Duration::from_secs(30));
        assert_eq!(c.port_slice(0), (40000, 44999));
        assert_eq!(c.port_slice(1), (45000, 49999));
    }

    #[test]
    fn slices_cover_the_range_without_overlap() {
        let c = parse(&[
            "--rtc-min-port",
            "1000",
            "--rtc-max-port",
            "1006",
            "--shards",
            "3",
        ])
        .unwrap();
        let slices: Vec<_> = (0..3).map(|i| c.port_slice(i)).collect();
        assert_eq!(slices, vec![(1000, 1001), (1002, 1003), (1004, 1006)]);
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let e = parse(&["--rtc-min-port", "abc"]).unwrap_err();
        assert_eq!(
            e.0,
            "invalid --rtc-min-port \"abc\": not a port number (1-65535)"
        );
        let e = parse(&["--rtc-min-port", "5000", "--rtc-max-port", "5000"]).unwrap_err();
        assert!(
            e.0.contains("--rtc-min-port 5000: must be below --rtc-max-port 5000"),
            "{e}"
        );
        let e = parse(&["--announced-ip", "1.2.3"]).unwrap_err();
        assert!(e.0.starts_with("invalid --announced-ip \"1.2.3\""), "{e}");
        let e = parse(&["--announced-ip", "0.0.0.0"]).unwrap_err();
        assert!(e.0.contains("unspecified"), "{e}");
        let e = parse(&[
            "--rtc-min-port",
            "1000",
            "--rtc-max-port",
            "1002",
            "--shards",
            "4",
        ])
        .unwrap_err();
        assert!(e.0.contains("3 ports cannot be split over 4 shards"), "{e}");
        assert!(parse(&["--shards", "0"])
            .unwrap_err()
            .0
            .contains("--shards"));
        assert!(parse(&["--listen", "nope"])
            .unwrap_err()
            .0
            .contains("--listen"));
        assert!(parse(&["--consent-timeout", "3x"])
            .unwrap_err()
            .0
            .contains("--consent-timeout"));
        assert!(parse(&["--pin", "maybe"]).unwrap_err().0.contains("--pin"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
