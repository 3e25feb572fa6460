//! Cluster settings: `CHOIR_REDIS_URL` turns cluster mode on; the others name and place this
//! node. Validated like every other setting (exit 2 and one line naming the value).

use std::time::Duration;

use clap::Args;

use crate::process::config::{parse_duration, Bad, ConfigError};

/// The cluster flags (flattened into [`crate::process::config::Cli`]).
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

    /// This node's region: rooms are placed on nodes of the receiving node's region first.
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
}

/// The validated cluster settings.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Cluster mode when set.
    #[serde(serialize_with = "redacted")]
    pub redis_url: Option<String>,
    /// `None`: hostname and API port, known once the listener is bound.
    pub node_id: Option<String>,
    /// `None`: derived from the listen/announced address and the bound API port.
    pub node_url: Option<NodeUrl>,
    pub region: String,
    #[serde(serialize_with = "millis", rename = "drainTimeoutMs")]
    pub drain_timeout: Duration,
    /// Signs node-to-node requests ([`super::secret`]); `None`: no node is trusted.
    #[serde(skip)]
    pub secret: Option<super::secret::Secret>,
    /// Where the secret comes from: "set", "derived from the auth secret", or "none".
    pub cluster_secret: &'static str,
}

/// A node's API address: plain HTTP to a host and port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct NodeUrl {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl From<NodeUrl> for String {
    fn from(u: NodeUrl) -> String {
        u.to_string()
    }
}

impl NodeUrl {
    /// Parses "http://host[:port][/]" (host: a name, an IPv4 address or a bracketed IPv6 one).
    pub fn parse(v: &str) -> Result<NodeUrl, String> {
        let v = v.trim();
        let rest = match v.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "scheme {scheme:?} is not supported (nodes talk plain http://; keep that traffic on a private network)"
                ))
            }
            None => return Err("not a URL (http://host:port)".into()),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err("a node URL has no path, query or credentials".into());
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (ip, after) = inner.split_once(']').ok_or("unclosed [")?;
            ip.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
            (ip.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("{p:?} is not a port number")),
            },
        };
        let name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
        if !name_ok {
            return Err(format!("{host:?} is not a host name or IP address"));
        }
        Ok(NodeUrl { host, port })
    }
}

fn redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => s.serialize_str(&redact(url)),
        None => s.serialize_none(),
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A Redis URL with its password (if any) replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{creds}@{host}"),
        },
        None => url.to_string(),
    }
}

/// The cluster secret: set (flag, env or file), else derived from the auth secret, else none.
fn secret(
    args: &ClusterArgs,
    bad: Bad<'_>,
    auth: Option<&[u8]>,
) -> Result<(Option<super::secret::Secret>, &'static str), ConfigError> {
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
            let secret = super::secret::Secret::new(s.trim().as_bytes())
                .map_err(|why| bad(id, "<hidden>", &why))?;
            Ok((Some(secret), "set"))
        }
        _ => match auth {
            Some(a) => Ok((
                Some(super::secret::Secret::derived_from_auth(a)),
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
    if region.len() > 64 || !region.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "region",
            &args.region,
            "at most 64 printable ASCII characters without spaces",
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
    Ok(ClusterConfig {
        secret,
        cluster_secret,
        redis_url,
        node_id,
        node_url,
        region: region.to_string(),
        drain_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        let u = NodeUrl::parse("http://10.0.0.5:3001/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.5", 3001));
        assert_eq!(u.to_string(), "http://10.0.0.5:3001");
        let u = NodeUrl::parse("http://[::1]:4000").unwrap();
        assert_eq!(u.to_string(), "http://[::1]:4000");
        assert_eq!(NodeUrl::parse("http://node-a.internal").unwrap().port, 80);
        for bad in [
            "https://a:1",
            "a:1",
            "http://a:0",
            "http://a:x",
            "http://a:1/path",
            "http://u:p@a:1",
            "http://",
            "http://[::1",
            "http://a b:1",
        ] {
            assert!(NodeUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.2:6379/1"),
            "redis://:***@10.0.0.2:6379/1"
        );
        assert_eq!(
            redact("redis://choir:pw@host:6379"),
            "redis://choir:***@host:6379"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
