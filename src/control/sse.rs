//! The push channel: Server-Sent Events per (channelId, userId), fed by the shards' room events.
//!
//! Lives on the control executor only (no locks). Each subscriber has a bounded queue; one that
//! does not keep up (queue full) is disconnected and counted, so a stalled reader costs memory
//! for at most [`QUEUE`] events. `audioLevels` goes only to streams opened with `?levels=1`;
//! the last `dominantSpeaker` of each room is kept (until that producer closes or its user
//! leaves) so that a new stream starts with it.

use std::collections::HashMap;

use bytes::Bytes;

use crate::sfu::api::{Audience, Event, RoomEvent};

/// Events buffered per subscriber before it is cut off.
const QUEUE: usize = 256;

struct Subscriber {
    user_id: String,
    tx: flume::Sender<Bytes>,
    /// Opened with `?levels=1`: also gets `audioLevels`.
    levels: bool,
}

/// A room's last `dominantSpeaker` event, for new streams.
struct Dominant {
    user_id: String,
    producer_id: String,
    frame: Bytes,
}

#[derive(Default)]
pub struct Hub {
    rooms: HashMap<String, Vec<Subscriber>>,
    dominant: HashMap<String, Dominant>,
    /// Subscribers cut off because they did not read their events.
    pub overflows: u64,
    pub delivered: u64,
}

impl Hub {
    /// A new subscription; the stream ends when the hub closes it.
    pub fn subscribe(&mut self, channel_id: &str, user_id: &str) -> flume::Receiver<Bytes> {
        self.subscribe_with(channel_id, user_id, false)
    }

    /// A new subscription that also gets `audioLevels` when `levels`.
    pub fn subscribe_with(
        &mut self,
        channel_id: &str,
        user_id: &str,
        levels: bool,
    ) -> flume::Receiver<Bytes> {
        let (tx, rx) = flume::bounded(QUEUE);
        // First frame: the retry hint and a comment, so the client sees the stream open at once.
        let _ = tx.try_send(Bytes::from_static(b"retry: 2000\n: connected\n\n"));
        // Then the room's current dominant speaker, if it has one.
        if let Some(d) = self.dominant.get(channel_id) {
            let _ = tx.try_send(d.frame.clone());
        }
        self.rooms
            .entry(channel_id.to_string())
            .or_default()
            .push(Subscriber {
                user_id: user_id.to_string(),
                tx,
                levels,
            });
        rx
    }

