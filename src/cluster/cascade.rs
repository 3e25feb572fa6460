//! Cascading between the nodes of a room (issue 22): for each room this node carries whose
//! node set ([`super::Cluster::room_nodes`]) lists other nodes, exactly one link per peer node, set up
//! and fed over the node-to-node HTTP. The media itself crosses the sealed link
//! ([`crate::sfu::cascade`]); this module only agrees on its ids, keys and addresses and carries
//! the producers' signalling.
//!
//! - **Requests.** `POST /api/voice/_cascade/link` and `POST /api/voice/_cascade/event` (the
//!   leading `_` keeps them apart from the public API, whose first segments are words; the
//!   cluster router never proxies them). Each carries [`SIGNATURE_HEADER`]
//!   `<node>;<unix ms>;<mac>`, the MAC ([`super::secret::Secret::sign`], label
//!   `"cascade request v1"`) over the node id, the path, the time and the body. A request
//!   without a cluster secret, unsigned, forged, older than [`super::secret::HOP_MAX_AGE`], seen before (a
//!   replay), or from a node id not in the registry is refused (403) and counted.
//! - **Set-up.** The node with the smaller id initiates: `link` carries {channel, node,
//!   incarnation, receiveId, linkAddr (announced IP : the shard's link port), producers}; the
//!   peer answers with its own {incarnation, receiveId, linkAddr, producers}. Each direction's
//!   key is `derive_key("cascade link v1", [sender id, sender incarnation, receiver id, receiver
//!   incarnation, receiver's receiveId, channel])`: a fresh random receiveId per set-up, so no
//!   key ever serves two links. Both sides open the room if need be, add the link, and once it
//!   carries datagrams the peer's producers (else the set-up fails: [`activate`]). A set-up for
//!   a link that exists replaces it (its producers leave as `link_lost`, or `node_lost` for a
//!   restarted peer).
//! - **Announcements.** The room events coming out of the shards ([`on_room_event`]) about
//!   local producers and participants (`newProducer`, `producerPaused`/`Resumed`,
//!   `producerClosed`, `participantLeft`) go to every peer of the room through one queue per
//!   peer, one request at a time: each origin's events apply in order. Events about remote
//!   producers and users (added by this module) are never announced again. Every [`SYNC`] the
//!   same queue carries the whole list of the room's local producers (`sync`), so that an
//!   announcement lost on the way (a full queue, a request that failed) is repaired within
//!   that time: the peer adds, closes, pauses or resumes what differs, and nothing when both
//!   sides agree ([`crate::sfu::Sfu::sync_remote_producers`]; src/cluster/cascade/announce.rs).
//! - **Reconcile** every [`TICK`]: a link to a peer that left the room's node set is removed
//!   (`participantLeft {reason: "node_lost"}`; not within a TTL of a Redis gap or data loss,
//!   while the sets are re-claimed), a link silent for [`GRACE`] too
//!   (`reason: "link_lost"`, or `"node_lost"` when the peer's API does not answer either; the
//!   initiator sets it up again), and missing links are set up.

mod activate;
mod announce;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::secret::Secret;
use super::{Host, Live, RoomNode};
pub use announce::on_room_event;
use announce::{Announce, EventMessage, Outgoing};

use crate::sfu::api::{ApiError, Event};
use crate::sfu::cascade::{LinkInfo, LinkParams, RemoteProducer};
use crate::shard::{LinkCommand, Reply};

/// The cascade's requests are under this path.
pub const PREFIX: &str = "/api/voice/_cascade/";
/// Header of a cascade request: `<node>;<unix ms>;<mac>`.
pub const SIGNATURE_HEADER: &str = "x-choir-cascade";
const REQUEST_LABEL: &str = "cascade request v1";
const LINK_LABEL: &str = "cascade link v1";
/// A link that received nothing authentic for this long is removed (and set up again).
pub const GRACE: Duration = Duration::from_secs(5);
/// How often the links are reconciled with the rooms' node sets.
pub const TICK: Duration = Duration::from_millis(500);
/// Shortest wait before a failed set-up is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// A cascade request gets its answer within this.
const DEADLINE: Duration = Duration::from_millis(1500);
/// Announcements queued per peer; past it they are dropped (counted; the next resync repairs).
const QUEUE: usize = 4096;
/// How often each link's peer gets the whole list of the room's local producers.
pub const SYNC: Duration = Duration::from_secs(5);

