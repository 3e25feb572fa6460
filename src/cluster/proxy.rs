//! The HTTP/1.1 client between nodes: hyper 1's client connection over a glommio TCP stream,
//! with a small pool of keep-alive connections per node. A request gets its whole answer within
//! a deadline or fails; an event stream gets its head within the deadline, then is relayed
//! frame by frame.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};

use crate::http::io::HyperIo;

/// Idle connections kept per node.
const MAX_IDLE: usize = 32;
/// Largest reply body relayed (API replies are small JSON).
const MAX_REPLY: usize = 4 << 20;
/// How long a resolved host name is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

type Sender = http1::SendRequest<Full<Bytes>>;

/// Why a request to another node failed.
#[derive(Debug)]
pub enum ProxyError {
    /// No connection (refused, unreachable, timed out connecting): the node is not answering.
    Unreachable(String),
    /// Connected, but no complete answer before the deadline, or a broken one.
    Failed(String),
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::Unreachable(e) | ProxyError::Failed(e) => f.write_str(e),
        }
    }
}

#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Sender>>>,
    dns: RefCell<HashMap<String, (SocketAddr, Instant)>>,
    /// Addresses of the live nodes (requests with a hop header from them skip the rate limit).
    node_ips: RefCell<HashSet<IpAddr>>,
}

/// `http://host:port` → (host, port).
fn host_port(url: &str) -> Option<(String, u16)> {
    let u = super::config::NodeUrl::parse(url).ok()?;
    Some((u.host, u.port))
}

impl Pool {
    pub fn is_node_ip(&self, ip: IpAddr) -> bool {
        self.node_ips.borrow().contains(&ip)
    }

    /// The live nodes' URLs (their literal IP addresses, and names already resolved).
    pub fn set_nodes<'a>(&self, urls: impl Iterator<Item = &'a str>) {
        let dns = self.dns.borrow();
        let ips = urls
            .filter_map(|u| {
                let (host, _) = host_port(u)?;
                match host.parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => dns.get(u).map(|(a, _)| a.ip()),
                }
            })
            .collect();
        *self.node_ips.borrow_mut() = ips;
    }

    /// The socket address of a node URL (host names resolved off the executor, cached).
    async fn address(&self, url: &str) -> Result<SocketAddr, ProxyError> {
        if let Some((addr, at)) = self.dns.borrow().get(url) {
            if at.elapsed() < DNS_TTL {
                return Ok(*addr);
            }
        }
        let (host, port) =
            host_port(url).ok_or_else(|| ProxyError::Unreachable(format!("bad node URL {url}")))?;
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => {
                let found = glommio::executor()
                    .spawn_blocking(move || {
                        (host.as_str(), port)
                            .to_socket_addrs()
                            .map(|mut a| a.next())
                    })
                    .await;
                match found {
                    Ok(Some(a)) => a,
                    Ok(None) => return Err(ProxyError::Unreachable(format!("{url}: no address"))),
                    Err(e) => return Err(ProxyError::Unreachable(format!("{url}: {e}"))),
                }
            }
        };
        self.dns
            .borrow_mut()
            .insert(url.to_string(), (addr, Instant::now()));
        Ok(addr)
    }

    async fn connect(addr: SocketAddr, left: Duration) -> Result<Sender, ProxyError> {
        let stream = glommio::net::TcpStream::connect_timeout(addr, left)
            .await
            .map_err(|e| ProxyError::Unreachable(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(HyperIo(stream))
            .await
            .map_err(|e| ProxyError::Unreachable(format!("{addr}: {e}")))?;
        glommio::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection to node {addr} ended: {e}");
            }
        })
        .detach();
        Ok(sender)
    }

    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: Sender) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE && !sender.is_closed() {
            list.push(sender);
        }
    }

    /// Sends `req` to the node at `url` and returns its head, before `deadline`. A pooled
    /// connection that turns out closed is replaced by a fresh one, once. `stream`: the reply
    /// is an event stream, so its connection is not returned to the pool.
    async fn head(
        &self,
        url: &str,
        req: &Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Sender, SocketAddr), ProxyError> {
        let addr = within(deadline, self.address(url)).await??;
        let pooled = self.take(addr);
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(s) => s,
            None => Self::connect(addr, left(deadline)?).await?,
        };
        match within(deadline, sender.send_request(clone(req))).await? {
            Ok(resp) => Ok((resp, sender, addr)),
            Err(e) if reused && (e.is_canceled() || e.is_closed()) => {
                // The node closed the idle connection as we used it: a fresh one, once.
                let mut sender = Self::connect(addr, left(deadline)?).await?;
                match within(deadline, sender.send_request(clone(req))).await? {
                    Ok(resp) => Ok((resp, sender, addr)),
                    Err(e) => Err(ProxyError::Failed(format!("{url}: {e}"))),
                }
            }
            Err(e) => Err(ProxyError::Failed(format!("{url}: {e}"))),
        }
    }

    /// A request whose whole reply is read before `deadline`.
    pub async fn request(
        &self,
        url: &str,
        req: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let (resp, sender, addr) = self.head(url, &req, deadline).await?;
        let (parts, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_REPLY);
        let bytes = within(deadline, limited.collect())
            .await?
            .map_err(|e| ProxyError::Failed(format!("{url}: reply body: {e}")))?
            .to_bytes();
        self.put(addr, sender);
        Ok(Response::from_parts(parts, Full::new(bytes)))
    }

    /// A request whose reply is a stream (`events`): its head before `deadline`, then the
    /// body as it comes, on a connection of its own.
    pub async fn stream(
        &self,
        url: &str,
        req: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (resp, _sender, _) = self.head(url, &req, deadline).await?;
        Ok(resp)
    }
}

/// How long the start-up check of the node URL waits for its answer.
const WHOAMI_DEADLINE: Duration = Duration::from_secs(3);

/// Asks the node at `url` who it is (`GET /api/voice/health`): Ok when it is node `id` in this
/// `incarnation` (this process), else why not.
pub async fn whoami(pool: &Pool, url: &str, id: &str, incarnation: &str) -> Result<(), String> {
    let req = Request::builder()
        .uri("/api/voice/health")
        .header(hyper::header::HOST, url.trim_start_matches("http://"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + WHOAMI_DEADLINE;
    let resp = pool
        .request(url, req, deadline)
        .await
        .map_err(|e| e.to_string())?;
    let health: serde_json::Value = serde_json::from_slice(
        &resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
    )
    .map_err(|_| "its /api/voice/health is not choir's".to_string())?;
    let (node, inc) = (health["node"].as_str(), health["incarnation"].as_str());
    match (node, inc) {
        (Some(n), Some(i)) if n == id && i == incarnation => Ok(()),
        (Some(n), Some(_)) if n == id => {
            Err(format!("another process with node id {id:?} answers there"))
        }
        (Some(n), _) => Err(format!("node {n:?} answers there")),
        _ => Err("it answers, but not as a choir cluster node".into()),
    }
}

fn clone(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.headers_mut() = req.headers().clone();
    out
}

fn left(deadline: Instant) -> Result<Duration, ProxyError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ProxyError::Unreachable("no answer in time".into()))
}

/// Runs `fut` until `deadline`.
pub async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, ProxyError> {
    let d = left(deadline)?;
    futures_lite::future::or(async { Ok(fut.await) }, async {
        glommio::timer::sleep(d).await;
        Err(ProxyError::Failed("no answer in time".into()))
    })
    .await
}
