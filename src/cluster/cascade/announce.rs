//! Announcements: the room events of this node's local producers and participants, carried
//! to each peer of the room in order (one queue and one request at a time per peer), and every
//! [`super::SYNC`] the whole list of the room's local producers, so that a peer repairs what a
//! lost announcement left wrong (see [`crate::sfu::Sfu::sync_remote_producers`]).

use std::rc::Weak;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{cascade_call, relayed_producers};
use crate::cluster::{Host, Live};
use crate::sfu::api::{Event, RoomEvent};
use crate::sfu::cascade::RemoteProducer;
use crate::shard::{LinkCommand, Reply};

/// What a peer's queue carries.
pub(super) enum Outgoing {
    /// A room event, announced as it is.
    Event(Event),
    /// The room's local producers, listed when it is sent.
    Sync,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "type", rename_all = "camelCase")]
pub(super) enum Announce {
    NewProducer {
        producer: RemoteProducer,
    },
    #[serde(rename_all = "camelCase")]
    Paused {
        producer_id: String,
        paused: bool,
    },
    #[serde(rename_all = "camelCase")]
    ProducerClosed {
        producer_id: String,
    },
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        user_id: String,
        reason: String,
    },
    /// Every local producer of the room the link relays now (the periodic resync).
    Sync {
        producers: Vec<RemoteProducer>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventMessage {
    pub(super) channel: String,
    pub(super) node: String,
    pub(super) incarnation: String,
    pub(super) event: Announce,
    /// Makes each request's body (and so its MAC) unique: the replay check keys on the MAC,
    /// and two equal announcements in one millisecond (pause, resume, pause) are not replays.
    pub(super) nonce: u64,
}

/// A room event out of this node's shards: announced to the room's peers when it is about a
/// local producer or participant.
pub fn on_room_event<H: Host>(ctx: &H, ev: &RoomEvent) {
    let Some(live) = &ctx.cluster().live else {
        return;
    };
    let about = match &ev.event {
        Event::NewProducer { producer_id, .. }
        | Event::ProducerClosed { producer_id, .. }
        | Event::ProducerPaused { producer_id, .. }
        | Event::ProducerResumed { producer_id, .. } => producer_id,
        Event::ParticipantLeft { user_id, .. } => user_id,
        _ => return,
    };
    let mut state = live.cascade.borrow_mut();
    if state.links.is_empty() {
        return;
    }
    if state
        .remote
        .get(&ev.channel_id)
        .is_some_and(|ids| ids.contains(about))
    {
        return;
    }
    let peers: Vec<String> = state
        .links
        .keys()
        .filter(|(c, _)| *c == ev.channel_id)
        .map(|(_, p)| p.clone())
        .collect();
    for peer in peers {
        let link = state
            .links
            .get_mut(&(ev.channel_id.clone(), peer.clone()))
            .expect("listed");
        if !link.ready {
            link.held.push(ev.event.clone());
            continue;
        }
        let sent = state.queue(&peer).is_some_and(|q| {
            q.try_send((ev.channel_id.clone(), Outgoing::Event(ev.event.clone())))
                .is_ok()
        });
        if !sent {
            state.counters.announce_failed += 1;
        }
    }
}

/// Sends one peer's announcements, one at a time, in order.
pub(super) async fn announcer<H: Host>(
    weak: Weak<H>,
    peer: String,
    rx: flume::Receiver<(String, Outgoing)>,
) {
    while let Ok((channel, item)) = rx.recv_async().await {
        // Held for one announcement at a time: the queue lives in the control plane.
        let Some(ctx) = weak.upgrade() else { return };
        let cluster = ctx.cluster();
        let Some(live) = &cluster.live else { return };
        let event = match item {
            Outgoing::Event(event) => event,
            Outgoing::Sync => match relayed_producers(&*ctx, &channel).await {
                Ok(producers) => {
                    let sync = Announce::Sync { producers };
                    send(&*ctx, live, &peer, channel, sync).await;
                    continue;
                }
                Err(_) => continue, // the room is gone here: the link goes with it
            },
        };
        let announce = match event {
            Event::NewProducer { producer_id, .. } => {
                let cmd = LinkCommand::RelayedProducer {
                    channel_id: channel.clone(),
                    producer_id,
                };
                match cascade_call(&*ctx, &channel, cmd).await {
                    Ok(Reply::RemoteProducer(p)) => Announce::NewProducer { producer: *p },
                    _ => continue, // closed already: its close follows
                }
            }
            Event::ProducerPaused { producer_id, .. } => Announce::Paused {
                producer_id,
                paused: true,
            },
            Event::ProducerResumed { producer_id, .. } => Announce::Paused {
                producer_id,
                paused: false,
            },
            Event::ProducerClosed { producer_id, .. } => Announce::ProducerClosed { producer_id },
            Event::ParticipantLeft { user_id, reason } => {
                Announce::ParticipantLeft { user_id, reason }
            }
            _ => continue,
        };
        send(&*ctx, live, &peer, channel, announce).await;
    }
}

/// Posts one announcement to `peer` (counted).
async fn send<H: Host>(ctx: &H, live: &Live, peer: &str, channel: String, announce: Announce) {
    let cluster = ctx.cluster();
    let Some(url) = cluster.node_url(live, peer) else {
        return;
    };
    let message = EventMessage {
        channel,
        node: cluster.identity.id.clone(),
        incarnation: cluster.identity.incarnation.clone(),
        event: announce,
        nonce: super::nonce(),
    };
    let sent: Result<Value, String> = cluster.cascade_post(live, &url, "event", &message).await;
    let mut state = live.cascade.borrow_mut();
    match sent {
        Ok(_) => state.counters.announced += 1,
        Err(e) => {
            state.counters.announce_failed += 1;
            tracing::debug!(peer = %peer, "announcement not delivered: {e}");
        }
    }
}
