//! The limits' and hardening flags, validated into [`Limits`] and the auth, metrics and
//! logging settings (see `crate::control::limits` for what each limit does).

use super::{parse_duration, Bad, Cli, ConfigError};
use crate::control::auth::Secret;
use crate::control::limits::Limits;
use crate::process::logging::LogFormat;

/// The HTTP hygiene flags (flattened into [`Cli`]).
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Most concurrent API connections per client IP (0 = no limit); more are closed at once.
    #[arg(
        long,
        env = "CHOIR_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value = "256"
    )]
    pub max_connections_per_ip: String,

    /// A connection that has not sent a whole request head this long after it opened (or
    /// after its previous exchange) is closed.
    #[arg(
        long,
        env = "CHOIR_HEADER_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub header_timeout: String,
}

/// The hardening part of the configuration, validated.
pub(crate) struct Hardening {
    pub auth: Option<Secret>,
    /// The auth secret's bytes (the cluster secret is derived from them when not set).
    pub auth_bytes: Option<Vec<u8>>,
    pub metrics_token: Option<String>,
    pub limits: Limits,
    pub log_format: LogFormat,
    pub test_faults: bool,
}

pub(crate) fn parse_hardening(cli: &Cli, bad: Bad<'_>) -> Result<Hardening, ConfigError> {
    let number = |id: &str, v: &str| -> Result<u32, ConfigError> {
        v.trim()
            .parse::<u32>()
            .map_err(|_| bad(id, v, "not a count (0 = no limit)"))
    };
    let limits = Limits {
        max_rooms: number("max_rooms", &cli.max_rooms)?,
        max_room_participants: number("max_room_participants", &cli.max_room_participants)?,
        rate_limit: number("rate_limit", &cli.rate_limit)?,
        rate_burst: number("rate_burst", &cli.rate_burst)?,
        max_event_streams_per_user: number(
            "max_event_streams_per_user",
            &cli.max_event_streams_per_user,
        )?,
        max_connections_per_ip: number("max_connections_per_ip", &cli.http.max_connections_per_ip)?,
        header_timeout: parse_duration(&cli.http.header_timeout).ok_or_else(|| {
            bad(
                "header_timeout",
                &cli.http.header_timeout,
                "not a duration (e.g. 30s, 500ms)",
            )
        })?,
    };
    if limits.rate_limit > 0 && limits.rate_burst == 0 {
        return Err(bad(
            "rate_burst",
            &cli.rate_burst,
            "must be at least 1 when --rate-limit is set",
        ));
    }
    let secret = match (&cli.auth_secret, &cli.auth_secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "set only one of --auth-secret (CHOIR_AUTH_SECRET) and --auth-secret-file (CHOIR_AUTH_SECRET_FILE)".into(),
            ))
        }
        (Some(s), None) => Some(("auth_secret", s.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                bad("auth_secret_file", path,
                    &format!("cannot read it: {e}"),
                )
            })?;
            Some(("auth_secret_file", text,
            ))
        }
        (None, None) => None,
    };
    let (auth, auth_bytes) = match secret {
        None => (None, None),
        // An empty value (CHOIR_AUTH_SECRET= in an env file) means "not set".
        Some((_, s)) if s.trim().is_empty() => (None, None),
        Some((id, s)) => (
            Some(Secret::new(s.trim().as_bytes()).map_err(|why| bad(id, "<hidden>", &why))?),
            Some(s.trim().as_bytes().to_vec()),
        ),
    };
    let log_format = match cli.log_format.trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(bad("log_format", other, "not a log format (text, json)")),
    };
    let test_faults = matches!(
        cli.test_faults.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    );
    let metrics_token = Some(cli.metrics_token.trim().to_string()).filter(|t| !t.is_empty());
    Ok(Hardening {
        auth,
        auth_bytes,
        metrics_token,
        limits,
        log_format,
        test_faults,
    })
}
