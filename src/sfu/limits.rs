//! What a shard reports about its transports' states, the room limits it enforces (see
//! `crate::control::limits` for the whole set), and which limit refused a request.

use serde::Serialize;

use super::api::ApiError;
use super::Sfu;

/// Which limit refused a request (the `limit` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    RequestRate,
    EventStreams,
    Rooms,
    RoomParticipants,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::RequestRate,
        Limit::EventStreams,
        Limit::Rooms,
        Limit::RoomParticipants,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Limit::RequestRate => "request_rate",
            Limit::EventStreams => "event_streams",
            Limit::Rooms => "rooms",
            Limit::RoomParticipants => "room_participants",
        }
    }

    /// The refusal: 429 for a client's own excess, 503 when the server is full.
    pub fn refuse(self, message: impl Into<String>) -> ApiError {
        let status = match self {
            Limit::RequestRate | Limit::EventStreams => 429,
            Limit::Rooms | Limit::RoomParticipants => 503,
        };
        let mut e = ApiError::new(status, message);
        e.limit = Some(self);
        e
    }
}

/// Transports by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransportStates {
    /// No valid ICE check yet.
    pub new: u64,
    /// ICE answered, DTLS not finished.
    pub connecting: u64,
    /// DTLS done, SRTP keys in place.
    pub connected: u64,
}

/// Room limits of one shard (0 means no limit), and how its rooms detect speaking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomLimits {
    /// This shard's share of the process's room limit.
    pub max_rooms: u32,
    pub max_room_participants: u32,
    /// The join deadline (see `super::deadline`); zero: none.
    pub join_timeout: std::time::Duration,
    pub speaking: super::SpeakingSettings,
}

impl Sfu {
    pub fn set_limits(&mut self, limits: RoomLimits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> RoomLimits {
        self.limits
    }

    pub fn transport_states(&self) -> TransportStates {
        let mut states = TransportStates::default();
        for (_, t) in self.transports.iter() {
            if t.is_connected() {
                states.connected += 1;
            } else if t.selected().is_some() {
                states.connecting += 1;
            } else {
                states.new += 1;
            }
        }
        states
    }
}
