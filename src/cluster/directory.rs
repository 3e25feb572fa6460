//! The room directory: where a channel lives (here, or on another node), from this node's
//! rooms, its cache of other nodes' rooms, or Redis (which places a new room atomically).

use std::time::Instant;

use super::store::{self, Op, Resolved};
use super::{Cluster, Live, REDIS_TIMEOUT};
use crate::sfu::api::ApiError;

/// Most owners cached (one entry per channel seen); past it the cache starts over.
const MAX_CACHE: usize = 100_000;

impl Cluster {
    /// Where `channel` lives: here, or on another node (by id). `hop`: the request came from
    /// another node, which believes this one owns the channel: never proxied again. `place`:
    /// the request creates the room (placed when the directory has no owner), else 404.
    pub(super) async fn locate(
        &self,
        live: &Live,
        channel: &str,
        hop: bool,
        place: bool,
    ) -> Result<Place, ApiError> {
        if let Some(used) = live.owned.borrow_mut().get_mut(channel) {
            *used = Instant::now();
            return Ok(Place::Here);
        }
        let me = &self.identity.id;
        if hop {
            // Forwarded here by a node that found this one in the directory: this node carries
            // the room in some region (the forwarding node's).
            let op = Op::Resolve {
                channel: channel.to_string(),
                region: String::new(),
                seed: 0,
                place: false,
                member: Some(me.clone()),
            };
            return match live.store.call(op, REDIS_TIMEOUT).await {
                Ok(store::Answer::Resolved(Resolved::Owner { id, .. })) if &id == me => {
                    self.own(live, channel);
                    Ok(Place::Here)
                }
                Ok(store::Answer::Resolved(Resolved::Rebuilding)) => Err(rebuilding()),
                Ok(_) => Err(ApiError::new(
                    421,
                    format!("node {me} does not own channel {channel:?}"),
                )),
                Err(e) => {
                    self.redis_failed();
                    Err(directory_unavailable(&e))
                }
            };
        }
        let cached = live.cache.borrow().get(channel).cloned();
        if let Some(owner) = cached {
            if live.nodes.borrow().contains_key(&owner) {
                live.counters.borrow_mut().cache_hits += 1;
                return Ok(Place::Node(owner));
            }
        }
        live.counters.borrow_mut().cache_misses += 1;
        self.resolve(live, channel, place).await
    }

    /// Asks the directory for `channel`'s owner in this node's region, placing the room there
    /// if it has none and `place` (else 404: the room does not exist in this region).
    pub(super) async fn resolve(
        &self,
        live: &Live,
        channel: &str,
        place: bool,
    ) -> Result<Place, ApiError> {
        let op = Op::Resolve {
            channel: channel.to_string(),
            region: self.identity.region.clone(),
            seed: random_u32(),
            place,
            member: None,
        };
        match live.store.call(op, REDIS_TIMEOUT).await {
            Ok(store::Answer::Resolved(Resolved::Owner { id, entry, placed })) => {
                if placed {
                    live.counters.borrow_mut().placements += 1;
                    tracing::info!(channel = %channel, node = %id, "room placed");
                }
                if id == self.identity.id {
                    self.own(live, channel);
                    return Ok(Place::Here);
                }
                self.learn_node(live, &id, &entry);
                let mut cache = live.cache.borrow_mut();
                if cache.len() >= MAX_CACHE {
                    cache.clear();
                }
                cache.insert(channel.to_string(), id.clone());
                Ok(Place::Node(id))
            }
            Ok(store::Answer::Resolved(Resolved::Rebuilding)) => Err(rebuilding()),
            Ok(store::Answer::Resolved(Resolved::Absent)) => {
                Err(ApiError::not_found(format!("room {channel:?} not found")))
            }
            Ok(_) => Err(ApiError::unavailable(
                "no cluster node can take a new room now",
            )),
            Err(e) => {
                self.redis_failed();
                Err(directory_unavailable(&e))
            }
        }
    }

    pub(super) fn own(&self, live: &Live, channel: &str) {
        let new = live
            .owned
            .borrow_mut()
            .insert(channel.to_string(), Instant::now())
            .is_none();
        live.cache.borrow_mut().remove(channel);
        if new && !self.identity.region.is_empty() {
            // A room that may span regions: its links now, not at the next heartbeat.
            live.cascade.borrow().wake(channel, true);
        }
    }

    /// Forgets `channel`'s cached owner (it answered that it does not own it, or is gone).
    pub(super) fn forget_owner(&self, live: &Live, channel: &str) {
        live.cache.borrow_mut().remove(channel);
    }
}

/// Where a channel lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    Here,
    Node(String),
}

fn rebuilding() -> ApiError {
    ApiError::unavailable(
        "the cluster directory is being rebuilt after a Redis outage: the room's node has not re-claimed it yet; retry shortly",
    )
}

fn directory_unavailable(e: &str) -> ApiError {
    ApiError::unavailable(format!("cluster directory unavailable: {e}"))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_be_bytes(b)
}
