//! The registry loop: every [`HEARTBEAT`] a node counts its rooms (a command to each shard),
//! writes its entry, claims its rooms (Redis may have forgotten them: restarted, flushed; a
//! conflict is settled toward the node with the room's live participants), learns the nodes not
//! lost, and removes the directory entries of its rooms that emptied. Also the drain: SIGTERM in cluster mode.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::store::{self, Answer, Op};
use super::{Cluster, Host, Live, Node, State, HEARTBEAT, REDIS_TIMEOUT, TTL};
use crate::sfu::api::{ApiError, Counts};
use crate::shard::{Command, Reply};

/// While Redis is unreachable, the loop retries this often (the Redis thread backs off on its
/// own), so that the node is registered again within a heartbeat of Redis coming back.
const RETRY: Duration = Duration::from_millis(500);
/// A room placed on this node, without participants, event streams or requests for this
/// long, has its directory entry removed.
const SWEEP_AGE: Duration = Duration::from_secs(4);
/// A drain ends once no room has had participants for this long (requests for empty rooms do
/// not hold it open).
const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// The shards' counts and rooms (channel → participants).
async fn local_rooms(ctx: &impl Host) -> Result<(Counts, HashMap<String, u64>), ApiError> {
    let mut counts = Counts::default();
    let mut rooms = HashMap::new();
    for shard in ctx.shards() {
        if let Reply::Counts(c) = shard.call(Command::Counts).await? {
            counts += c;
        }
        if let Reply::Rooms(list) = shard.call(Command::Rooms).await? {
            rooms.extend(list);
        }
    }
    Ok((counts, rooms))
}

/// This node's registry entry.
pub(super) async fn entry(ctx: &impl Host, state: State) -> Result<Value, ApiError> {
    let (counts, _) = local_rooms(ctx).await?;
    Ok(entry_of(ctx, state, &counts))
}

/// The node's room limit (0 = none) is advertised so that placement respects it.
fn entry_of(ctx: &impl Host, state: State, c: &Counts) -> Value {
    let id = &ctx.cluster().identity;
    let max_rooms = ctx.max_rooms();
    json!({
        "id": id.id,
        "url": id.url,
        "region": id.region,
        "state": state.as_str(),
        "rooms": c.rooms,
        "participants": c.participants,
        "consumers": c.consumers,
        "load": c.rooms + c.participants + c.consumers,
        "maxRooms": max_rooms,
        "version": env!("CARGO_PKG_VERSION"),
        "incarnation": id.incarnation,
    })
}

/// Before the first heartbeat: refuses a Redis that a cluster of another layout uses, a node
/// id another live process holds (its rooms would be taken over), and a node URL that does not
/// answer as this node (rooms placed here would be unreachable).
async fn checks(ctx: &impl Host, live: &Live) -> Result<(), String> {
    let id = &ctx.cluster().identity;
    let op = || Op::Start {
        id: id.id.clone(),
        incarnation: id.incarnation.clone(),
        url: id.url.clone(),
    };
    let mut tries = 0;
    let (schema, holder) = loop {
        match live.store.call(op(), REDIS_TIMEOUT).await {
            Ok(Answer::Started { schema, holder }) => break (schema, holder),
            Ok(_) => return Err("unexpected answer from Redis at start".into()),
            Err(e) if tries < 10 => {
                tries += 1;
                tracing::warn!("cluster start-up check: {e}; retrying");
                glommio::timer::sleep(RETRY).await;
            }
            Err(e) => return Err(format!("cluster start-up check failed: {e}")),
        }
    };
    if schema != super::lua::SCHEMA {
        return Err(format!(
            "the cluster's Redis is used by choir nodes of an incompatible version (directory layout {schema}; this choir's is {}): give each version its own Redis or database (redis://host:port/N), or stop the old nodes first",
            super::lua::SCHEMA
        ));
    }
    if !holder.is_empty() {
        return Err(format!(
            "node id {:?} is held by another live choir process (at {holder}): give each node its own --node-id (CHOIR_NODE_ID)",
            id.id
        ));
    }
    super::proxy::whoami(&live.pool, &id.url, &id.id, &id.incarnation)
        .await
        .map_err(|why| {
            format!(
                "--node-url (CHOIR_NODE_URL) {} does not answer as this node: {why}",
                id.url
            )
        })
}

