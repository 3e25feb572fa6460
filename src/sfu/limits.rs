//! What a shard reports about its transports' states, and the room limits it enforces (see
//! `crate::control::limits` for the whole set).

use serde::Serialize;

use super::Sfu;

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

/// Room limits of one shard; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomLimits {
    /// This shard's share of the process's room limit.
    pub max_rooms: u32,
    pub max_room_participants: u32,
    /// The join deadline (see `super::deadline`); zero: none.
    pub join_timeout: std::time::Duration,
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
