//! A link goes live only once it carries datagrams: after a set-up each end waits (at most
//! [`SETUP_WAIT`]) for the first authentic datagram from the peer before it adds the peer's
//! producers (`newProducer` to its clients) and lets its announcements flow. A peer whose API
//! answers but whose link port does not (a firewall, a route) makes the set-up fail quietly,
//! to be tried again, instead of producers that appear and vanish every few seconds.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{add_producer, cascade_call, remove_link};
use crate::cluster::{Host, Live};
use crate::shard::{LinkCommand, Reply};

/// How long a new link may stay silent before its set-up counts as failed.
pub const SETUP_WAIT: Duration = Duration::from_secs(3);
/// How often the wait asks the shard.
const POLL: Duration = Duration::from_millis(10);

/// Whether the link of `channel` to `peer` that receives on link id `receive_id` (this set-up's:
/// not one that replaced it) received an authentic datagram within [`SETUP_WAIT`].
pub(super) async fn wait_alive<H: Host>(
    ctx: &H,
    channel: &str,
    peer: &str,
    receive_id: u32,
) -> bool {
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        let cmd = LinkCommand::Link {
            channel_id: channel.to_string(),
            peer: peer.to_string(),
        };
        match cascade_call(ctx, channel, cmd).await {
            Ok(Reply::Link(info)) if info.receive_id != receive_id => return false,
            Ok(Reply::Link(info)) if info.last_received.is_some() => return true,
            Ok(Reply::Link(_)) => {}
            _ => return false, // removed meanwhile
        }
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(POLL).await;
    }
}

/// The accepting end of set-up `key` (its link receiving on `receive_id`): once the link
/// carries datagrams, the peer's producers (kept in the link's state by the set-up) are added
/// and the link is ready; else it goes. A set-up that another one replaced meanwhile does
/// nothing: the new one has its own activation.
pub(super) async fn activate<H: Host>(ctx: Rc<H>, (key, receive_id): ((String, String), u32)) {
    let cluster = ctx.cluster();
    let Some(live) = &cluster.live else { return };
    let (channel, peer) = (&key.0, &key.1);
    let alive = wait_alive(&*ctx, channel, peer, receive_id).await;
    let incoming = match live.cascade.borrow_mut().links.get_mut(&key) {
        Some(link) if !link.ready && link.receive_id == receive_id => {
            std::mem::take(&mut link.incoming)
        }
        _ => return, // replaced or removed meanwhile
    };
    if !alive {
        fail(&*ctx, live, &key, "no datagram from the peer").await;
        return;
    }
    for producer in incoming {
        add_producer(&*ctx, live, channel, peer, producer).await;
    }
    cluster.ready(live, &key);
    tracing::info!(channel = %channel, peer = %peer, "cascade link accepted");
}

/// A set-up that failed: forgotten here and in the shard (its producers were never added).
pub(super) async fn fail<H: Host>(ctx: &H, live: &Live, key: &(String, String), why: &str) {
    {
        let mut state = live.cascade.borrow_mut();
        state.links.remove(key);
        state.counters.set_up_failed += 1;
    }
    remove_link(ctx, &key.0, &key.1, None).await;
    tracing::info!(channel = %key.0, peer = %key.1, "cascade link set-up failed: {why}");
}
