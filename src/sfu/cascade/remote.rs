//! Remote producers: the producers of a room's other nodes, added, paused and closed by the
//! control plane as their nodes announce them (see the parent module).

use super::RemoteProducer;
use crate::sfu::api::{ApiError, Audience, Event, RoomEvent};
use crate::sfu::ortc;
use crate::sfu::{Origin, Producer, ProducerKey, Sfu};

impl Sfu {
    /// What a peer node needs to add local producer `producer_id` as a remote one.
    pub fn relayed_producer(
        &self,
        channel_id: &str,
        producer_id: &str,
    ) -> Result<RemoteProducer, ApiError> {
        let pk = self.room_producer(channel_id, producer_id)?;
        let p = &self.producers[pk];
        if !matches!(p.origin, Origin::Local(_)) {
            return Err(ApiError::conflict(format!(
                "producer {producer_id:?} is a remote one"
            )));
        }
        Ok(announcement(p))
    }

    /// [`Sfu::relayed_producer`] of each local producer of the room (for a new link).
    pub fn relayed_producers(&self, channel_id: &str) -> Result<Vec<RemoteProducer>, ApiError> {
        let room = self.room(channel_id)?;
        let mut list: Vec<RemoteProducer> = room
            .participants
            .values()
            .filter_map(|p| p.producer)
            .map(|pk| announcement(&self.producers[pk]))
            .collect();
        list.sort_by_key(|p| p.stream);
        Ok(list)
    }

    /// Adds a producer of node `peer` (whose link of `channel_id` must exist), announced with
    /// `newProducer` to the room like a local `produce`; its packets are delivered from the
    /// first one that arrives after this call. The parameters are validated as at `produce`
    /// (400); a stream or producer id already in use is a 409.
    pub fn add_remote_producer(
        &mut self,
        channel_id: &str,
        peer: &str,
        remote: RemoteProducer,
    ) -> Result<(), ApiError> {
        let lk = self.find_link(channel_id, peer)?;
        if self.links[lk].streams.contains_key(&remote.stream) {
            return Err(ApiError::conflict(format!(
                "stream {} of node {peer:?} already has a producer",
                remote.stream
            )));
        }
        if self.producer_ids.contains_key(&remote.producer_id) {
            return Err(ApiError::conflict(format!(
                "producer {:?} already exists",
                remote.producer_id
            )));
        }
        let mut rtp = ortc::validate_producer("audio", &remote.rtp_parameters)
            .map_err(ApiError::bad_request)?;
        // Its node unpacks RED before relaying: plain Opus comes over the link.
        rtp.red_payload_type = None;
        let speaker = crate::sfu::speaking::Speaker::new(&rtp, &self.limits.speaking);
        let producer = Producer {
            id: remote.producer_id.clone(),
            channel_id: channel_id.to_string(),
            user_id: remote.user_id.clone(),
            origin: Origin::Remote(lk),
            stream: remote.stream,
            parameters: remote.rtp_parameters,
            ssrc: rtp.ssrc,
            // Its own node asks the speaker for lost packets.
            gaps: None,
            red: Default::default(),
            rtp,
            paused: remote.paused,
            stats: None,
            consumers: Vec::new(),
            speaker,
            history: None,
        };
        let pk = self.producers.insert(producer);
        self.producer_ids.insert(remote.producer_id.clone(), pk);
        self.links[lk].streams.insert(remote.stream, pk);
        if let Some(room) = self.rooms.get_mut(channel_id) {
            room.remote.push(pk);
        }
        self.counters.remote_producers += 1;
        tracing::info!(channel = %channel_id, peer = %peer, user = %remote.user_id, producer = %remote.producer_id, "remote producer added");
        self.events.push(RoomEvent {
            channel_id: channel_id.to_string(),
            audience: Audience::Others(remote.user_id.clone()),
            event: Event::NewProducer {
                user_id: remote.user_id,
                producer_id: remote.producer_id,
                kind: "audio".into(),
                node: Some(peer.to_string()),
                region: Some(self.links[lk].peer_region.clone()),
            },
        });
        Ok(())
    }