    /// Keeps the room's dominant speaker for new streams; forgets it with its producer.
    fn remember(&mut self, ev: &RoomEvent, frame: &Bytes) {
        let current = self.dominant.get(&ev.channel_id);
        let gone = match &ev.event {
            Event::DominantSpeaker {
                user_id,
                producer_id,
            } => {
                let d = Dominant {
                    user_id: user_id.clone(),
                    producer_id: producer_id.clone(),
                    frame: frame.clone(),
                };
                self.dominant.insert(ev.channel_id.clone(), d);
                return;
            }
            Event::ProducerClosed { producer_id, .. } => {
                current.is_some_and(|d| &d.producer_id == producer_id)
            }
            Event::ParticipantLeft { user_id, .. } => {
                current.is_some_and(|d| &d.user_id == user_id)
            }
            _ => false,
        };
        if gone {
            self.dominant.remove(&ev.channel_id);
        }
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
        let levels_only = matches!(ev.event, Event::AudioLevels { .. });
        let is_dominant = matches!(ev.event, Event::DominantSpeaker { .. });
        let wanted_by_some = self
            .rooms
            .get(&ev.channel_id)
            .is_some_and(|subs| !levels_only || subs.iter().any(|s| s.levels));
        if !wanted_by_some && !is_dominant {
            // Still forget a dominant speaker that left.
            self.remember(ev, &Bytes::new());
            return;
        }
        let data = serde_json::to_string(&ev.event).unwrap_or_default();
        let frame = Bytes::from(format!("event: {}\ndata: {}\n\n", ev.event.name(), data));
        self.remember(ev, &frame);
        let Some(subs) = self.rooms.get_mut(&ev.channel_id) else {
            return;
        };
        let mut overflows = 0;
        let mut delivered = 0;
        subs.retain(|s| {
            let wanted = match &ev.audience {
                Audience::Others(u) => &s.user_id != u,
                Audience::Only(u) => &s.user_id == u,
                Audience::All => !levels_only || s.levels,
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

    /// Ends the streams of `channel_id` with `roomClosed {reason}` (cluster mode: the room is
    /// another node's now, so their clients join again through the directory).
    pub fn close_room(&mut self, channel_id: &str, reason: &str) {
        self.dominant.remove(channel_id);
        let Some(subs) = self.rooms.remove(channel_id) else {
            return;
        };
        let data = serde_json::json!({"type": "roomClosed", "reason": reason});
        let frame = Bytes::from(format!("event: roomClosed\ndata: {data}\n\n"));
        for s in subs {
            let _ = s.tx.try_send(frame.clone());
        }
    }

    /// Ends every stream (shutdown).
    pub fn close_all(&mut self) {
        self.rooms.clear();
        self.dominant.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::api::Event;

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

    fn room_event(event: Event) -> RoomEvent {
        RoomEvent {
            channel_id: "c".into(),
            audience: Audience::All,
            event,
        }
    }

    fn dominant(user: &str) -> Event {
        Event::DominantSpeaker {
            user_id: user.into(),
            producer_id: format!("p-{user}"),
        }
    }

    /// The event names a subscriber has been sent so far.
    fn names(rx: &flume::Receiver<Bytes>) -> Vec<String> {
        rx.try_iter()
            .filter_map(|f| {
                let text = String::from_utf8(f.to_vec()).unwrap();
                text.strip_prefix("event: ")
                    .map(|t| t.split('\n').next().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn levels_only_to_level_streams_and_speaking_to_all() {
        let mut hub = Hub::default();
        let plain = hub.subscribe("c", "a");
        let levels = hub.subscribe_with("c", "b", true);
        let levels_event = Event::AudioLevels {
            levels: vec![crate::sfu::api::LevelEntry {
                user_id: "a".into(),
                volume: -20,
            }],
        };
        hub.dispatch(&room_event(levels_event.clone()));
        hub.dispatch(&room_event(Event::SpeakingChanged {
            user_id: "a".into(),
            producer_id: "p-a".into(),
            speaking: true,
            volume: -20,
        }));
        assert_eq!(names(&plain), ["speakingChanged"]);
        assert_eq!(names(&levels), ["audioLevels", "speakingChanged"]);
        // No stream wants levels: not even serialized, nothing delivered.
        drop(levels);
        hub.keepalive();
        let delivered = hub.delivered;
        hub.dispatch(&room_event(levels_event));
        assert_eq!(hub.delivered, delivered);
    }

    #[test]
    fn a_new_stream_starts_with_the_dominant_speaker() {
        let mut hub = Hub::default();
        let first = hub.subscribe("c", "x");
        assert!(names(&first).is_empty());
        hub.dispatch(&room_event(dominant("a")));
        hub.dispatch(&room_event(dominant("b")));
        let late = hub.subscribe("c", "y");
        let frames: Vec<Bytes> = late.try_iter().collect();
        assert_eq!(frames.len(), 2);
        assert!(std::str::from_utf8(&frames[1])
            .unwrap()
            .contains(r#""type":"dominantSpeaker","userId":"b","producerId":"p-b""#));
        // Another producer closing keeps it; the dominant one's closing forgets it.
        let closed = |user: &str| Event::ProducerClosed {
            user_id: user.into(),
            producer_id: format!("p-{user}"),
        };
        hub.dispatch(&room_event(closed("a")));
        assert_eq!(names(&hub.subscribe("c", "z")), ["dominantSpeaker"]);
        hub.dispatch(&room_event(closed("b")));
        assert!(names(&hub.subscribe("c", "w")).is_empty());
        // So does its user leaving, also in a room nobody watches.
        let mut hub = Hub::default();
        hub.dispatch(&room_event(dominant("a")));
        hub.dispatch(&RoomEvent {
            channel_id: "c".into(),
            audience: Audience::Others("a".into()),
            event: Event::ParticipantLeft {
                user_id: "a".into(),
                reason: "left".into(),
            },
        });
        assert!(names(&hub.subscribe("c", "v")).is_empty());
    }
}