/// Start-up (cluster mode): the [`checks`], the first heartbeat (requests wait for it), then
/// the heartbeat loop; runs until dropped.
pub(super) async fn run<H: Host>(ctx: Rc<H>) {
    let Some(live) = &ctx.cluster().live else {
        return;
    };
    if live.config.secret.is_none() {
        tracing::warn!("NO CLUSTER SECRET: requests forwarded between nodes count against the owner's per-address connection cap and rate limit. Set CHOIR_CLUSTER_SECRET (or CHOIR_AUTH_SECRET, which it is then derived from) on every node");
    }
    if let Err(why) = checks(&*ctx, live).await {
        ctx.cluster().fail(why);
        return;
    }
    beat(&*ctx, live).await;
    loop {
        let wait = if live.connected.get() {
            HEARTBEAT
        } else {
            RETRY
        };
        let tick = async {
            glommio::timer::sleep(wait).await;
        };
        let woken = async {
            let _ = futures_lite::future::or(
                async {
                    let _ = live.wake.1.recv_async().await;
                },
                async {
                    let _ = live.store.reconnected.recv_async().await;
                },
            )
            .await;
        };
        futures_lite::future::or(tick, woken).await;
        beat(&*ctx, live).await;
    }
}

async fn beat(ctx: &impl Host, live: &Live) {
    let cluster = ctx.cluster();
    let Ok((counts, rooms)) = local_rooms(ctx).await else {
        return; // a shard is down: health says so, the process is about to exit
    };
    let entry = entry_of(ctx, live.state.get(), &counts);
    // Every heartbeat claims the rooms this node has (those with participants, and those it
    // serves), so that Redis forgetting them (a restart, a flush) costs one heartbeat.
    let claims = {
        let mut yielded = live.yielded.borrow_mut();
        yielded.retain(|c| rooms.contains_key(c));
        let mut claims: HashMap<String, u64> = live
            .owned
            .borrow()
            .keys()
            .map(|c| (c.clone(), rooms.get(c).copied().unwrap_or(0)))
            .collect();
        for (c, &p) in &rooms {
            if p > 0 && !yielded.contains(c) {
                claims.insert(c.clone(), p);
            }
        }
        claims
    };
    let known: Vec<String> = live.nodes.borrow().keys().cloned().collect();
    let op = Op::Heartbeat {
        id: cluster.identity.id.clone(),
        entry: entry.to_string(),
        sweep_age: SWEEP_AGE,
        first: !live.registered.get(),
        epoch: live.epoch.borrow().clone(),
        known,
        rooms: claims.into_iter().collect(),
    };
    let hb = match live.store.call(op, REDIS_TIMEOUT).await {
        Ok(Answer::Heartbeat(hb)) => hb,
        Ok(_) => return,
        Err(e) => {
            if live.connected.get() {
                tracing::warn!("cluster registry unreachable: {e}");
            }
            cluster.redis_failed();
            return;
        }
    };
    if !live.registered.replace(true) {
        tracing::info!(node = %cluster.identity.id, url = %cluster.identity.url, "joined the cluster");
    } else if !live.connected.get() {
        tracing::info!("cluster registry reachable again: rooms re-claimed");
    }
    let previous = live.epoch.replace(hb.epoch.clone());
    if !previous.is_empty() && previous != hb.epoch {
        tracing::warn!(
            "the cluster's Redis lost its data (restarted or flushed): rooms re-claimed; no node is declared lost for a TTL"
        );
        live.steady.set(Instant::now());
    }
    live.connected.set(true);
    cluster.learn_nodes(&hb.nodes);
    cluster.learn_sets(live, hb.sets);
    yielded(ctx, live, hb.yielded);
    sweep(ctx, live, hb.old_rooms, &rooms).await;
}

/// Rooms another node owns with at least as many live participants (a conflicting claim,
/// after a split): this node stops serving them; requests go to the owner, and the event
/// streams open here get `roomClosed {reason: "moved"}` so that their clients join again there.
fn yielded(ctx: &impl Host, live: &Live, yielded: Vec<(String, String)>) {
    for (channel, owner) in yielded {
        if live.yielded.borrow_mut().insert(channel.clone()) {
            tracing::warn!(channel = %channel, owner = %owner, "room conflict settled toward another node: this copy is closed to requests");
            live.counters.borrow_mut().reclaim_conflicts += 1;
        }
        live.owned.borrow_mut().remove(&channel);
        live.cache.borrow_mut().insert(channel.clone(), owner);
        ctx.close_room(&channel, "moved");
    }
}

/// Removes the directory entries of rooms placed here long enough ago that are no longer in
/// use: no participants, no event stream, no recent request.
async fn sweep(ctx: &impl Host, live: &Live, old: Vec<String>, rooms: &HashMap<String, u64>) {
    let now = Instant::now();
    let idle: Vec<String> = {
        let owned = live.owned.borrow();
        old.into_iter()
            .filter(|c| rooms.get(c).copied().unwrap_or(0) == 0)
            .filter(|c| !ctx.has_streams(c))
            .filter(|c| owned.get(c).is_none_or(|t| now - *t >= SWEEP_AGE))
            .collect()
    };
    if idle.is_empty() {
        return;
    }
    {
        let mut owned = live.owned.borrow_mut();
        for c in &idle {
            owned.remove(c);
        }
    }
    tracing::debug!(
        rooms = idle.len(),
        "directory entries of empty rooms removed"
    );
    let op = Op::Release {
        id: ctx.cluster().identity.id.clone(),
        channels: idle,
    };
    if let Err(e) = live.store.call(op, REDIS_TIMEOUT).await {
        tracing::warn!("could not remove empty rooms from the directory: {e}");
        ctx.cluster().redis_failed();
    }
}