/// The cascade's state on the control executor.
#[derive(Default)]
pub(super) struct Cascade {
    links: HashMap<(String, String), Link>,
    /// Per channel: the ids of remote producers and users (their events are not announced).
    remote: HashMap<String, HashSet<String>>,
    /// Per peer node: its announcements' queue.
    queues: HashMap<String, Queue>,
    /// MACs of requests accepted in the last 2 × [`super::secret::HOP_MAX_AGE`] (replays are refused).
    seen: HashMap<String, Instant>,
    /// When `seen` was last pruned.
    pruned: Option<Instant>,
    next_try: HashMap<(String, String), Instant>,
    counters: Counters,
    /// Starts a peer's announcer (set by [`run`]; holds the control plane weakly).
    spawn: Option<Spawn>,
    /// Wakes [`run`] at once (see [`Cascade::wake`]).
    wake: Option<flume::Sender<Wake>>,
}

type Queue = flume::Sender<(String, Outgoing)>;
type Spawn = Box<dyn Fn(String) -> Queue>;

impl Cascade {
    /// This node just took `channel` (`nudge`), or a peer that just took it asks: its node set
    /// is read from Redis now and its missing links set up at once (this node initiating
    /// toward larger ids, and with `nudge` asking smaller ids to), not at the next heartbeat.
    pub(super) fn wake(&self, channel: &str, nudge: bool) {
        self.send_wake(Wake::Room {
            channel: channel.to_string(),
            nudge,
        });
    }

    fn send_wake(&self, wake: Wake) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(wake);
        }
    }
}

/// What wakes [`run`].
enum Wake {
    /// See [`Cascade::wake`].
    Room { channel: String, nudge: bool },
    /// A link this node accepted (its key and receive link id): see [`activate::activate`].
    Accepted(((String, String), u32)),
}

impl Cascade {
    /// The queue of `peer`'s announcements (its announcer started if need be).
    fn queue(&mut self, peer: &str) -> Option<Queue> {
        if let Some(q) = self.queues.get(peer) {
            return Some(q.clone());
        }
        let q = (self.spawn.as_ref()?)(peer.to_string());
        self.queues.insert(peer.to_string(), q.clone());
        Some(q)
    }
}

#[derive(Default, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct Counters {
    links_set_up: u64,
    set_up_failed: u64,
    links_removed: u64,
    refused: u64,
    announced: u64,
    announce_failed: u64,
    applied: u64,
    /// Remote producers a resync added, closed, paused or resumed (a lost announcement's).
    resynced: u64,
}

