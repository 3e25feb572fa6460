//! The voice API's operations on a shard's rooms (what each route does to media state).

use std::time::Instant;

use super::transport::{Io, Transport, TransportParams};
use super::Limit;
use super::{
    new_id, random_u32, Consumer, Egress, Origin, Participant, Producer, Room, Sfu, TransportKey,
};
use crate::sfu::api::{
    ApiError, Audience, ConnectTransportRequest, ConsumeRequest, ConsumerOptions, Counts,
    CreateTransportRequest, Direction, Event, ParticipantRequest, ProduceRequest, ProducerInfo,
    ProducerRequest, RoomEvent, TransportOptions,
};
use crate::sfu::ortc;
use crate::wire::rtp::{ExtensionMap, SequenceMapper};

impl Sfu {
    /// `GET /rtp-capabilities/:channelId`: creates the room if absent.
    pub fn open_room(&mut self, channel_id: &str) {
        let _ = self.try_open_room(channel_id);
    }

    /// [`Sfu::open_room`], refused when the shard holds its limit of rooms.
    pub fn try_open_room(&mut self, channel_id: &str) -> Result<(), ApiError> {
        let max = self.limits.max_rooms;
        if max > 0 && !self.rooms.contains_key(channel_id) && self.rooms.len() >= max as usize {
            tracing::warn!(channel = %channel_id, max, "room refused: room limit reached");
            return Err(Limit::Rooms.refuse("room limit reached: try again later"));
        }
        if !self.rooms.contains_key(channel_id) {
            tracing::info!(channel = %channel_id, "room created");
            self.rooms.insert(channel_id.to_string(), Room::default());
        }
        Ok(())
    }

    pub(super) fn room(&self, channel_id: &str) -> Result<&Room, ApiError> {
        self.rooms
            .get(channel_id)
            .ok_or_else(|| ApiError::not_found(format!("room {channel_id:?} not found")))
    }

