//! The push channel: Server-Sent Events per (channelId, userId), fed by the shards' room events.
//!
//! Lives on the control executor only (no locks). Each subscriber has a bounded queue; one that
//! does not keep up (queue full) is disconnected and counted, so a stalled reader costs memory
//! for at most [`QUEUE`] events.

use std::collections::HashMap;

use bytes::Bytes;

use crate::api::{Audience, RoomEvent};

/// Events buffered per subscriber before it is cut off.
const QUEUE: usize = 256;

struct Subscriber {
    user_id: String,
    tx: flume::Sender<Bytes>,
}

#[derive(Default)]
pub struct Hub {
    rooms: HashMap<String, Vec<Subscriber>>,
    /// Subscribers cut off because they did not read their events.
    pub overflows: u64,
    pub delivered: u64,
}

impl Hub {
    /// A new subscription; the stream ends when the hub closes it.
    pub fn subscribe(&mut self, channel_id: &str, user_id: &str) -> flume::Receiver<Bytes> {
        let (tx, rx) = flume::bounded(QUEUE);
        // First frame: the retry hint and a comment, so the client sees the stream open at once.
        let _ = tx.try_send(Bytes::from_static(b"retry: 2000\n: connected\n\n"));
        self.rooms
            .entry(channel_id.to_string())
            .or_default()
            .push(Subscriber {
                user_id: user_id.to_string(),
                tx,
            });
        rx
    }

    /// Open streams of `user_id`, in any room.
    pub fn streams_of(&self, user_id: &str) -> usize {
        self.rooms
            .values()
            .flatten()
            .filter(|s| s.user_id == user_id && !s.tx.is_disconnected())
            .count()
    }

    /// Whether `channel_id` has open streams.
    pub fn has_streams(&self, channel_id: &str) -> bool {
        self.rooms
            .get(channel_id)
            .is_some_and(|subs| subs.iter().any(|s| !s.tx.is_disconnected()))
    }

    pub fn subscribers(&self) -> usize {
        self.rooms.values().map(Vec::len).sum()
    }

    /// Delivers a room event to its audience.
    pub fn dispatch(&mut self, ev: &RoomEvent) {
        let Some(subs) = self.rooms.get_mut(&ev.channel_id) else {
            return;
        };
        let data = serde_json::to_string(&ev.event).unwrap_or_default();
        let frame = Bytes::from(format!("event: {}\ndata: {}\n\n", ev.event.name(), data));
        let mut overflows = 0;
        let mut delivered = 0;
        subs.retain(|s| {
            let wanted = match &ev.audience {
                Audience::Others(u) => &s.user_id != u,
                Audience::Only(u) => &s.user_id == u,
            };
            if !wanted {
                return !s.tx.is_disconnected();
            }
            match s.tx.try_send(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(flume::TrySendError::Full(_)) => {
                    overflows += 1;
                    false
                }
                Err(flume::TrySendError::Disconnected(_)) => false,
            }
        });
        if subs.is_empty() {
            self.rooms.remove(&ev.channel_id);
        }
        self.overflows += overflows;
        self.delivered += delivered;
    }

    /// A comment to every subscriber (keeps proxies from timing the stream out) and pruning of
    /// closed ones.
    pub fn keepalive(&mut self) {
        let frame = Bytes::from_static(b": keepalive\n\n");
        for subs in self.rooms.values_mut() {
            subs.retain(|s| {
                !matches!(
                    s.tx.try_send(frame.clone()),
                    Err(flume::TrySendError::Disconnected(_))
                )
            });
        }
        self.rooms.retain(|_, subs| !subs.is_empty());
    }

    /// Ends every stream (shutdown).
    pub fn close_all(&mut self) {
        self.rooms.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Event;

    fn ev(audience: Audience) -> RoomEvent {
        RoomEvent {
            channel_id: "c".into(),
            audience,
            event: Event::ParticipantLeft {
                user_id: "a".into(),
                reason: "left".into(),
            },
        }
    }

    #[test]
    fn audience_and_overflow() {
        let mut hub = Hub::default();
        let a = hub.subscribe("c", "a");
        let b = hub.subscribe("c", "b");
        let _ = (a.recv().unwrap(), b.recv().unwrap());
        hub.dispatch(&ev(Audience::Others("a".into())));
        assert!(a.try_recv().is_err());
        let frame = b.try_recv().unwrap();
        assert_eq!(
            &frame[..],
            b"event: participantLeft\ndata: {\"type\":\"participantLeft\",\"userId\":\"a\",\"reason\":\"left\"}\n\n"
        );
        hub.dispatch(&ev(Audience::Only("a".into())));
        assert!(a.try_recv().is_ok() && b.try_recv().is_err());
        for _ in 0..QUEUE + 1 {
            hub.dispatch(&ev(Audience::Only("b".into())));
        }
        assert_eq!(hub.overflows, 1);
        assert_eq!(hub.subscribers(), 1);
        drop(a);
        hub.keepalive();
        assert_eq!(hub.subscribers(), 0);
    }
}
