//! Configuration: the plan's environment variables plus CLI flags (a flag wins over its env var).
//!
//! Every value is read as text and validated here, so that a bad value ends the process with
//! exit status 2 and one line naming it (`choir: invalid RTC_MIN_PORT "abc": ...`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

mod cli;
mod cluster;
mod limits;
mod speaking;
mod values;

pub use crate::shard::PortMode;
pub use cli::Cli;
pub use values::parse_duration;
use values::{as_millis, first_non_loopback_ipv4, parse_bool, parse_listen_ips};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

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

/// A configuration error: one line, naming the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Builds a setting's error from its clap id, the bad value and why it is bad:
/// `invalid NAME "value": why` (see [`setting_name`]).
pub(crate) type Bad<'a> = &'a dyn Fn(&str, &str, &str) -> ConfigError;

/// How the user set the setting `id` (a [`Cli`] field): its environment variable when the value
/// came from there, else its flag.
fn setting_name(command: &clap::Command, matches: &ArgMatches, id: &str) -> String {
    let arg = command.get_arguments().find(|a| a.get_id() == id);
    let env = arg.and_then(|a| a.get_env());
    match (matches.value_source(id), env) {
        (Some(ValueSource::EnvVariable), Some(env)) => env.to_string_lossy().into_owned(),
        _ => match arg.and_then(|a| a.get_long()) {
            Some(long) => format!("--{long}"),
            None => format!("--{}", id.replace('_', "-")),
        },
    }
}

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
        let command = Cli::command();
        let name = |id: &str| setting_name(&command, matches, id);
        let bad = |id: &str, value: &str, why: &str| {
            ConfigError(format!("invalid {} {:?}: {}", name(id), value, why))
        };

        let announced_ip = match &cli.announced_ip {
            Some(v) => v
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| bad("announced_ip", v, "not an IP address"))?,
            None => first_non_loopback_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        if announced_ip.is_unspecified() {
            return Err(bad(
                "announced_ip",
                &announced_ip.to_string(),
                "an unspecified address cannot be announced",
            ));
        }
        let rtc_listen_ip = cli
            .rtc_listen_ip
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| bad("rtc_listen_ip", &cli.rtc_listen_ip, "not an IP address"))?;
        let port = |id: &str, v: &str| -> Result<u16, ConfigError> {
            match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(bad(id, v, "not a port number (1-65535)")),
            }
        };
        let rtc_min_port = port("rtc_min_port", &cli.rtc_min_port)?;
        let rtc_max_port = port("rtc_max_port", &cli.rtc_max_port)?;
        if rtc_min_port >= rtc_max_port {
            return Err(ConfigError(format!(
                "invalid {} {}: must be below {} {}",
                name("rtc_min_port"),
                rtc_min_port,
                name("rtc_max_port"),
                rtc_max_port
            )));
        }
        let listen = cli
            .listen
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| bad("listen", &cli.listen, "not an IP:port address"))?;
        let shards = match &cli.shards {
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => n,
                _ => return Err(bad("shards", v, "not a shard count (1-1024)")),
            },
        };
        let ports = usize::from(rtc_max_port - rtc_min_port) + 1;
        if ports < shards {
            return Err(ConfigError(format!(
                "invalid RTC port range {rtc_min_port}-{rtc_max_port}: {ports} ports cannot be split over {shards} shards"
            )));
        }
        let pin = parse_bool(&cli.pin)
            .ok_or_else(|| bad("pin", &cli.pin, "not a boolean (true/false)"))?;
        let cors_origin = match cli.cors_origin.trim() {
            "" => None,
            o if o.bytes().all(|b| b.is_ascii_graphic()) => Some(o.to_string()),
            _ => {
                return Err(bad(
                    "cors_origin",
                    &cli.cors_origin,
                    "not a valid header value",
                ))
            }
        };
        let consent_timeout = parse_duration(&cli.consent_timeout).ok_or_else(|| {
            bad(
                "consent_timeout",
                &cli.consent_timeout,
                "not a duration (e.g. 30s, 500ms)",
            )
        })?;
        let dtls_timeout = parse_duration(&cli.dtls_timeout).ok_or_else(|| {
            bad(
                "dtls_timeout",
                &cli.dtls_timeout,
                "not a duration (e.g. 30s, 500ms)",
            )
        })?;
        let join_timeout = match cli.join_timeout.trim() {
            "0" | "0s" | "0ms" => Duration::ZERO,
            v => parse_duration(v).ok_or_else(|| {
                bad(
                    "join_timeout",
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
            Some(list) => {
                parse_listen_ips(list, announced_ip).map_err(|why| bad("listen_ips", list, &why))?
            }
        };
        let enable_udp = parse_bool(&cli.enable_udp)
            .ok_or_else(|| bad("enable_udp", &cli.enable_udp, "not a boolean (true/false)"))?;
        let enable_tcp = parse_bool(&cli.enable_tcp)
            .ok_or_else(|| bad("enable_tcp", &cli.enable_tcp, "not a boolean (true/false)"))?;
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
                    other,
                    "not a port mode (per-transport, single)",
                ))
            }
        };
        tracing_subscriber::EnvFilter::try_new(&cli.log)
            .map_err(|e| bad("log", &cli.log, &e.to_string()))?;
        let hardening = limits::parse_hardening(cli, &bad)?;
        let cluster = cluster::parse(&cli.cluster, &bad, hardening.auth_bytes.as_deref())?;
        if let Some(p) = cluster.link_port {
            let last = usize::from(p) + shards - 1;
            let (lo, hi) = (usize::from(rtc_min_port), usize::from(rtc_max_port));
            if last > 65535 || (usize::from(p) <= hi && last >= lo) {
                let why = format!(
                    "shards take ports {p}-{last}: they must be ports and outside the RTC range {lo}-{hi}"
                );
                return Err(bad("link_port", &p.to_string(), &why));
            }
        }
        let demo_page = parse_bool(&cli.demo_page).ok_or_else(|| {
            let why = "not a boolean (true/false)";
            bad("demo_page", &cli.demo_page, why)
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
