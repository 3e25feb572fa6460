//! Who this node is: its id, the URL other nodes reach it at, its region and incarnation.

use std::net::{IpAddr, SocketAddr};

use super::config::{ClusterConfig, NodeUrl};

/// Who this node is (also without cluster mode, for `GET /cluster`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub url: String,
    pub region: String,
    /// This process's incarnation (random, new at every start): another process with the same
    /// id is another incarnation, and its rooms are not this one's.
    pub incarnation: String,
    /// The address its shards announce (where another node's cascade link sends: with the
    /// shard's link port).
    pub announced_ip: IpAddr,
    /// `--link-port` and `--link-announce`: where peers send a shard's link datagrams when a
    /// NAT or port forward stands in front of it.
    pub link_port: Option<u16>,
    pub link_announce: Option<SocketAddr>,
}

impl Identity {
    /// The address a peer sends to for the link port `port` bound here.
    pub fn link_addr(&self, port: u16) -> SocketAddr {
        match (self.link_announce, self.link_port) {
            (Some(a), Some(base)) if port >= base => {
                SocketAddr::new(a.ip(), a.port().wrapping_add(port - base))
            }
            _ => SocketAddr::new(self.announced_ip, port),
        }
    }
}

impl Identity {
    /// This node's id and URL: configured, else from the hostname and the bound API address
    /// (the listen IP when specific, else the announced IP).
    pub fn new(config: &ClusterConfig, api: SocketAddr, announced: IpAddr) -> Identity {
        let id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), api.port()));
        let url = config.node_url.clone().unwrap_or_else(|| NodeUrl {
            host: if api.ip().is_unspecified() {
                announced.to_string()
            } else {
                api.ip().to_string()
            },
            port: api.port(),
        });
        let mut b = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut b);
        Identity {
            id,
            url: url.to_string(),
            region: config.region.clone(),
            incarnation: format!("{:016x}", u64::from_be_bytes(b)),
            announced_ip: announced,
            link_port: config.link_port,
            link_announce: config.link_announce,
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if ok && !h.is_empty() => h.to_string(),
        _ => "choir".into(),
    }
}
