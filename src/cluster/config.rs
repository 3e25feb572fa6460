//! Cluster settings: `CHOIR_REDIS_URL` turns cluster mode on; the others name and place this
//! node. Their flags are parsed and validated like every other setting (exit 2 and one line
//! naming the value) in `crate::process::config`.

use std::time::Duration;

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
    /// Shard 0's cascade link port (shard i: + i); `None`: taken from the shard's RTC ports.
    pub link_port: Option<u16>,
    /// The address announced to peers for shard 0's link port (shard i: port + i).
    pub link_announce: Option<std::net::SocketAddr>,
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
