//! The command line and environment: every setting as a flag with its environment variable
//! (a flag wins over its env var), read as text; `Config::from_cli` validates it.

use clap::Parser;

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
    pub http: super::limits::HttpArgs,

    #[command(flatten)]
    pub cluster: super::cluster::ClusterArgs,
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
