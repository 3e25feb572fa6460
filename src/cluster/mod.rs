//! Cluster mode: many choir nodes behind one voice API, on Redis.
//!
//! One room lives on one node (one per region with `--region`: [`rooms`]); any node answers
//! any request. Each node writes its entry to a
//! registry in Redis every [`HEARTBEAT`] with a [`TTL`] ([`registry`]); the first request that
//! names a channel finds its owner in the room directory or places it there atomically
//! (`directory`, [`store`]); a request for a channel another node owns is proxied to it over
//! HTTP/1.1 ([`proxy`], [`route`]). Owners are cached per node, so a steady room costs no Redis
//! round trip; the cache forgets a node when its entry expires.
//!
//! Only the control plane calls this module (it implements [`Host`] for the cluster's needs). Shards and the media path never see it: media
//! goes straight to the owner (its ICE candidates say so) and never waits on Redis or on
//! another node. Without `CHOIR_REDIS_URL` it only names the node (`GET /cluster`).

mod cascade;
pub mod config;
mod directory;
mod host;
mod identity;
mod lua;
mod metrics;
mod proxy;
mod registry;
mod rooms;
mod route;
pub mod secret;
mod store;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{json, Value};

pub use cascade::{on_room_event, PREFIX as CASCADE_PREFIX};
pub use host::{Host, HostFuture};
pub use identity::Identity;
pub use metrics::Metrics;
pub use rooms::RoomNode;
pub use route::Routed;
pub use store::Store;

use crate::http::Body;
use crate::sfu::api::ApiError;
use config::ClusterConfig;
use store::Op;

/// How often a node writes its registry entry.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an entry lives without a heartbeat: a node is lost this long after its last one.
pub const TTL: Duration = Duration::from_secs(6);
/// Longest wait of a request for the node's registration, at start.
const JOIN_WAIT: Duration = Duration::from_secs(5);
/// Longest wait on Redis for a request's directory lookup.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Header naming the node a proxied request comes from: a node never proxies such a request
/// again (no loops). Signed with the cluster secret ([`secret::Secret::hop`]) it also carries
/// the client's address and exempts the request from the owner's per-address limits (the
/// forwarding node applied them); it never grants access: the owner checks the token as always.
pub const HOP_HEADER: &str = "x-choir-hop";
/// Header naming the node that served the request (the room's owner), on every cluster reply.
pub const NODE_HEADER: &str = "x-choir-node";
/// The region of the node that served a reply (with [`NODE_HEADER`], when it has one).
pub const REGION_HEADER: &str = "x-choir-region";

/// What cluster mode needs from the process (built at start-up by `crate::process::daemon`).
pub struct Setup {
    pub store: Store,
    pub config: ClusterConfig,
    /// The first SIGTERM: start draining.
    pub drain: flume::Receiver<()>,
    /// Stops the control server (a drain that finished).
    pub stop: flume::Sender<()>,
    /// Marks the stop as deliberate (shards ending from now on are not failures).
    pub stopping: Box<dyn Fn() + Send>,
}

/// The control plane's view of the cluster (lives on the control executor: no locks).
pub struct Cluster {
    pub identity: Identity,
    live: Option<Live>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Serving,
    Draining,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Serving => "serving",
            State::Draining => "draining",
        }
    }
}

/// Another node as the registry lists it.
#[derive(Debug, Clone)]
struct Node {
    url: String,
    /// Its entry, as it wrote it, plus the directory's count of rooms placed on it.
    entry: Value,
}

impl Node {
    fn incarnation(&self) -> Option<&str> {
        self.entry.get("incarnation")?.as_str()
    }
}