/// The drain (cluster mode): on the first SIGTERM the node is `draining` (no new rooms are
/// placed on it; its rooms keep working and take joiners); it stops once its last room
/// emptied, or at the drain timeout.
pub(super) async fn drain<H: Host>(ctx: Rc<H>) {
    let Some(live) = &ctx.cluster().live else {
        return;
    };
    if live.drain.recv_async().await.is_err() {
        return;
    }
    let started = Instant::now();
    let timeout = live.config.drain_timeout;
    tracing::info!(
        ?timeout,
        "draining: no new rooms here; stopping when the last room empties (SIGTERM again or SIGINT stops now)"
    );
    live.state.set(State::Draining);
    let _ = live.wake.0.try_send(());
    // The last time a room here had participants (a joiner between its first request and its
    // transport counts: the drain waits for a quiet spell, not for requests to stop).
    let mut busy_at = started;
    loop {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        if started.elapsed() >= timeout {
            tracing::warn!("drain timeout reached: stopping with rooms still open");
            break;
        }
        let Ok((_, rooms)) = local_rooms(&*ctx).await else {
            break;
        };
        if rooms.values().any(|&p| p > 0) {
            busy_at = Instant::now();
        } else if busy_at.elapsed() >= DRAIN_QUIET {
            tracing::info!("drained: the last room emptied");
            break;
        }
    }
    (live.stopping)();
    let _ = live.stop.try_send(());
}

/// The registry's listing, as this node knows it.
impl Cluster {
    /// A node seen in a directory answer before the next listing.
    pub(super) fn learn_node(&self, live: &Live, id: &str, entry: &str) {
        if let Some(node) = parse_entry(entry, None) {
            live.nodes
                .borrow_mut()
                .entry(id.to_string())
                .or_insert(node);
        }
    }

    /// The registry's listing: the nodes not lost. A node missing from it is lost (its cached
    /// rooms are forgotten and the event streams proxied to it told) once this node's view of
    /// Redis has been steady for a TTL; before that it is kept (Redis, or this node's link to
    /// it, had a gap: the missing node gets a TTL to register again). A node listed with another
    /// incarnation than before was restarted: its old rooms are gone as if it was lost.
    pub(super) fn learn_nodes(&self, records: &[store::NodeRecord]) {
        let Some(live) = &self.live else { return };
        let old = live.nodes.borrow().clone();
        let mut fresh: BTreeMap<String, Node> = records
            .iter()
            .filter_map(|r| {
                let node =
                    parse_entry(&r.entry, Some(r.rooms)).or_else(|| old.get(&r.id).cloned())?;
                Some((r.id.clone(), node))
            })
            .collect();
        let steady = live.steady.get().elapsed() >= TTL;
        let mut lost = Vec::new();
        for (id, node) in &old {
            match fresh.get(id) {
                None if steady => lost.push(id.clone()),
                None => {
                    fresh.insert(id.clone(), node.clone());
                }
                Some(now) if now.incarnation() != node.incarnation() && id != &self.identity.id => {
                    tracing::warn!(node = %id, "cluster node restarted (a new incarnation): its rooms are gone");
                    lost.push(id.clone());
                }
                Some(_) => {}
            }
        }
        for id in &lost {
            if !fresh.contains_key(id) {
                tracing::warn!(node = %id, "cluster node lost (no heartbeat for a TTL)");
            }
            live.cache.borrow_mut().retain(|_, owner| owner != id);
            for tx in live.lost.borrow_mut().remove(id).unwrap_or_default() {
                let _ = tx.try_send(());
            }
        }
        // Streams that ended on their own no longer wait for news of their owner.
        live.lost.borrow_mut().retain(|_, streams| {
            streams.retain(|tx| !tx.is_disconnected());
            !streams.is_empty()
        });
        live.pool.set_nodes(fresh.values().map(|n| n.url.as_str()));
        *live.nodes.borrow_mut() = fresh;
    }

    pub(super) fn node_url(&self, live: &Live, id: &str) -> Option<String> {
        live.nodes.borrow().get(id).map(|n| n.url.clone())
    }
}

fn parse_entry(entry: &str, placed: Option<u64>) -> Option<Node> {
    let mut v: Value = serde_json::from_str(entry).ok()?;
    let url = v.get("url")?.as_str()?.to_string();
    if let Some(p) = placed {
        v["placedRooms"] = json!(p);
    }
    Some(Node { url, entry: v })
}
