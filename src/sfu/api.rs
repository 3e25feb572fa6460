//! The voice API's messages (`shared/voice-api.md`): request bodies, replies, push events and
//! errors. The control server parses JSON into these types; the owning shard acts on them.

use serde::{Deserialize, Serialize};

use crate::sfu::ortc::{RtpCapabilities, RtpParameters};

/// An API error: `{"error": message}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// The limit that refused the request, if one did (counted by the control server).
    pub limit: Option<super::Limit>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            limit: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Send,
    Recv,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransportRequest {
    pub channel_id: String,
    pub user_id: String,
    pub direction: Direction,
}

#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub algorithm: String,
    pub value: String,
}

#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    Auto,
    Client,
    Server,
}

#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DtlsParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DtlsRole>,
    pub fingerprints: Vec<Fingerprint>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ConnectTransportRequest {
    pub channel_id: String,
    pub user_id: String,
    pub transport_id: String,
    pub dtls_parameters: DtlsParameters,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ProduceRequest {
    pub channel_id: String,
    pub user_id: String,
    pub kind: String,
    pub rtp_parameters: RtpParameters,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeRequest {
    pub channel_id: String,
    pub user_id: String,
    pub producer_id: String,
    pub rtp_capabilities: RtpCapabilities,
}

/// Body of `leave`.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRequest {
    pub channel_id: String,
    pub user_id: String,
}

/// Body of `pause-producer` / `resume-producer`.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ProducerRequest {
    pub channel_id: String,
    pub user_id: String,
    pub producer_id: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    pub username_fragment: String,
    pub password: String,
    pub ice_lite: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub foundation: String,
    pub priority: u32,
    pub ip: String,
    pub address: String,
    pub protocol: String,
    pub port: u16,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_type: Option<String>,
}

/// Reply of `create-transport` (mediasoup-client's TransportOptions).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransportOptions {
    pub id: String,
    pub ice_parameters: IceParameters,
    pub ice_candidates: Vec<IceCandidate>,
    pub dtls_parameters: TransportDtlsParameters,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransportDtlsParameters {
    pub role: DtlsRole,
    pub fingerprints: Vec<Fingerprint>,
}

/// Reply of `consume`.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerOptions {
    pub id: String,
    pub producer_id: String,
    pub kind: String,
    pub rtp_parameters: RtpParameters,
}

/// An entry of `producers`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProducerInfo {
    pub user_id: String,
    pub producer_id: String,
    pub kind: String,
    /// Speaking now (see the README's speaking indicators), for a late joiner.
    pub speaking: bool,
    pub paused: bool,
    /// A remote participant's node and region (cascade, see the README's *Regions*); absent
    /// for participants of this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Counts reported by `health` (summed over shards).
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub rooms: u64,
    pub participants: u64,
    pub transports: u64,
    pub producers: u64,
    pub consumers: u64,
    pub bound_ports: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.rooms += o.rooms;
        self.participants += o.participants;
        self.transports += o.transports;
        self.producers += o.producers;
        self.consumers += o.consumers;
        self.bound_ports += o.bound_ports;
    }
}

/// A push event for the participants of a room (Server-Sent Events, `GET /events/:channelId/:userId`).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    NewProducer {
        user_id: String,
        producer_id: String,
        kind: String,
        /// As [`ProducerInfo::node`] and [`ProducerInfo::region`].
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    ProducerClosed {
        user_id: String,
        producer_id: String,
    },
    #[serde(rename_all = "camelCase")]
    ProducerPaused {
        user_id: String,
        producer_id: String,
    },
    #[serde(rename_all = "camelCase")]
    ProducerResumed {
        user_id: String,
        producer_id: String,
    },
    #[serde(rename_all = "camelCase")]
    ParticipantLeft { user_id: String, reason: String },
    /// Sent only to the transport's owner.
    #[serde(rename_all = "camelCase")]
    TransportClosed {
        transport_id: String,
        reason: String,
    },
    /// A producer started or stopped speaking (to everyone, the speaker included). `volume`:
    /// the window's mean level in dBov (−127..=0).
    #[serde(rename_all = "camelCase")]
    SpeakingChanged {
        user_id: String,
        producer_id: String,
        speaking: bool,
        volume: i8,
    },
    /// The room's dominant speaker changed (to everyone).
    #[serde(rename_all = "camelCase")]
    DominantSpeaker {
        user_id: String,
        producer_id: String,
    },
    /// The audible producers' levels, loudest first; only to streams opened with `?levels=1`.
    AudioLevels { levels: Vec<LevelEntry> },
}

/// An entry of `audioLevels`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LevelEntry {
    pub user_id: String,
    /// dBov, −127..=0.
    pub volume: i8,
}

impl Event {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::NewProducer { .. } => "newProducer",
            Event::ProducerClosed { .. } => "producerClosed",
            Event::ProducerPaused { .. } => "producerPaused",
            Event::ProducerResumed { .. } => "producerResumed",
            Event::ParticipantLeft { .. } => "participantLeft",
            Event::TransportClosed { .. } => "transportClosed",
            Event::SpeakingChanged { .. } => "speakingChanged",
            Event::DominantSpeaker { .. } => "dominantSpeaker",
            Event::AudioLevels { .. } => "audioLevels",
        }
    }
}

/// Who in a room an event is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Everyone in the room but this user (the one the event is about).
    Others(String),
    /// Only this user.
    Only(String),
    /// Everyone in the room.
    All,
}

/// An event leaving a shard for the control server's subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEvent {
    pub channel_id: String,
    pub audience: Audience,
    pub event: Event,
}
