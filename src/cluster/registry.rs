//! The registry loop: every [`HEARTBEAT`] a node counts its rooms (a command to each shard),
//! writes its entry with a [`TTL`], learns the live nodes, re-claims its rooms when Redis had
//! lost its entry (Redis restarted, or the node missed its TTL), and removes the directory
//! entries of its rooms that emptied. Also the drain: SIGTERM in cluster mode.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::store::{Answer, Op};
use super::{Cluster, Live, State, HEARTBEAT, REDIS_TIMEOUT, TTL};
use crate::control::Ctx;
use crate::sfu::api::{ApiError, Counts};
use crate::shard::{Command, Reply};

/// While Redis is unreachable, the loop retries this often (the Redis thread backs off on its
/// own), so that the node is registered again within a heartbeat of Redis coming back.
const RETRY: Duration = Duration::from_millis(500);
/// A room placed on this node, without participants, event streams or requests for this
/// long, has its directory entry removed.
const SWEEP_AGE: Duration = Duration::from_secs(4);
/// A drain ends once no room has participants and no request used an owned room this long.
const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// The shards' counts and rooms (channel → participants).
async fn local_rooms(ctx: &Ctx) -> Result<(Counts, HashMap<String, u64>), ApiError> {
    let mut counts = Counts::default();
    let mut rooms = HashMap::new();
    for shard in &ctx.shards {
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
pub(super) async fn entry(ctx: &Ctx, state: State) -> Result<Value, ApiError> {
    let (counts, _) = local_rooms(ctx).await?;
    Ok(entry_of(ctx, state, &counts))
}

/// The node's room limit (0 = none) is advertised so that placement respects it.
fn entry_of(ctx: &Ctx, state: State, c: &Counts) -> Value {
    let id = &ctx.cluster.identity;
    let max_rooms = ctx.guard.limits.max_rooms;
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
    })
}

/// The first heartbeat: the node is registered before it takes a request (placement needs a
/// registered node).
pub(super) async fn register(ctx: &Ctx) {
    if let Some(live) = &ctx.cluster.live {
        beat(ctx, live).await;
    }
}

/// The heartbeat loop (cluster mode), after [`register`]; runs until dropped.
pub(super) async fn run(ctx: Rc<Ctx>) {
    let Some(live) = &ctx.cluster.live else {
        return;
    };
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
        beat(&ctx, live).await;
    }
}

async fn beat(ctx: &Ctx, live: &Live) {
    let cluster = &ctx.cluster;
    let Ok((counts, rooms)) = local_rooms(ctx).await else {
        return; // a shard is down: health says so, the process is about to exit
    };
    let entry = entry_of(ctx, live.state.get(), &counts);
    let op = Op::Heartbeat {
        id: cluster.identity.id.clone(),
        entry: entry.to_string(),
        ttl: TTL,
        sweep_age: SWEEP_AGE,
        first: !live.registered.get(),
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
        tracing::info!("cluster registry reachable again");
    }
    live.connected.set(true);
    cluster.learn_nodes(&hb.nodes);
    if !hb.existed {
        reclaim(cluster, live, &rooms).await;
    }
    sweep(ctx, live, hb.old_rooms, &rooms).await;
}

/// Claims again every room this node has (Redis lost the directory, or this node's entry
/// expired and other nodes forgot its rooms). A room another node took meanwhile stays here
/// for the participants it has, but new requests go to that node.
async fn reclaim(cluster: &Cluster, live: &Live, rooms: &HashMap<String, u64>) {
    let mut channels: HashSet<String> = live.owned.borrow().keys().cloned().collect();
    channels.extend(rooms.keys().cloned());
    if channels.is_empty() {
        return;
    }
    let n = channels.len();
    {
        let mut owned = live.owned.borrow_mut();
        for c in rooms.keys() {
            owned.entry(c.clone()).or_insert_with(Instant::now);
        }
    }
    let op = Op::Claim {
        id: cluster.identity.id.clone(),
        channels: channels.into_iter().collect(),
    };
    match live.store.call(op, REDIS_TIMEOUT).await {
        Ok(Answer::Conflicts(conflicts)) => {
            tracing::info!(rooms = n, conflicts = conflicts.len(), "rooms re-claimed");
            let mut owned = live.owned.borrow_mut();
            for (channel, owner) in conflicts {
                tracing::warn!(channel = %channel, owner = %owner, "room re-claim refused: another node owns it now");
                owned.remove(&channel);
                live.counters.borrow_mut().reclaim_conflicts += 1;
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("room re-claim failed: {e}");
            cluster.redis_failed();
        }
    }
}

/// Removes the directory entries of rooms placed here long enough ago that are no longer in
/// use: no participants, no event stream, no recent request.
async fn sweep(ctx: &Ctx, live: &Live, old: Vec<String>, rooms: &HashMap<String, u64>) {
    let now = Instant::now();
    let idle: Vec<String> = {
        let hub = ctx.hub.borrow();
        let owned = live.owned.borrow();
        old.into_iter()
            .filter(|c| rooms.get(c).copied().unwrap_or(0) == 0)
            .filter(|c| !hub.has_streams(c))
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
        id: ctx.cluster.identity.id.clone(),
        channels: idle,
    };
    if let Err(e) = live.store.call(op, REDIS_TIMEOUT).await {
        tracing::warn!("could not remove empty rooms from the directory: {e}");
        ctx.cluster.redis_failed();
    }
}

/// The drain (cluster mode): on the first SIGTERM the node is `draining` (no new rooms are
/// placed on it; its rooms keep working and take joiners); it stops once its last room
/// emptied, or at the drain timeout.
pub(super) async fn drain(ctx: Rc<Ctx>) {
    let Some(live) = &ctx.cluster.live else {
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
    loop {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        if started.elapsed() >= timeout {
            tracing::warn!("drain timeout reached: stopping with rooms still open");
            break;
        }
        let Ok((_, rooms)) = local_rooms(&ctx).await else {
            break;
        };
        let busy = rooms.values().any(|&p| p > 0);
        let recent = live
            .owned
            .borrow()
            .values()
            .any(|t| t.elapsed() < DRAIN_QUIET);
        if !busy && !recent && started.elapsed() >= DRAIN_QUIET {
            tracing::info!("drained: the last room emptied");
            break;
        }
    }
    live.stopping.set();
    let _ = live.stop.try_send(());
}