struct Link {
    /// The peer's incarnation.
    incarnation: String,
    /// False while being set up: its announcements wait in `held`.
    ready: bool,
    held: Vec<Event>,
    /// The accepting end's copy of the initiator's producers, added once the link is alive.
    incoming: Vec<RemoteProducer>,
    /// This set-up's receive link id (0 until chosen): tells it from one that replaced it.
    receive_id: u32,
    since: Instant,
    /// When the peer was last sent the room's producers (see [`SYNC`]).
    synced: Instant,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkRequest {
    channel: String,
    node: String,
    incarnation: String,
    receive_id: u32,
    link_addr: SocketAddr,
    producers: Vec<RemoteProducer>,
}

/// `POST _cascade/nudge`: the sender just took `channel`; the receiver (the smaller id)
/// sets their link up now.
#[derive(Serialize, Deserialize)]
struct Nudge {
    channel: String,
    /// See [`EventMessage`]'s.
    nonce: u64,
}

/// A number no other request of this process carries (see [`EventMessage`]'s `nonce`).
fn nonce() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkReply {
    incarnation: String,
    receive_id: u32,
    link_addr: SocketAddr,
    producers: Vec<RemoteProducer>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_id() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_be_bytes(b).max(1)
}

async fn cascade_call<H: Host>(
    ctx: &H,
    channel: &str,
    cmd: LinkCommand,
) -> Result<Reply, ApiError> {
    ctx.cascade(channel, cmd).await
}

fn unexpected(reply: Reply) -> ApiError {
    tracing::error!(?reply, "unexpected shard reply");
    ApiError::new(500, "internal error: unexpected shard reply")
}

async fn done<H: Host>(ctx: &H, channel: &str, cmd: LinkCommand) -> Result<(), ApiError> {
    match cascade_call(ctx, channel, cmd).await? {
        Reply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

async fn link_addr<H: Host>(ctx: &H, channel: &str) -> Result<SocketAddr, ApiError> {
    match cascade_call(ctx, channel, LinkCommand::LinkPort).await? {
        Reply::LinkPort(port) => Ok(ctx.cluster().identity.link_addr(port)),
        other => Err(unexpected(other)),
    }
}

async fn relayed_producers<H: Host>(
    ctx: &H,
    channel: &str,
) -> Result<Vec<RemoteProducer>, ApiError> {
    let cmd = LinkCommand::RelayedProducers {
        channel_id: channel.to_string(),
    };
    match cascade_call(ctx, channel, cmd).await? {
        Reply::RemoteProducers(list) => Ok(list),
        other => Err(unexpected(other)),
    }
}

async fn remove_link<H: Host>(ctx: &H, channel: &str, peer: &str, reason: Option<&str>) {
    let cmd = LinkCommand::RemoveLink {
        channel_id: channel.to_string(),
        peer: peer.to_string(),
        reason: reason.map(str::to_string),
    };
    if let Err(e) = done(ctx, channel, cmd).await {
        tracing::debug!(channel, peer, "link not removed: {}", e.message);
    }
}

/// Per-direction keys, both ends' ids and incarnations, the receiver's link id and the
/// channel: `(send_key, receive_key)`.
fn keys(
    secret: &Secret,
    me: (&str, &str, u32),
    peer: (&str, &str, u32),
    channel: &str,
) -> ([u8; 32], [u8; 32]) {
    let derive = |from: (&str, &str, u32), to: (&str, &str, u32)| {
        secret.derive_key(
            LINK_LABEL,
            &[
                from.0.as_bytes(),
                from.1.as_bytes(),
                to.0.as_bytes(),
                to.1.as_bytes(),
                &to.2.to_be_bytes(),
                channel.as_bytes(),
            ],
        )
    };
    (derive(me, peer), derive(peer, me))
}

/// Adds the link to the room's shard (the peer's producers follow once it is alive: see
/// [`activate`]).
async fn install<H: Host>(
    ctx: &H,
    channel: &str,
    (peer, region): (&str, &str),
    receive: (u32, [u8; 32]),
    send: (u32, [u8; 32]),
    peer_addr: SocketAddr,
) -> Result<(), ApiError> {
    let params = LinkParams {
        channel_id: channel.to_string(),
        peer: peer.to_string(),
        peer_region: region.to_string(),
        receive_id: receive.0,
        receive_key: receive.1,
        send_id: send.0,
        send_key: send.1,
        peer_addr,
        local_port: 0,
    };
    match cascade_call(ctx, channel, LinkCommand::AddLink(params)).await? {
        Reply::Link(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

async fn add_producer<H: Host>(
    ctx: &H,
    live: &Live,
    channel: &str,
    peer: &str,
    producer: RemoteProducer,
) {
    {
        let mut state = live.cascade.borrow_mut();
        let ids = state.remote.entry(channel.to_string()).or_default();
        ids.insert(producer.producer_id.clone());
        ids.insert(producer.user_id.clone());
    }
    let id = producer.producer_id.clone();
    let cmd = LinkCommand::AddRemoteProducer {
        channel_id: channel.to_string(),
        peer: peer.to_string(),
        producer,
    };
    if let Err(e) = done(ctx, channel, cmd).await {
        tracing::debug!(channel, peer, producer = %id, "remote producer not added: {}", e.message);
    }
}

/// The reconcile loop (cluster mode with a secret); runs until dropped.
pub(super) async fn run<H: Host>(ctx: Rc<H>) {
    let Some(live) = &ctx.cluster().live else {
        return;
    };
    if live.config.secret.is_none() {
        return;
    }
    let weak = Rc::downgrade(&ctx);
    live.cascade.borrow_mut().spawn = Some(Box::new(move |peer| {
        let (tx, rx) = flume::bounded(QUEUE);
        glommio::spawn_local(announce::announcer(weak.clone(), peer, rx)).detach();
        tx
    }));
    let (tx, woken) = flume::bounded(QUEUE);
    live.cascade.borrow_mut().wake = Some(tx);
    let mut next = Instant::now() + TICK;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let sleep = async {
            glommio::timer::sleep(wait).await;
            None
        };
        let woke = futures_lite::future::or(sleep, async { woken.recv_async().await.ok() }).await;
        if !live.registered.get() {
            continue;
        }
        match woke {
            Some(Wake::Room { channel, nudge }) => set_up_now(&ctx, live, &channel, nudge).await,
            Some(Wake::Accepted(accepted)) => {
                glommio::spawn_local(activate::activate(ctx.clone(), accepted)).detach();
            }
            None => {
                reconcile(&ctx, live).await;
                next = Instant::now() + TICK;
            }
        }
    }
}

/// [`Cascade::wake`]: `channel`'s node set from Redis, its missing links set up now.
async fn set_up_now<H: Host>(ctx: &Rc<H>, live: &Live, channel: &str, nudge: bool) {
    let cluster = ctx.cluster();
    let me = cluster.identity.id.clone();
    for node in cluster.fetch_room_nodes(channel).await {
        if node.id == me {
            continue;
        }
        if me < node.id {
            set_up(ctx, live, (channel.to_string(), node.id.clone()), node);
        } else if nudge {
            let ask = Nudge {
                channel: channel.to_string(),
                nonce: nonce(),
            };
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let cluster = ctx.cluster();
                let Some(live) = &cluster.live else { return };
                let sent: Result<Value, String> =
                    cluster.cascade_post(live, &node.url, "nudge", &ask).await;
                if let Err(e) = sent {
                    tracing::debug!(peer = %node.id, "nudge not delivered: {e}");
                }
            })
            .detach();
        }
    }
}

/// Sets up the link `key` to `node` unless it exists or was tried within [`RETRY`].
fn set_up<H: Host>(ctx: &Rc<H>, live: &Live, key: (String, String), node: RoomNode) {
    let now = Instant::now();
    {
        let state = live.cascade.borrow();
        if state.links.contains_key(&key) || state.next_try.get(&key).is_some_and(|t| now < *t) {
            return;
        }
    }
    ctx.cluster().pending(live, &key, "");
    live.cascade
        .borrow_mut()
        .next_try
        .insert(key.clone(), now + RETRY);
    glommio::spawn_local(initiate(ctx.clone(), key, node)).detach();
}

async fn reconcile<H: Host>(ctx: &Rc<H>, live: &Live) {
    let cluster = ctx.cluster();
    let me = cluster.identity.id.clone();
    let now = Instant::now();
    // The peers each room should have.
    let channels: Vec<String> = live.sets.borrow().keys().cloned().collect();
    let mut wanted: HashMap<(String, String), RoomNode> = HashMap::new();
    for c in channels {
        for n in cluster.room_nodes(&c) {
            if n.id != me {
                wanted.insert((c.clone(), n.id.clone()), n);
            }
        }
    }
    // The links the shards have.
    let mut shard_links: Vec<LinkInfo> = Vec::new();
    for shard in ctx.shards() {
        if let Ok(Reply::Links(list)) = shard
            .call(crate::shard::Command::Cascade(LinkCommand::Links))
            .await
        {
            shard_links.extend(list);
        }
    }
    // Within a TTL of a Redis gap or of a Redis that lost its data, the node sets are being
    // re-claimed (the first node back claims a room before its peers do): a peer missing from
    // one is not gone yet. Its link stays unless it goes silent, as a dead peer's does.
    let steady = live.steady.get().elapsed() >= super::TTL;
    let mut remove: Vec<((String, String), &'static str)> = Vec::new();
    {
        let state = live.cascade.borrow();
        for (key, link) in &state.links {
            if !link.ready {
                // A set-up ends within DEADLINE + SETUP_WAIT; one that did not (its task gone)
                // is dropped, to be set up again.
                if now.saturating_duration_since(link.since) > activate::SETUP_WAIT * 2 {
                    remove.push((key.clone(), "node_lost"));
                }
                continue;
            }
            if steady && !wanted.contains_key(key) {
                remove.push((key.clone(), "node_lost"));
                continue;
            }
            let info = shard_links
                .iter()
                .find(|l| l.channel_id == key.0 && l.peer == key.1);
            let heard = info
                .and_then(|l| l.last_received)
                .map_or(link.since, |t| t.max(link.since));
            if info.is_none() || now.saturating_duration_since(heard) > GRACE {
                remove.push((key.clone(), "link_lost"));
            }
        }
        // Links a shard has that this module does not know (a failed set-up's).
        for l in &shard_links {
            let key = (l.channel_id.clone(), l.peer.clone());
            if !state.links.contains_key(&key) {
                remove.push((key, "node_lost"));
            }
        }
    }
    for ((channel, peer), mut reason) in remove {
        // A silent peer that does not even take a connection is gone (killed, crashed).
        if reason == "link_lost" && !cluster.answers(live, &peer).await {
            reason = "node_lost";
        }
        tracing::info!(channel = %channel, peer = %peer, reason, "cascade link removed");
        {
            let mut state = live.cascade.borrow_mut();
            state.links.remove(&(channel.clone(), peer.clone()));
            state.counters.links_removed += 1;
        }
        remove_link(&**ctx, &channel, &peer, Some(reason)).await;
    }
    {
        // Every SYNC, each ready link's peer gets the room's local producers.
        let mut state = live.cascade.borrow_mut();
        let due: Vec<(String, String)> = state
            .links
            .iter_mut()
            .filter(|(_, l)| l.ready && now.saturating_duration_since(l.synced) >= SYNC)
            .map(|(key, l)| {
                l.synced = now;
                key.clone()
            })
            .collect();
        for (channel, peer) in due {
            let queued = state
                .queue(&peer)
                .is_some_and(|q| q.try_send((channel, Outgoing::Sync)).is_ok());
            if !queued {
                state.counters.announce_failed += 1;
            }
        }
        let linked: HashSet<String> = state.links.keys().map(|(_, p)| p.clone()).collect();
        state.queues.retain(|p, _| linked.contains(p));
        let channels: HashSet<String> = state.links.keys().map(|(c, _)| c.clone()).collect();
        state.remote.retain(|c, _| channels.contains(c));
        state.next_try.retain(|k, _| wanted.contains_key(k));
    }
    // Missing links: the node with the smaller id sets them up.
    for (key, node) in wanted {
        if me.as_str() < node.id.as_str() {
            set_up(ctx, live, key, node);
        }
    }
}

/// The initiator's side of a set-up.
async fn initiate<H: Host>(ctx: Rc<H>, key: (String, String), node: RoomNode) {
    let cluster = ctx.cluster();
    let Some(live) = &cluster.live else { return };
    let Some(secret) = live.config.secret.as_ref() else {
        return;
    };
    let me = &cluster.identity;
    let channel = &key.0;
    let receive_id = random_id();
    let result = async {
        ctx.open_room(channel).await.map_err(|e| e.message)?;
        let addr = link_addr(&*ctx, channel).await.map_err(|e| e.message)?;
        let producers = relayed_producers(&*ctx, channel)
            .await
            .map_err(|e| e.message)?;
        let request = LinkRequest {
            channel: channel.clone(),
            node: me.id.clone(),
            incarnation: me.incarnation.clone(),
            receive_id,
            link_addr: addr,
            producers,
        };
        let reply: LinkReply = cluster
            .cascade_post(live, &node.url, "link", &request)
            .await?;
        if let Some(link) = live.cascade.borrow_mut().links.get_mut(&key) {
            link.incarnation = reply.incarnation.clone();
        }
        let (send_key, receive_key) = keys(
            secret,
            (&me.id, &me.incarnation, receive_id),
            (&node.id, &reply.incarnation, reply.receive_id),
            channel,
        );
        install(
            &*ctx,
            channel,
            (&node.id, &node.region),
            (receive_id, receive_key),
            (reply.receive_id, send_key),
            reply.link_addr,
        )
        .await
        .map_err(|e| e.message)?;
        if !activate::wait_alive(&*ctx, channel, &node.id, receive_id).await {
            return Err("no datagram from the peer".to_string());
        }
        Ok(reply.producers)
    }
    .await;
    match result {
        Ok(producers) => {
            for producer in producers {
                add_producer(&*ctx, live, channel, &node.id, producer).await;
            }
            cluster.ready(live, &key);
            tracing::info!(channel = %channel, peer = %node.id, "cascade link set up");
        }
        Err(why) => activate::fail(&*ctx, live, &key, &why).await,
    }
}
