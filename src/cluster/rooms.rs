//! A room's node set: with regions (`--region`) a room has one node per region, the node in
//! the region of the node that received each participant's request. The set is the directory's
//! (`choir:room:<channel>` for the region "", `choir:regions:<channel>` for the others; see
//! [`super::lua`]); each node caches the sets of its own rooms from its heartbeat, so reading
//! one never waits on Redis.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::store::{Answer, Op, RoomSet};
use super::{Cluster, Live, REDIS_TIMEOUT};

/// Most room sets cached besides the heartbeat's; past it the cache starts over.
const MAX_SETS: usize = 10_000;

/// One node that carries a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomNode {
    /// Its region ("" = no region).
    pub region: String,
    /// Its node id.
    pub id: String,
    /// Its API URL (`--node-url`), from the registry.
    pub url: String,
}

impl Cluster {
    /// The nodes that carry `channel`, every region's (this node included when it carries
    /// it), as of this node's last heartbeat (every [`super::HEARTBEAT`]) or [`Cluster::fetch_room_nodes`]:
    /// no Redis round trip. Nodes missing from the registry are left out. Empty for a room not
    /// known here, and without cluster mode.
    pub fn room_nodes(&self, channel: &str) -> Vec<RoomNode> {
        let Some(live) = &self.live else {
            return Vec::new();
        };
        let sets = live.sets.borrow();
        sets.get(channel)
            .map(|set| self.with_urls(live, set))
            .unwrap_or_default()
    }

    /// The same, asked from Redis now (one script; the cache is updated). When Redis does
    /// not answer, the cached set.
    pub async fn fetch_room_nodes(&self, channel: &str) -> Vec<RoomNode> {
        let Some(live) = &self.live else {
            return Vec::new();
        };
        self.fetch_sets(live, vec![channel.to_string()]).await;
        self.room_nodes(channel)
    }

    /// Refreshes the cached sets of `channels` from Redis (the cache alone if it fails).
    async fn fetch_sets(&self, live: &Live, channels: Vec<String>) {
        match live
            .store
            .call(Op::RoomNodes { channels }, REDIS_TIMEOUT)
            .await
        {
            Ok(Answer::RoomNodes(sets)) => {
                let mut cache = live.sets.borrow_mut();
                if cache.len() + sets.len() > MAX_SETS {
                    cache.clear();
                }
                for (c, set) in sets {
                    if set.is_empty() {
                        cache.remove(&c);
                    } else {
                        cache.insert(c, set);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("room node sets not refreshed: {e}");
                self.redis_failed();
            }
        }
    }

    /// The heartbeat's sets: those of the rooms this node claimed.
    pub(super) fn learn_sets(&self, live: &Live, sets: Vec<(String, RoomSet)>) {
        *live.sets.borrow_mut() = sets.into_iter().collect::<HashMap<_, _>>();
    }

    fn with_urls(&self, live: &Live, set: &RoomSet) -> Vec<RoomNode> {
        let nodes = live.nodes.borrow();
        set.iter()
            .filter_map(|(region, id)| {
                let url = nodes.get(id)?.url.clone();
                Some(RoomNode {
                    region: region.clone(),
                    id: id.clone(),
                    url,
                })
            })
            .collect()
    }

    /// Refreshes the cached sets of this node's rooms from Redis (`GET /cluster`).
    pub(super) async fn refresh_sets(&self, live: &Live) {
        let channels: Vec<String> = live.owned.borrow().keys().cloned().collect();
        if !channels.is_empty() {
            self.fetch_sets(live, channels).await;
        }
    }

    /// `{"<channel>": [{"node", "region", "url"}]}` for the rooms this node carries, from the
    /// cache.
    pub(super) fn rooms_json(&self, live: &Live) -> Value {
        let mut channels: Vec<String> = live.owned.borrow().keys().cloned().collect();
        channels.sort();
        let mut out = Map::new();
        for c in channels {
            let nodes: Vec<Value> = self
                .room_nodes(&c)
                .into_iter()
                .map(|n| json!({"node": n.id, "region": n.region, "url": n.url}))
                .collect();
            out.insert(c, Value::Array(nodes));
        }
        Value::Object(out)
    }
}