    fn participant(&self, channel_id: &str, user_id: &str) -> Result<&Participant, ApiError> {
        self.room(channel_id)?
            .participants
            .get(user_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("user {user_id:?} is not in room {channel_id:?}"))
            })
    }

    fn participant_mut(
        &mut self,
        channel_id: &str,
        user_id: &str,
    ) -> Result<&mut Participant, ApiError> {
        self.participant(channel_id, user_id)?;
        Ok(self
            .rooms
            .get_mut(channel_id)
            .and_then(|r| r.participants.get_mut(user_id))
            .expect("checked above"))
    }

    /// Checks that `create-transport` can succeed, before the shell binds a socket for it.
    pub fn check_create_transport(&self, req: &CreateTransportRequest) -> Result<(), ApiError> {
        let room = self.room(&req.channel_id)?;
        let max = self.limits.max_room_participants;
        if max > 0
            && !room.participants.contains_key(&req.user_id)
            && room.participants.len() >= max as usize
        {
            tracing::warn!(channel = %req.channel_id, user = %req.user_id, max, "participant refused: room is full");
            return Err(Limit::RoomParticipants.refuse(format!(
                "room {:?} is full ({max} participants)",
                req.channel_id
            )));
        }
        if let Some(p) = room.participants.get(&req.user_id) {
            let slot = match req.direction {
                Direction::Send => p.send,
                Direction::Recv => p.recv,
            };
            if slot.is_some() {
                return Err(ApiError::conflict(format!(
                    "user {:?} already has a {} transport",
                    req.user_id,
                    req.direction.as_str()
                )));
            }
        }
        Ok(())
    }

    /// `create-transport`, on a socket the shell bound at `local_port`.
    pub fn create_transport(
        &mut self,
        req: &CreateTransportRequest,
        local_port: u16,
        now: Instant,
    ) -> Result<(TransportKey, TransportOptions), ApiError> {
        self.check_create_transport(req)?;
        let transport = Transport::new(
            TransportParams {
                channel_id: req.channel_id.clone(),
                user_id: req.user_id.clone(),
                direction: req.direction,
                port: local_port,
            },
            &self.settings,
            now,
        );
        let options = transport.options(&self.settings);
        let ufrag = transport.ufrag().to_string();
        let key = self.transports.insert(transport);
        self.ufrags.insert(ufrag, key);
        let room = self.rooms.get_mut(&req.channel_id).expect("checked");
        room.vacated = false;
        let participant = room.participants.entry(req.user_id.clone()).or_insert_with(|| {
            tracing::info!(channel = %req.channel_id, user = %req.user_id, "participant joined");
            Participant::default()
        });
        participant.touched = Some(now);
        match req.direction {
            Direction::Send => participant.send = Some(key),
            Direction::Recv => participant.recv = Some(key),
        }
        tracing::debug!(channel = %req.channel_id, user = %req.user_id, transport = %options.id, port = local_port, "transport created");
        Ok((key, options))
    }

    fn own_transport(
        &self,
        channel_id: &str,
        user_id: &str,
        transport_id: &str,
    ) -> Result<TransportKey, ApiError> {
        let p = self.participant(channel_id, user_id)?;
        [p.send, p.recv]
            .into_iter()
            .flatten()
            .find(|&k| self.transports[k].id == transport_id)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "transport {transport_id:?} of user {user_id:?} not found"
                ))
            })
    }

    /// `connect-transport`: the peer's DTLS role and certificate fingerprints.
    pub fn connect_transport(
        &mut self,
        req: &ConnectTransportRequest,
        now: Instant,
        out: &mut impl Egress,
    ) -> Result<(), ApiError> {
        let key = self.own_transport(&req.channel_id, &req.user_id, &req.transport_id)?;
        if req.dtls_parameters.fingerprints.is_empty() {
            return Err(ApiError::bad_request(
                "dtlsParameters.fingerprints must not be empty",
            ));
        }
        let mut io = Io {
            now,
            settings: &self.settings,
            scratch: &mut self.scratch[..],
            out,
            counters: &mut self.counters,
        };
        let failed = self.transports[key].connect(&req.dtls_parameters, &mut io)?;
        if let Some(reason) = failed {
            self.transport_failed(key, reason);
        }
        Ok(())
    }

    /// `produce`: one audio producer per participant, on its send transport.
    pub fn produce(&mut self, req: &ProduceRequest) -> Result<String, ApiError> {
        let p = self.participant(&req.channel_id, &req.user_id)?;
        let Some(transport) = p.send else {
            return Err(ApiError::conflict(format!(
                "user {:?} has no send transport",
                req.user_id
            )));
        };
        if p.producer.is_some() {
            return Err(ApiError::conflict(format!(
                "user {:?} already produces audio",
                req.user_id
            )));
        }
        let rtp = ortc::validate_producer(&req.kind, &req.rtp_parameters)
            .map_err(ApiError::bad_request)?;
        if let Some(ssrc) = rtp.ssrc {
            let taken = self
                .producers
                .iter()
                .any(|(_, p)| p.origin == Origin::Local(transport) && p.ssrc == Some(ssrc));
            if taken {
                return Err(ApiError::conflict(format!(
                    "ssrc {ssrc} is already produced on this transport"
                )));
            }
        }
        let id = new_id();
        let speaker = super::speaking::Speaker::new(&rtp, &self.limits.speaking);
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(1);
        let producer = Producer {
            id: id.clone(),
            channel_id: req.channel_id.clone(),
            user_id: req.user_id.clone(),
            origin: Origin::Local(transport),
            stream,
            parameters: req.rtp_parameters.clone(),
            ssrc: rtp.ssrc,
            gaps: rtp.nack.then(Box::default),
            red: Default::default(),
            rtp,
            paused: req.paused,
            stats: None,
            consumers: Vec::new(),
            speaker,
            history: None,
        };
        let key = self.producers.insert(producer);
        self.producer_ids.insert(id.clone(), key);
        self.transports[transport].producers.push(key);
        self.participant_mut(&req.channel_id, &req.user_id)?
            .producer = Some(key);
        tracing::info!(channel = %req.channel_id, user = %req.user_id, producer = %id, "producer created");
        self.events.push(RoomEvent {
            channel_id: req.channel_id.clone(),
            audience: Audience::Others(req.user_id.clone()),
            event: Event::NewProducer {
                user_id: req.user_id.clone(),
                producer_id: id.clone(),
                kind: "audio".into(),
                node: None,
                region: None,
            },
        });
        Ok(id)
    }

    pub(super) fn room_producer(
        &self,
        channel_id: &str,
        producer_id: &str,
    ) -> Result<usize, ApiError> {
        self.producer_ids
            .get(producer_id)
            .copied()
            .filter(|&k| self.producers[k].channel_id == channel_id)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "producer {producer_id:?} not found in room {channel_id:?}"
                ))
            })
    }

    /// `consume`: a consumer of `producer_id` on the participant's recv transport.
    pub fn consume(
        &mut self,
        req: &ConsumeRequest,
        now: Instant,
    ) -> Result<ConsumerOptions, ApiError> {
        let p = self.participant(&req.channel_id, &req.user_id)?;
        let Some(transport) = p.recv else {
            return Err(ApiError::conflict(format!(
                "user {:?} has no recv transport",
                req.user_id
            )));
        };
        let pk = self.room_producer(&req.channel_id, &req.producer_id)?;
        let producer = &self.producers[pk];
        if producer
            .consumers
            .iter()
            .any(|&c| self.consumers[c].transport == transport)
        {
            return Err(ApiError::conflict(format!(
                "user {:?} already consumes producer {:?}",
                req.user_id, req.producer_id
            )));
        }
        let t = &self.transports[transport];
        let ssrc = loop {
            let s = random_u32();
            if s != 0 && !t.consumers.iter().any(|&c| self.consumers[c].ssrc == s) {
                break s;
            }
        };
        let mid = t.next_mid.to_string();
        let negotiated = ortc::consumer_parameters(&producer.rtp, &req.rtp_capabilities, ssrc, mid)
            .map_err(ApiError::conflict)?;
        let mut extensions = ExtensionMap::new();
        for &(from, to) in &producer.rtp.extensions {
            if negotiated.extension_ids.contains(&to) {
                extensions.set(from, to);
            }
        }
        let id = new_id();
        let consumer = Consumer {
            producer: pk,
            transport,
            ssrc,
            cname: producer.rtp.cname.clone(),
            extensions,
            sequence: SequenceMapper::new(ortc::OPUS_CLOCK_RATE),
            packets: 0,
            octets: 0,
            last_sent_at: None,
            // The transport's first consumer is in the browser's SDP before DTLS can connect;
            // later ones may not be yet when their first packets arrive.
            hold_until: (t.next_mid > 0).then(|| now + self.settings.consumer_hold),
            nack: negotiated.nack,
            red: negotiated.red,
            budget: Default::default(),
            reported_loss: Default::default(),
        };
        let ck = self.consumers.insert(consumer);
        let producer = &mut self.producers[pk];
        producer.consumers.push(ck);
        if (negotiated.nack || negotiated.red) && producer.history.is_none() {
            producer.history = Some(Box::default());
        }
        let t = &mut self.transports[transport];
        t.consumers.push(ck);
        t.next_mid += 1;
        tracing::debug!(channel = %req.channel_id, user = %req.user_id, consumer = %id, producer = %req.producer_id, "consumer created");
        Ok(ConsumerOptions {
            id,
            producer_id: req.producer_id.clone(),
            kind: "audio".into(),
            rtp_parameters: negotiated.parameters,
        })
    }

    /// `producers`: the other participants' producers.
    pub fn list_producers(
        &self,
        channel_id: &str,
        user_id: &str,
    ) -> Result<Vec<ProducerInfo>, ApiError> {
        let room = self.room(channel_id)?;
        self.participant(channel_id, user_id)?;
        // Remote participants' producers are listed like local ones.
        let mut list: Vec<ProducerInfo> = room
            .participants
            .values()
            .filter_map(|p| p.producer)
            .chain(room.remote.iter().copied())
            .map(|k| &self.producers[k])
            .filter(|p| p.user_id != user_id)
            .map(|p| {
                let link = match p.origin {
                    super::Origin::Remote(lk) => self.links.get(lk),
                    _ => None,
                };
                ProducerInfo {
                    user_id: p.user_id.clone(),
                    producer_id: p.id.clone(),
                    kind: "audio".into(),
                    speaking: p.speaker.is_speaking(),
                    paused: p.paused,
                    node: link.map(|l| l.peer.clone()),
                    region: link.map(|l| l.peer_region.clone()),
                }
            })
            .collect();
        list.sort_by(|a, b| {
            (a.user_id.as_str(), a.producer_id.as_str())
                .cmp(&(b.user_id.as_str(), b.producer_id.as_str()))
        });
        Ok(list)
    }

    /// `pause-producer` / `resume-producer` (mute): a paused producer's packets are not
    /// forwarded; on resume every consumer's sequence continues without a gap.
    pub fn set_producer_paused(
        &mut self,
        req: &ProducerRequest,
        paused: bool,
    ) -> Result<(), ApiError> {
        let pk = self.room_producer(&req.channel_id, &req.producer_id)?;
        let p = &self.producers[pk];
        // A remote producer is paused by its own node (see `cascade`), never through this API.
        if p.user_id != req.user_id || !matches!(p.origin, Origin::Local(_)) {
            return Err(ApiError::not_found(format!(
                "producer {:?} is not user {:?}'s",
                req.producer_id, req.user_id
            )));
        }
        self.pause_producer(pk, paused);
        Ok(())
    }

    /// Pauses or resumes producer `pk` (local or remote) and tells the room.
    pub(super) fn pause_producer(&mut self, pk: usize, paused: bool) {
        if self.producers[pk].paused == paused {
            return;
        }
        if paused {
            // speakingChanged false goes before producerPaused.
            self.stop_speaking(pk);
        }
        let p = &mut self.producers[pk];
        p.paused = paused;
        if !paused {
            for &ck in &p.consumers {
                self.consumers[ck].sequence.resync();
            }
        }
        let (user_id, producer_id) = (p.user_id.clone(), p.id.clone());
        let event = if paused {
            Event::ProducerPaused {
                user_id: user_id.clone(),
                producer_id,
            }
        } else {
            Event::ProducerResumed {
                user_id: user_id.clone(),
                producer_id,
            }
        };
        self.events.push(RoomEvent {
            channel_id: p.channel_id.clone(),
            audience: Audience::Others(user_id),
            event,
        });
    }

    /// `leave`: closes the participant's transports, producer and consumers.
    pub fn leave(&mut self, req: &ParticipantRequest) -> Result<(), ApiError> {
        self.participant(&req.channel_id, &req.user_id)?;
        self.remove_participant(&req.channel_id, &req.user_id, "left");
        Ok(())
    }

    /// Removes a participant and everything it owns; removes the room when it empties.
    pub(super) fn remove_participant(&mut self, channel_id: &str, user_id: &str, reason: &str) {
        let Some(room) = self.rooms.get_mut(channel_id) else {
            return;
        };
        let Some(p) = room.participants.remove(user_id) else {
            return;
        };
        // A room with cascade links stays until the control plane removes them.
        let empty = room.participants.is_empty() && room.links.is_empty();
        for key in [p.send, p.recv].into_iter().flatten() {
            self.close_transport(key);
        }
        tracing::info!(channel = %channel_id, user = %user_id, reason, "participant left");
        if empty {
            self.rooms.remove(channel_id);
            tracing::info!(channel = %channel_id, "room closed");
        } else {
            if let Some(room) = self.rooms.get_mut(channel_id) {
                room.vacated = room.participants.is_empty();
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

    /// Closes a transport with its producers and consumers; the participant keeps its place.
    pub(super) fn close_transport(&mut self, key: TransportKey) {
        let Some(t) = self.transports.try_remove(key) else {
            return;
        };
        self.ufrags.remove(t.ufrag());
        for path in t.validated() {
            if self.routes.get(path) == Some(&key) {
                self.routes.remove(path);
            }
        }
        for pk in t.producers {
            self.close_producer(pk);
        }
        for ck in t.consumers {
            let Some(c) = self.consumers.try_remove(ck) else {
                continue;
            };
            if let Some(p) = self.producers.get_mut(c.producer) {
                p.consumers.retain(|&k| k != ck);
            }
        }
        if let Some(part) = self
            .rooms
            .get_mut(&t.channel_id)
            .and_then(|r| r.participants.get_mut(&t.user_id))
        {
            if part.send == Some(key) {
                part.send = None;
            }
            if part.recv == Some(key) {
                part.recv = None;
            }
        }
        self.closed.push((key, t.port));
    }

    /// Closes producer `pk` (local or remote) with its consumers; `producerClosed` to the room.
    /// Returns it, or `None` if it was closed already.
    pub(super) fn close_producer(&mut self, pk: usize) -> Option<Producer> {
        self.stop_speaking(pk);
        let p = self.producers.try_remove(pk)?;
        self.producer_ids.remove(&p.id);
        for &ck in &p.consumers {
            let Some(c) = self.consumers.try_remove(ck) else {
                continue;
            };
            if let Some(ct) = self.transports.get_mut(c.transport) {
                ct.consumers.retain(|&k| k != ck);
            }
        }
        if let Some(room) = self.rooms.get_mut(&p.channel_id) {
            room.dominant.forget(pk);
            match p.origin {
                Origin::Local(_) => {
                    if let Some(part) = room.participants.get_mut(&p.user_id) {
                        part.producer = None;
                    }
                }
                Origin::Remote(link) => {
                    room.remote.retain(|&k| k != pk);
                    if let Some(l) = self.links.get_mut(link) {
                        l.streams.remove(&p.stream);
                    }
                    self.counters.remote_producers =
                        self.counters.remote_producers.saturating_sub(1);
                }
            }
        }
        self.events.push(RoomEvent {
            channel_id: p.channel_id.clone(),
            audience: Audience::Others(p.user_id.clone()),
            event: Event::ProducerClosed {
                user_id: p.user_id.clone(),
                producer_id: p.id.clone(),
            },
        });
        Some(p)
    }

    /// Closes everything (shutdown).
    pub fn close_all(&mut self) {
        let links: Vec<(String, String)> = self
            .links
            .iter()
            .map(|(_, l)| (l.channel_id.clone(), l.peer.clone()))
            .collect();
        for (channel_id, peer) in links {
            let _ = self.remove_link(&channel_id, &peer, None);
        }
        let rooms: Vec<(String, Vec<String>)> = self
            .rooms
            .iter()
            .map(|(c, r)| (c.clone(), r.participants.keys().cloned().collect()))
            .collect();
        for (channel_id, users) in rooms {
            for user_id in users {
                self.remove_participant(&channel_id, &user_id, "shutdown");
            }
        }
    }

    /// Each room's channelId and participant count.
    pub fn room_list(&self) -> Vec<(String, u64)> {
        self.rooms
            .iter()
            .map(|(c, r)| (c.clone(), r.participants.len() as u64))
            .collect()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            rooms: self.rooms.len() as u64,
            participants: self
                .rooms
                .values()
                .map(|r| r.participants.len() as u64)
                .sum(),
            transports: self.transports.len() as u64,
            producers: self.producers.len() as u64,
            consumers: self.consumers.len() as u64,
            bound_ports: 0,
        }
    }
}
