//! The control plane's calls for cascading (issue 22): each sends a
//! [`LinkCommand`](crate::shard::LinkCommand) to the shard owning the room and returns its
//! answer. They take the node's shards (`Host::shards()` in the cluster code) and touch no
//! media state; no HTTP route leads here. See [`crate::sfu::cascade`] for what each does in the
//! core and [`crate::shard::LinkCommand`] for the link port.

use crate::sfu::api::ApiError;
use crate::sfu::cascade::{LinkInfo, LinkParams, RemoteProducer};
use crate::shard::{shard_for, Command, LinkCommand, Reply, ShardHandle};

fn owner<'a>(shards: &'a [ShardHandle], channel_id: &str) -> Result<&'a ShardHandle, ApiError> {
    shards
        .get(shard_for(channel_id, shards.len()))
        .ok_or_else(|| ApiError::unavailable("no shard"))
}

/// Sends `command` to the shard owning `channel_id` and returns its raw answer (what the cluster
/// reaches through [`crate::cluster::Host::cascade`]).
pub async fn call(
    shards: &[ShardHandle],
    channel_id: &str,
    command: LinkCommand,
) -> Result<Reply, ApiError> {
    owner(shards, channel_id)?
        .call(Command::Cascade(command))
        .await
}

fn unexpected(reply: Reply) -> ApiError {
    tracing::error!(?reply, "unexpected shard reply");
    ApiError::new(500, "internal error: unexpected shard reply")
}

fn done(reply: Reply) -> Result<(), ApiError> {
    match reply {
        Reply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// The link port of the shard owning `channel_id` (bound first if need be): the peer sends to
/// `announced_ip:port`.
pub async fn link_port(shards: &[ShardHandle], channel_id: &str) -> Result<u16, ApiError> {
    match call(shards, channel_id, LinkCommand::LinkPort).await? {
        Reply::LinkPort(port) => Ok(port),
        other => Err(unexpected(other)),
    }
}

/// Adds a link of `params.channel_id` (the room must exist on its shard: 404); a
/// `local_port` of 0 is the shard's link port. Returns the new link's state.
pub async fn add_link(shards: &[ShardHandle], params: LinkParams) -> Result<LinkInfo, ApiError> {
    let channel_id = params.channel_id.clone();
    match call(shards, &channel_id, LinkCommand::AddLink(params)).await? {
        Reply::Link(info) => Ok(*info),
        other => Err(unexpected(other)),
    }
}

/// Removes the link of `channel_id` to `peer` (its remote producers close; with a `reason`,
/// their users leave).
pub async fn remove_link(
    shards: &[ShardHandle],
    channel_id: &str,
    peer: &str,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let command = LinkCommand::RemoveLink {
        channel_id: channel_id.to_string(),
        peer: peer.to_string(),
        reason: reason.map(str::to_string),
    };
    done(call(shards, channel_id, command).await?)
}

/// Adds a producer of node `peer`, as that node announced it ([`relayed_producer`] there).
pub async fn add_remote_producer(
    shards: &[ShardHandle],
    channel_id: &str,
    peer: &str,
    producer: RemoteProducer,
) -> Result<(), ApiError> {
    let command = LinkCommand::AddRemoteProducer {
        channel_id: channel_id.to_string(),
        peer: peer.to_string(),
        producer,
    };
    done(call(shards, channel_id, command).await?)
}

/// Closes a remote producer of `peer` (with a `reason`: its user left).
pub async fn remove_remote_producer(
    shards: &[ShardHandle],
    channel_id: &str,
    peer: &str,
    producer_id: &str,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let command = LinkCommand::RemoveRemoteProducer {
        channel_id: channel_id.to_string(),
        peer: peer.to_string(),
        producer_id: producer_id.to_string(),
        reason: reason.map(str::to_string),
    };
    done(call(shards, channel_id, command).await?)
}

/// A remote producer of `peer` was paused or resumed on its node.
pub async fn set_remote_paused(
    shards: &[ShardHandle],
    channel_id: &str,
    peer: &str,
    producer_id: &str,
    paused: bool,
) -> Result<(), ApiError> {
    let command = LinkCommand::SetRemotePaused {
        channel_id: channel_id.to_string(),
        peer: peer.to_string(),
        producer_id: producer_id.to_string(),
        paused,
    };
    done(call(shards, channel_id, command).await?)
}

/// A participant of node `peer` left: its remote producers close, `participantLeft {reason}`.
pub async fn remote_participant_left(
    shards: &[ShardHandle],
    channel_id: &str,
    peer: &str,
    user_id: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let command = LinkCommand::RemoteParticipantLeft {
        channel_id: channel_id.to_string(),
        peer: peer.to_string(),
        user_id: user_id.to_string(),
        reason: reason.to_string(),
    };
    done(call(shards, channel_id, command).await?)
}

/// Local producer `producer_id` of `channel_id`, as a peer node adds it.
pub async fn relayed_producer(
    shards: &[ShardHandle],
    channel_id: &str,
    producer_id: &str,
) -> Result<RemoteProducer, ApiError> {
    let command = LinkCommand::RelayedProducer {
        channel_id: channel_id.to_string(),
        producer_id: producer_id.to_string(),
    };
    match call(shards, channel_id, command).await? {
        Reply::RemoteProducer(p) => Ok(*p),
        other => Err(unexpected(other)),
    }
}

/// Every local producer of `channel_id`, as a peer node adds them (for a new link).
pub async fn relayed_producers(
    shards: &[ShardHandle],
    channel_id: &str,
) -> Result<Vec<RemoteProducer>, ApiError> {
    let command = LinkCommand::RelayedProducers {
        channel_id: channel_id.to_string(),
    };
    match call(shards, channel_id, command).await? {
        Reply::RemoteProducers(list) => Ok(list),
        other => Err(unexpected(other)),
    }
}

/// Every link of every shard of the node.
pub async fn links(shards: &[ShardHandle]) -> Result<Vec<LinkInfo>, ApiError> {
    let mut all = Vec::new();
    for shard in shards {
        match shard.call(Command::Cascade(LinkCommand::Links)).await? {
            Reply::Links(list) => all.extend(list),
            other => return Err(unexpected(other)),
        }
    }
    Ok(all)
}