    /// Brings `peer`'s producers here in line with `producers`, the whole list its node relays
    /// now (a periodic resync, so that a lost announcement is repaired): one missing here is
    /// added (`newProducer`), one here but no longer listed closes (`producerClosed`), and a
    /// differing pause state is applied (`producerPaused` / `producerResumed`). Returns how
    /// many it changed (0 when both sides agreed).
    pub fn sync_remote_producers(
        &mut self,
        channel_id: &str,
        peer: &str,
        producers: Vec<RemoteProducer>,
    ) -> Result<usize, ApiError> {
        let lk = self.find_link(channel_id, peer)?;
        let mut stale: Vec<ProducerKey> = self.links[lk]
            .streams
            .iter()
            .filter(|(stream, _)| !producers.iter().any(|p| p.stream == **stream))
            .map(|(_, &pk)| pk)
            .collect();
        stale.sort_unstable();
        let mut changed = stale.len();
        for pk in stale {
            self.close_remote(pk, None);
        }
        for p in producers {
            match self.links[lk].streams.get(&p.stream).copied() {
                Some(pk) if self.producers[pk].paused != p.paused => {
                    self.pause_producer(pk, p.paused);
                    changed += 1;
                }
                Some(_) => {}
                None => {
                    let id = p.producer_id.clone();
                    match self.add_remote_producer(channel_id, peer, p) {
                        Ok(()) => changed += 1,
                        Err(e) => {
                            tracing::debug!(channel = %channel_id, peer = %peer, producer = %id, "resync: remote producer not added: {}", e.message)
                        }
                    }
                }
            }
        }
        Ok(changed)
    }

    /// The remote producer `producer_id` that came over the link of `channel_id` to `peer`.
    fn remote_producer(
        &self,
        channel_id: &str,
        peer: &str,
        producer_id: &str,
    ) -> Result<ProducerKey, ApiError> {
        let lk = self.find_link(channel_id, peer)?;
        let pk = self.room_producer(channel_id, producer_id)?;
        if self.producers[pk].origin != Origin::Remote(lk) {
            return Err(ApiError::not_found(format!(
                "producer {producer_id:?} is not node {peer:?}'s"
            )));
        }
        Ok(pk)
    }

    /// Closes a remote producer of `peer`: `producerClosed`, and with a `reason` (its user
    /// left) `participantLeft {reason}` unless the user is a participant here.
    pub fn remove_remote_producer(
        &mut self,
        channel_id: &str,
        peer: &str,
        producer_id: &str,
        reason: Option<&str>,
    ) -> Result<(), ApiError> {
        let pk = self.remote_producer(channel_id, peer, producer_id)?;
        self.close_remote(pk, reason);
        Ok(())
    }

    /// A remote producer of `peer` was paused or resumed on its node: `producerPaused` /
    /// `producerResumed`, and its packets are not forwarded while paused (its node does not
    /// relay them either).
    pub fn set_remote_paused(
        &mut self,
        channel_id: &str,
        peer: &str,
        producer_id: &str,
        paused: bool,
    ) -> Result<(), ApiError> {
        let pk = self.remote_producer(channel_id, peer, producer_id)?;
        self.pause_producer(pk, paused);
        Ok(())
    }

    /// A participant of node `peer` left (one without a producer, or whose producers are
    /// closed with it): its remote producers close and `participantLeft {reason}` goes to the
    /// room, unless the user is a participant here.
    pub fn remote_participant_left(
        &mut self,
        channel_id: &str,
        peer: &str,
        user_id: &str,
        reason: &str,
    ) -> Result<(), ApiError> {
        let lk = self.find_link(channel_id, peer)?;
        let mut pks: Vec<ProducerKey> = self.links[lk]
            .streams
            .values()
            .copied()
            .filter(|&pk| self.producers[pk].user_id == user_id)
            .collect();
        pks.sort_unstable();
        for pk in pks {
            self.close_producer(pk);
        }
        self.remote_left(channel_id, user_id, reason);
        Ok(())
    }

    pub(super) fn close_remote(&mut self, pk: ProducerKey, reason: Option<&str>) {
        let Some(p) = self.close_producer(pk) else {
            return;
        };
        if let Some(reason) = reason {
            let still = self.rooms.get(&p.channel_id).is_some_and(|r| {
                r.remote
                    .iter()
                    .any(|&k| self.producers[k].user_id == p.user_id)
            });
            if !still {
                self.remote_left(&p.channel_id, &p.user_id, reason);
            }
        }
    }

    /// `participantLeft` for a remote user, unless it is a participant here.
    fn remote_left(&mut self, channel_id: &str, user_id: &str, reason: &str) {
        let Some(room) = self.rooms.get(channel_id) else {
            return;
        };
        if room.participants.contains_key(user_id) {
            return;
        }
        self.events.push(RoomEvent {
            channel_id: channel_id.to_string(),
            audience: Audience::Others(user_id.to_string()),
            event: Event::ParticipantLeft {
                user_id: user_id.to_string(),
                reason: reason.to_string(),
            },
        });
    }
}

fn announcement(p: &Producer) -> RemoteProducer {
    RemoteProducer {
        stream: p.stream,
        producer_id: p.id.clone(),
        user_id: p.user_id.clone(),
        rtp_parameters: p.parameters.clone(),
        paused: p.paused,
    }
}
