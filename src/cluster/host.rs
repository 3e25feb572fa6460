//! What the cluster needs from this node's control plane: its shards (their counts and
//! rooms), its room limit and its rooms' event streams. The control plane implements
//! [`Host`]; the cluster never sees the control plane's types.

use std::future::Future;
use std::pin::Pin;

use super::Cluster;
use crate::sfu::api::ApiError;
use crate::shard::{LinkCommand, Reply, ShardHandle};

/// A call into the control plane, answered later.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + 'a>>;

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
    /// Opens `channel`'s room here if it is not open (a cascade link's far end).
    fn open_room<'a>(&'a self, channel: &'a str) -> HostFuture<'a, ()>;
    /// Runs a cascade command on the shard owning `channel` (`crate::control::cascade`).
    fn cascade<'a>(&'a self, channel: &'a str, command: LinkCommand) -> HostFuture<'a, Reply>;
}