struct Live {
    store: Store,
    config: ClusterConfig,
    state: Cell<State>,
    /// The last heartbeat reached Redis (health, placement).
    connected: Cell<bool>,
    /// The node wrote its entry at least once.
    registered: Cell<bool>,
    /// The Redis instance's identity as last seen ("" before the first heartbeat).
    epoch: RefCell<String>,
    /// Since when this node's view of Redis has been steady: no failed call, no new epoch. A
    /// node missing from the listing is declared lost only after a TTL of it.
    steady: Cell<Instant>,
    /// Rooms this node has that another node owns (a conflicting claim it lost): not claimed
    /// again while they last here.
    yielded: RefCell<HashSet<String>>,
    /// Live nodes from the last listing, this one included.
    nodes: RefCell<BTreeMap<String, Node>>,
    /// Channels this node owns, and when a request last used each.
    owned: RefCell<HashMap<String, Instant>>,
    /// Owners of channels other nodes own (in this node's region).
    cache: RefCell<HashMap<String, String>>,
    /// The node sets of this node's rooms, every region's ([`rooms`]).
    sets: RefCell<HashMap<String, store::RoomSet>>,
    /// Proxied event streams to tell when their owner is lost, by owner id.
    lost: RefCell<HashMap<String, Vec<flume::Sender<()>>>>,
    pool: proxy::Pool,
    /// The cascade's links and announcements ([`cascade`]).
    cascade: RefCell<cascade::Cascade>,
    counters: RefCell<Metrics>,
    /// Why the node stopped at start, if a start-up check failed.
    fatal: RefCell<Option<String>>,
    /// Dropped at shutdown: ends the proxied event streams.
    closing: RefCell<Option<flume::Sender<()>>>,
    closed: flume::Receiver<()>,
    /// Wakes the registry loop (a state change to publish now).
    wake: (flume::Sender<()>, flume::Receiver<()>),
    drain: flume::Receiver<()>,
    stop: flume::Sender<()>,
    stopping: Box<dyn Fn() + Send>,
}

impl Cluster {
    pub fn new(identity: Identity, setup: Option<Setup>) -> Cluster {
        let live = setup.map(|s| {
            let (closing, closed) = flume::bounded(1);
            Live {
                store: s.store,
                config: s.config,
                state: Cell::new(State::Serving),
                connected: Cell::new(true),
                registered: Cell::new(false),
                epoch: Default::default(),
                // Steady from the start: a node that knows no other has none to keep.
                steady: Cell::new(Instant::now().checked_sub(TTL).unwrap_or_else(Instant::now)),
                yielded: Default::default(),
                nodes: Default::default(),
                owned: Default::default(),
                cache: Default::default(),
                sets: Default::default(),
                lost: Default::default(),
                pool: Default::default(),
                cascade: Default::default(),
                counters: Default::default(),
                fatal: Default::default(),
                closing: RefCell::new(Some(closing)),
                closed,
                wake: flume::bounded(1),
                drain: s.drain,
                stop: s.stop,
                stopping: s.stopping,
            }
        });
        Cluster { identity, live }
    }

    /// A single node: no Redis.
    pub fn single(identity: Identity) -> Cluster {
        Cluster::new(identity, None)
    }

    pub fn is_clustered(&self) -> bool {
        self.live.is_some()
    }

    /// Starts the start-up checks, then the registry's heartbeat (cluster mode), and the drain
    /// watcher; they run until the returned tasks are dropped. Requests that need the cluster
    /// wait for the node's registration. A failed check stops the server: see [`Cluster::fatal`].
    pub fn start<H: Host>(ctx: &Rc<H>) -> Vec<glommio::Task<()>> {
        if ctx.cluster().live.is_none() {
            return Vec::new();
        }
        vec![
            glommio::spawn_local(registry::run(ctx.clone())),
            glommio::spawn_local(registry::drain(ctx.clone())),
            glommio::spawn_local(cascade::run(ctx.clone())),
        ]
    }

    /// Why the node stopped at start (a node id another live process holds, a node URL that
    /// does not answer as this node, a Redis shared with an incompatible version).
    pub fn fatal(&self) -> Option<String> {
        self.live.as_ref()?.fatal.borrow().clone()
    }

    fn fail(&self, why: String) {
        if let Some(live) = &self.live {
            tracing::error!("{why}");
            *live.fatal.borrow_mut() = Some(why);
            (live.stopping)();
            let _ = live.stop.try_send(());
        }
    }

