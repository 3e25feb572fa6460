//! The cluster's part of `GET /metrics`.

use std::collections::BTreeMap;

use prometheus_client::encoding::DescriptorEncoder;

use crate::http::exposition::{counter, gauge};

/// Cluster counters and gauges (control thread).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub connected: bool,
    pub draining: bool,
    /// Live nodes in the last registry listing (this one included).
    pub nodes: u64,
    /// Rooms this node owns in the directory.
    pub rooms_owned: u64,
    /// Requests proxied to their owner, by the owner's status ("unreachable" when none).
    pub proxied: BTreeMap<String, u64>,
    pub redis_errors: u64,
    /// Owner lookups answered by this node's cache / by Redis.
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Rooms this node placed (on any node).
    pub placements: u64,
    /// Rooms another node had taken when this one re-claimed them.
    pub reclaim_conflicts: u64,
}

impl Metrics {
    pub fn encode(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        gauge(
            e,
            "choir_cluster_connected",
            "1 while the cluster registry (Redis) answers",
            [(vec![], flag(self.connected))],
        )?;
        gauge(
            e,
            "choir_cluster_draining",
            "1 while this node drains",
            [(vec![], flag(self.draining))],
        )?;
        gauge(
            e,
            "choir_cluster_nodes",
            "Live nodes seen in the registry",
            [(vec![], self.nodes as f64)],
        )?;
        gauge(
            e,
            "choir_cluster_rooms_owned",
            "Rooms this node owns in the directory",
            [(vec![], self.rooms_owned as f64)],
        )?;
        let proxied = self
            .proxied
            .iter()
            .map(|(status, n)| (vec![("status", status.clone())], *n));
        counter(
            e,
            "choir_cluster_proxied_requests",
            "Requests proxied to the owning node, by its status",
            proxied,
        )?;
        counter(
            e,
            "choir_cluster_redis_errors",
            "Redis requests that failed",
            [(vec![], self.redis_errors)],
        )?;
        let lookups = [
            (vec![("result", "hit".to_string())], self.cache_hits),
            (vec![("result", "miss".to_string())], self.cache_misses),
        ];
        counter(
            e,
            "choir_cluster_directory_lookups",
            "Owner lookups: hit (this node's cache), miss (asked Redis)",
            lookups,
        )?;
        counter(
            e,
            "choir_cluster_placements",
            "Rooms placed by this node",
            [(vec![], self.placements)],
        )?;
        counter(
            e,
            "choir_cluster_reclaim_conflicts",
            "Rooms another node owned when this one re-claimed them",
            [(vec![], self.reclaim_conflicts)],
        )
    }
}
