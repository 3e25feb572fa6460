//! What the cluster needs from this node's control plane: its shards (their counts and
//! rooms), its room limit and its rooms' event streams. The control plane implements
//! [`Host`]; the cluster never sees the control plane's types.

use super::Cluster;
use crate::shard::ShardHandle;

/// This node's control plane, as the cluster sees it.
pub trait Host: 'static {
    /// This node's view of the cluster.
    fn cluster(&self) -> &Cluster;
    /// The node's shards.
    fn shards(&self) -> &[ShardHandle];
    /// The node's room limit (0 = none), advertised in its registry entry.
    fn max_rooms(&self) -> u32;
    /// Whether `channel` has event streams open here.
    fn has_streams(&self, channel: &str) -> bool;
    /// Ends `channel`'s event streams here with `roomClosed {reason}`.
    fn close_room(&self, channel: &str, reason: &str);
}