    /// Waits (a few seconds at most) for the node's registration, at start.
    async fn registered(&self, live: &Live) -> Result<(), ApiError> {
        let deadline = Instant::now() + JOIN_WAIT;
        while !live.registered.get() {
            if Instant::now() >= deadline || live.fatal.borrow().is_some() {
                return Err(ApiError::unavailable(
                    "this node has not joined the cluster yet",
                ));
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// At shutdown (after the shards closed their rooms): leave the registry and end the
    /// proxied event streams.
    pub async fn stop(&self) {
        let Some(live) = &self.live else { return };
        live.closing.borrow_mut().take();
        if !live.registered.get() {
            return; // refused at start: the id may be another process's
        }
        let op = Op::Unregister {
            id: self.identity.id.clone(),
        };
        if let Err(e) = live.store.call(op, REDIS_TIMEOUT).await {
            tracing::warn!("could not leave the cluster registry: {e}");
        }
    }

    /// The hop header of a request a registered node forwarded, verified with the cluster
    /// secret (`target`: the request's path and query). `None` without a secret, for a bad or
    /// stale signature, or from a node not registered: an ordinary client's request.
    pub fn verified_hop(
        &self,
        headers: &HeaderMap,
        method: &hyper::Method,
        target: &str,
    ) -> Option<secret::Hop> {
        let live = self.live.as_ref()?;
        let secret = live.config.secret.as_ref()?;
        let value = headers.get(HOP_HEADER)?.to_str().ok()?;
        let hop = secret
            .check_hop(value, method.as_str(), target, std::time::SystemTime::now())
            .map_err(|why| tracing::debug!(why, "hop header refused: an ordinary client's request"))
            .ok()?;
        live.nodes.borrow().contains_key(&hop.node).then_some(hop)
    }

    /// Whether a connection from `ip` may be another node's (a cluster secret is set and `ip`
    /// is a registered node's address): over the per-address cap it is admitted for signed
    /// requests only.
    pub fn may_be_node(&self, ip: IpAddr) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.config.secret.is_some() && l.pool.is_node_ip(ip))
    }

    /// The hop header of a request this node forwards for `client`: signed when a cluster
    /// secret is set, else this node's id (it then only stops loops).
    fn hop_header(
        &self,
        live: &Live,
        method: &hyper::Method,
        target: &str,
        client: IpAddr,
    ) -> String {
        match &live.config.secret {
            Some(s) => s.hop(
                &self.identity.id,
                method.as_str(),
                target,
                client,
                std::time::SystemTime::now(),
            ),
            None => self.identity.id.clone(),
        }
    }

    /// Cluster mode: names this node (and its region, when it has one) on every reply it
    /// served itself.
    pub fn decorate(&self, response: &mut Response<Body>) {
        // A proxied reply names its owner already (see `route`).
        if self.live.is_none() || response.headers().contains_key(NODE_HEADER) {
            return;
        }
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.identity.id) {
            headers.insert(NODE_HEADER, v);
        }
        if !self.identity.region.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.identity.region) {
                headers.insert(REGION_HEADER, v);
            }
        }
    }

    /// Adds the cluster's state to `/health` (with the node sets of this node's rooms, as of the
    /// last heartbeat); 503 while Redis is unreachable.
    pub fn health(&self, body: &mut Value) -> StatusCode {
        let Some(live) = &self.live else {
            return StatusCode::OK;
        };
        let connected = live.connected.get();
        body["node"] = json!(self.identity.id);
        body["incarnation"] = json!(self.identity.incarnation);
        body["state"] = json!(live.state.get().as_str());
        body["region"] = json!(self.identity.region);
        body["roomNodes"] = self.rooms_json(live);
        body["cluster"] = json!(if connected {
            "connected"
        } else {
            "disconnected"
        });
        if connected {
            StatusCode::OK
        } else {
            body["status"] = json!("degraded");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// `GET /cluster`: this node's id, every live node's entry, and the node sets of this
    /// node's rooms (asked from Redis now).
    pub async fn nodes_json(&self, ctx: &impl Host) -> Result<Value, ApiError> {
        let Some(live) = &self.live else {
            let entry = registry::entry(ctx, State::Serving).await?;
            return Ok(json!({"self": self.identity.id, "nodes": [entry]}));
        };
        // A live listing, so that a lost node disappears as soon as its entry expires.
        let nodes = match live.store.call(Op::List, REDIS_TIMEOUT).await {
            Ok(store::Answer::Nodes(records)) => {
                self.learn_nodes(&records);
                live.nodes
                    .borrow()
                    .values()
                    .map(|n| n.entry.clone())
                    .collect()
            }
            _ => {
                self.redis_failed();
                let nodes = live.nodes.borrow();
                nodes.values().map(|n| n.entry.clone()).collect::<Vec<_>>()
            }
        };
        self.refresh_sets(live).await;
        Ok(json!({
            "self": self.identity.id,
            "region": self.identity.region,
            "nodes": nodes,
            "roomNodes": self.rooms_json(live),
            "cascade": self.cascade_json(live),
        }))
    }

    /// The cluster's metrics (None without cluster mode).
    pub fn metrics(&self) -> Option<Metrics> {
        let live = self.live.as_ref()?;
        let mut m = live.counters.borrow().clone();
        m.connected = live.connected.get();
        m.draining = live.state.get() == State::Draining;
        m.nodes = live.nodes.borrow().len() as u64;
        m.rooms_owned = live.owned.borrow().len() as u64;
        Some(m)
    }

    pub(super) fn redis_failed(&self) {
        if let Some(live) = &self.live {
            live.counters.borrow_mut().redis_errors += 1;
            live.connected.set(false);
            live.steady.set(Instant::now());
        }
    }
}
