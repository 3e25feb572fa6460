//! The join deadline: state nobody uses does not linger.
//!
//! - A **participant with no connected transport** (DTLS done) for the join timeout after its
//!   last successful API call is removed like a `leave`: transports closed, ports released,
//!   `participantLeft {reason: "join timeout"}` pushed to the others, counted in
//!   `joinTimeouts`. "No connected transport", not "a transport not connected":
//!   mediasoup-client connects a recv transport only with its first consumer, so a participant
//!   whose send transport carries its microphone stays however long its recv transport waits.
//! - A **room without participants** (created by `rtp-capabilities` and never joined, or whose
//!   joins were all refused) is removed once it has been empty for the join timeout after its
//!   last API call, counted in `roomsExpired`. (A room whose last participant leaves is removed
//!   at once.)
//!
//! The control shell calls [`Sfu::touch`] after every successful command; the timer tick
//! scans every [`CHECK_EVERY`], so removals happen within that much after their deadline.

use std::time::{Duration, Instant};

use super::Sfu;

/// How often the deadlines are checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The reason in `participantLeft` events.
pub const REASON: &str = "join timeout";

impl Sfu {
    /// A successful API call for `channel_id` (and `user_id`, when it names one) at `now`:
    /// restarts their join deadlines.
    pub fn touch(&mut self, channel_id: &str, user_id: Option<&str>, now: Instant) {
        let Some(room) = self.rooms.get_mut(channel_id) else {
            return;
        };
        room.touched = Some(now);
        if let Some(p) = user_id.and_then(|u| room.participants.get_mut(u)) {
            p.touched = Some(now);
        }
    }

    /// The next instant the deadlines are checked (`None` when the join timeout is off).
    pub(super) fn next_join_check(&self) -> Option<Instant> {
        if self.limits.join_timeout.is_zero() {
            return None;
        }
        self.next_join_check
    }

    /// Removes participants and rooms past their join deadline (timer tick).
    pub(super) fn expire_joins(&mut self, now: Instant) {
        let timeout = self.limits.join_timeout;
        if timeout.is_zero() {
            return;
        }
        if self.next_join_check.is_some_and(|at| at > now) {
            return;
        }
        self.next_join_check = Some(now + CHECK_EVERY);
        let expired = |touched: &mut Option<Instant>| {
            // Not touched yet (created without a shell call, e.g. in-memory tests): from now.
            let at = *touched.get_or_insert(now);
            now.saturating_duration_since(at) >= timeout
        };
        let mut participants = Vec::new();
        let mut rooms = Vec::new();
        for (channel_id, room) in self.rooms.iter_mut() {
            if room.participants.is_empty() {
                // A room with cascade links lives until the control plane removes them.
                if room.links.is_empty() && expired(&mut room.touched) {
                    rooms.push(channel_id.clone());
                }
                continue;
            }
            for (user_id, p) in room.participants.iter_mut() {
                let connected = [p.send, p.recv]
                    .into_iter()
                    .flatten()
                    .any(|k| self.transports.get(k).is_some_and(|t| t.is_connected()));
                if connected {
                    // The deadline runs again from now if its transports go away.
                    p.touched = Some(now);
                } else if expired(&mut p.touched) {
                    participants.push((channel_id.clone(), user_id.clone()));
                }
            }
        }
        for (channel_id, user_id) in participants {
            tracing::info!(channel = %channel_id, user = %user_id, timeout = ?timeout, "participant removed: no connected transport within the join timeout");
            self.counters.join_timeouts += 1;
            self.remove_participant(&channel_id, &user_id, REASON);
        }
        for channel_id in rooms {
            tracing::info!(channel = %channel_id, timeout = ?timeout, "room removed: nobody joined within the join timeout");
            self.counters.rooms_expired += 1;
            self.rooms.remove(&channel_id);
        }
    }

    /// Closes a transport whose `create-transport` caller went away before the reply, and its
    /// participant when that call made it (it holds nothing else): as if it never joined.
    pub fn abandon_transport(&mut self, channel_id: &str, user_id: &str, transport_id: &str) {
        let Some(p) = self
            .rooms
            .get(channel_id)
            .and_then(|r| r.participants.get(user_id))
        else {
            return;
        };
        let key = [p.send, p.recv]
            .into_iter()
            .flatten()
            .find(|&k| self.transports.get(k).is_some_and(|t| t.id == transport_id));
        let Some(key) = key else {
            return;
        };
        self.close_transport(key);
        let empty = self
            .rooms
            .get(channel_id)
            .and_then(|r| r.participants.get(user_id))
            .is_some_and(|p| p.send.is_none() && p.recv.is_none() && p.producer.is_none());
        if empty {
            self.remove_participant(channel_id, user_id, "left");
        }
    }
}
