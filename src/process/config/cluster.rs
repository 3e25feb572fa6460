//! The cluster flags, validated into [`ClusterConfig`] (see `crate::cluster` for what they do).

use clap::Args;

use super::{parse_duration, Bad, ConfigError};
use crate::cluster::config::{redact, ClusterConfig, NodeUrl};
use crate::cluster::secret::Secret;

/// The cluster flags (flattened into [`Cli`](super::Cli)).
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Redis holding the cluster's registry and room directory
    /// ("redis://[user][:password@]host:port[/db]"). Unset: a single node.
    #[arg(
        long,
        env = "CHOIR_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// This node's id, unique in the cluster. Default: hostname and API port ("host-3001").
    #[arg(long, env = "CHOIR_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Where the other nodes reach this node's API ("http://host:port"). Default: the
    /// listen address if specific, else the announced IP, with the API port.
    #[arg(long, env = "CHOIR_NODE_URL", value_name = "URL")]
    pub node_url: Option<String>,

    /// This node's region (a-z, 0-9, '-'; at most 32): a room gets one node per region, the
    /// one in the region of the node that received the request, and the room's nodes relay
    /// each other's speakers (needs a cluster secret). New: see the README's "Regions". Unset:
    /// no region (one node per room, as without regions).
    #[arg(long, env = "CHOIR_REGION", value_name = "REGION", default_value = "")]
    pub region: String,

    /// Cluster mode: after SIGTERM the node drains (no new rooms) and exits when its last room
    /// empties or after this long (e.g. "30m"). A second SIGTERM, or SIGINT, stops at once.
    #[arg(
        long,
        env = "CHOIR_DRAIN_TIMEOUT",
        value_name = "DURATION",
        default_value = "30m"
    )]
    pub drain_timeout: String,

    /// Secret the nodes sign their requests to each other with (at least 32 bytes; the same on
    /// every node). Default: derived from the auth secret; without either, node-to-node
    /// requests count against the owner's per-client limits like any client's.
    #[arg(
        long,
        env = "CHOIR_CLUSTER_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,

    /// File holding the cluster secret (surrounding whitespace ignored).
    #[arg(long, env = "CHOIR_CLUSTER_SECRET_FILE", value_name = "PATH")]
    pub cluster_secret_file: Option<String>,

    /// UDP port of shard 0's cascade link (shard i: PORT + i), on the RTC listen IPs, so that
    /// a firewall between regions opens a known port. Default: one more port of each shard's
    /// RTC slice (per-transport mode), or the shard's port (single-port mode).
    #[arg(long, env = "CHOIR_LINK_PORT", value_name = "PORT")]
    pub link_port: Option<u16>,

    /// Where the other nodes send shard 0's link datagrams ("ip:port"; shard i: port + i),
    /// for a NAT or a port forward in front of --link-port. Default: the announced IP and the
    /// bound port.
    #[arg(long, env = "CHOIR_LINK_ANNOUNCE", value_name = "IP:PORT")]
    pub link_announce: Option<String>,
}

/// The cluster secret: set (flag, env or file), else derived from the auth secret, else none.
fn secret(
    args: &ClusterArgs,
    bad: Bad<'_>,
    auth: Option<&[u8]>,
) -> Result<(Option<Secret>, &'static str), ConfigError> {
    let given = match (&args.cluster_secret, &args.cluster_secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "set only one of --cluster-secret (CHOIR_CLUSTER_SECRET) and --cluster-secret-file (CHOIR_CLUSTER_SECRET_FILE)".into(),
            ))
        }
        (Some(s), None) => Some(("cluster_secret", s.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad("cluster_secret_file", path, &format!("cannot read it: {e}")))?;
            Some(("cluster_secret_file", text))
        }
        (None, None) => None,
    };
    match given {
        Some((id, s)) if !s.trim().is_empty() => {
            let secret =
                Secret::new(s.trim().as_bytes()).map_err(|why| bad(id, "<hidden>", &why))?;
            Ok((Some(secret), "set"))
        }
        _ => match auth {
            Some(a) => Ok((
                Some(Secret::derived_from_auth(a)),
                "derived from the auth secret",
            )),
            None => Ok((None, "none")),
        },
    }
}

/// Validates the cluster flags (`auth`: the auth secret's bytes, if set).
pub fn parse(
    args: &ClusterArgs,
    bad: Bad<'_>,
    auth: Option<&[u8]>,
) -> Result<ClusterConfig, ConfigError> {
    let redis_url = match &args.redis_url {
        None => None,
        Some(v) if v.trim().is_empty() => None,
        Some(v) => {
            let v = v.trim();
            let shown = redact(v);
            let err = |why: &str| bad("redis_url", &shown, why);
            if !(v.starts_with("redis://") || v.starts_with("rediss://")) {
                return Err(err(
                    "not a redis:// URL (redis://[:password@]host:port[/db])",
                ));
            }
            if v.starts_with("rediss://") {
                return Err(err(
                    "rediss:// (TLS) is not supported by this build: reach Redis over a private network or a TLS tunnel",
                ));
            }
            redis::Client::open(v).map_err(|e| err(&e.to_string()))?;
            Some(v.to_string())
        }
    };
    let node_id = match &args.node_id {
        None => None,
        Some(v) => {
            let id = v.trim();
            let why = if id.is_empty() {
                Some("must not be empty")
            } else if id.len() > 128 {
                Some("longer than 128 bytes")
            } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
                Some("only printable ASCII without spaces")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(bad("node_id", v, why));
            }
            Some(id.to_string())
        }
    };
    let node_url = match &args.node_url {
        None => None,
        Some(v) => Some(NodeUrl::parse(v).map_err(|why| bad("node_url", v, &why))?),
    };
    let region = args.region.trim();
    if region.len() > 32
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            "region",
            &args.region,
            "at most 32 characters a-z, 0-9 and '-' (or empty: no region)",
        ));
    }
    let drain_timeout = parse_duration(&args.drain_timeout).ok_or_else(|| {
        bad(
            "drain_timeout",
            &args.drain_timeout,
            "not a duration (e.g. 30m, 90s)",
        )
    })?;
    let (secret, cluster_secret) = secret(args, bad, auth)?;
    let link_port = match args.link_port {
        Some(0) => return Err(bad("link_port", "0", "not a port")),
        p => p,
    };
    let link_announce = match &args.link_announce {
        None => None,
        Some(v) => {
            let addr: std::net::SocketAddr = v
                .trim()
                .parse()
                .map_err(|_| bad("link_announce", v, "not an ip:port address"))?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(bad("link_announce", v, "needs a specific IP and a port"));
            }
            if link_port.is_none() {
                return Err(bad(
                    "link_announce",
                    v,
                    "needs --link-port (CHOIR_LINK_PORT): the port it forwards to",
                ));
            }
            Some(addr)
        }
    };
    Ok(ClusterConfig {
        link_port,
        link_announce,
        secret,
        cluster_secret,
        redis_url,
        node_id,
        node_url,
        region: region.to_string(),
        drain_timeout,
    })
}
