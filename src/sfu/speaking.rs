//! Speaking indicators: per producer audio levels from the RFC 6464 header extension, the
//! speaking state decided once per window on the shard's timer, and the room's events.
//!
//! **On the media path** ([`Speaker::on_packet`], a few additions per packet, no allocation)
//! each packet's level is weighed by the media time it covers: the RTP timestamp advance since
//! the previous packet, capped at the packet's own length (its Opus TOC). So lost packets and
//! DTX gaps (the browser sends one packet per 400 ms of silence) count as silence, a reordered
//! or repeated packet adds no time, and a talk spurt's first packet after a gap counts only its
//! own 20 ms. The V flag is ignored: browsers set it from the encoder, not a voice detector.
//!
//! **On the timer** ([`Sfu::speaking_timeout`], every [`SpeakingSettings::interval`]) each
//! producer's window is judged: loud when at least `ratio` of the window's wall-clock time was
//! above the threshold. A loud window starts speaking at once; speaking stops after `hang`
//! (rounded up to whole windows) without one, or after [`STALE`] without any packet, and at once
//! when the producer is paused or closed. Then the room's dominant speaker is updated
//! ([`super::dominant`]) and, when some level moved by [`LEVEL_STEP_DB`] or more, an
//! `audioLevels` event lists the room's audible producers, loudest first.

use std::time::{Duration, Instant};

use serde::Serialize;
use slab::Slab;

use super::{Counters, Producer, ProducerKey, Room, Sfu};
use crate::sfu::api::{Audience, Event, LevelEntry, RoomEvent};
use crate::sfu::ortc::{self, ProducerRtp};
use crate::wire::rtp::{self, audio_level::SILENCE, RtpHeader};

/// Speaking detection settings (`CHOIR_SPEAKING_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpeakingSettings {
    /// The window: how often speaking states are decided. Zero turns detection off.
    #[serde(rename = "intervalMs", serialize_with = "millis")]
    pub interval: Duration,
    /// A packet is loud at or above this level (dBov, −127..=0).
    #[serde(rename = "thresholdDbov")]
    pub threshold_dbov: i8,
    /// Share of a window (in thousandths) that must be loud to start speaking.
    #[serde(rename = "ratio", serialize_with = "permille")]
    pub ratio_permille: u16,
    /// Speaking stops after this long without a loud window.
    #[serde(rename = "hangMs", serialize_with = "millis")]
    pub hang: Duration,
}

impl Default for SpeakingSettings {
    fn default() -> Self {
        SpeakingSettings {
            interval: Duration::from_millis(200),
            threshold_dbov: -40,
            ratio_permille: 400,
            hang: Duration::from_millis(600),
        }
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn permille<S: serde::Serializer>(p: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(f64::from(*p) / 1000.0)
}

impl SpeakingSettings {
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    /// Quiet windows after which speaking stops: the hang time in whole windows (at least 1).
    fn hang_windows(&self) -> u32 {
        windows(self.hang, self.interval)
    }
}

/// Windows (at least 1) covering `d`.
fn windows(d: Duration, interval: Duration) -> u32 {
    let n = d.as_nanos().div_ceil(interval.as_nanos().max(1));
    n.clamp(1, u128::from(u32::MAX)) as u32
}

/// Speaking stops after this long without any packet from the producer (a stream that
/// stopped; a DTX stream still sends a packet every 400 ms of silence).
pub const STALE: Duration = Duration::from_secs(1);
/// `audioLevels` is sent when a producer's volume moved by this much (dB) since the last one.
pub const LEVEL_STEP_DB: i16 = 3;
/// Ticks of the RTP clock per millisecond (Opus: 48 kHz).
const TICKS_PER_MS: u64 = (ortc::OPUS_CLOCK_RATE / 1000) as u64;
/// A timestamp this far behind the last one is a new timeline (the sender restarted), not a
/// reordered packet.
const MAX_REORDER_TICKS: i32 = 48_000;

/// `POWER[l]`: the power of level −l dBov relative to full scale, 10^(−l/10).
static POWER: [f32; 128] = {
    let mut table = [0f32; 128];
    let mut p = 1.0f64;
    let mut l = 0;
    while l < 128 {
        table[l] = p as f32;
        p *= 0.794_328_234_724_281_5; // 10^(−1/10)
        l += 1;
    }
    table
};

/// What one window accumulated.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    /// RTP ticks above the threshold.
    loud: u32,
    /// RTP ticks with a level.
    heard: u32,
    /// Σ power × ticks (power relative to full scale, 10^(dBov/10)).
    energy: f32,
    /// Packets (with or without a level).
    packets: u32,
}

/// One producer's level tracking and speaking state.
#[derive(Debug, Default)]
pub(super) struct Speaker {
    /// The browser's id of the audio level extension; 0 when not negotiated or detection is off.
    ext_id: u8,
    /// Loud means a level (−dBov) at or below this.
    loud_level: u8,
    last_timestamp: Option<u32>,
    window: Window,
    speaking: bool,
    /// Windows in a row without a loud one / without any packet.
    quiet_windows: u32,
    idle_windows: u32,
    /// The last window's mean level (dBov).
    volume: i8,
    /// The volume the last `audioLevels` of the room carried for this producer.
    reported: Option<i8>,
    /// Exponentially smoothed share of loud time (0..=1), for the dominant speaker.
    activity: f32,
}

impl Speaker {
    pub(super) fn new(rtp: &ProducerRtp, settings: &SpeakingSettings) -> Self {
        let router_id = ortc::ROUTER_EXTENSIONS
            .iter()
            .find(|(uri, _)| *uri == ortc::EXT_AUDIO_LEVEL)
            .map(|&(_, id)| id);
        let ext_id = rtp
            .extensions
            .iter()
            .find(|&&(_, to)| Some(to) == router_id)
            .map_or(0, |&(from, _)| from);
        Speaker {
            ext_id: if settings.enabled() { ext_id } else { 0 },
            loud_level: settings.threshold_dbov.unsigned_abs().min(SILENCE),
            volume: -(SILENCE as i8),
            ..Speaker::default()
        }
    }

    pub(super) fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Accounts one received packet (the media path; nothing allocates).
    #[inline]
    pub(super) fn on_packet(&mut self, header: &RtpHeader, packet: &[u8], counters: &mut Counters) {
        if self.ext_id == 0 {
            return;
        }
        self.window.packets = self.window.packets.saturating_add(1);
        let level = match rtp::audio_level(header, packet, self.ext_id) {
            Some(Ok(level)) => level,
            Some(Err(_)) => return counters.drop("audio_level", "wrong_length"),
            None => return,
        };
        let own = rtp::opus_ticks(header.payload(packet).unwrap_or_default());
        let ticks = match self.last_timestamp {
            Some(last) => {
                let delta = header.timestamp.wrapping_sub(last) as i32;
                if delta <= 0 && delta > -MAX_REORDER_TICKS {
                    // Reordered or repeated media time: already counted.
                    return;
                }
                if delta > 0 {
                    own.min(delta as u32)
                } else {
                    own
                }
            }
            None => own,
        };
        self.last_timestamp = Some(header.timestamp);
        let w = &mut self.window;
        w.heard = w.heard.saturating_add(ticks);
        w.energy += POWER[usize::from(level)] * ticks as f32;
        if level <= self.loud_level {
            w.loud = w.loud.saturating_add(ticks);
        }
    }

    /// Judges the window that just ended (`window_ticks` of wall-clock time in RTP ticks);
    /// returns the new speaking state when it changed.
    fn decide(
        &mut self,
        window_ticks: u32,
        settings: &SpeakingSettings,
        alpha: f32,
    ) -> Option<bool> {
        let w = std::mem::take(&mut self.window);
        let window_ticks = window_ticks.max(1);
        // The window's level: its mean power over the time heard, in dBov.
        self.volume = match w.heard {
            0 => -(SILENCE as i8),
            heard => (10.0 * (w.energy / heard as f32).log10())
                .round()
                .clamp(-f32::from(SILENCE), 0.0) as i8,
        };
        let share = (w.loud as f32 / window_ticks as f32).min(1.0);
        self.activity += alpha * (share - self.activity);
        self.idle_windows = if w.packets == 0 {
            self.idle_windows.saturating_add(1)
        } else {
            0
        };
        let loud = u64::from(w.loud) * 1000
            >= u64::from(window_ticks) * u64::from(settings.ratio_permille);
        if loud {
            self.quiet_windows = 0;
            if !self.speaking {
                self.speaking = true;
                return Some(true);
            }
            return None;
        }
        self.quiet_windows = self.quiet_windows.saturating_add(1);
        let stale = self.idle_windows >= windows(STALE, settings.interval);
        if self.speaking && (self.quiet_windows >= settings.hang_windows() || stale) {
            self.speaking = false;
            return Some(false);
        }
        None
    }

    /// Forgets everything heard (pause, resume): returns whether it was speaking.
    fn reset(&mut self) -> bool {
        let was = self.speaking;
        *self = Speaker {
            ext_id: self.ext_id,
            loud_level: self.loud_level,
            volume: -(SILENCE as i8),
            reported: self.reported,
            ..Speaker::default()
        };
        was
    }

    /// The volume `audioLevels` lists for this producer, `None` when left out (paused or silent).
    fn listed_volume(&self, paused: bool) -> Option<i8> {
        (!paused && self.volume > -(SILENCE as i8)).then_some(self.volume)
    }
}

/// The window timer of a shard.
#[derive(Debug, Default)]
pub(super) struct SpeakingClock {
    /// When the current window started and when it is due.
    window: Option<(Instant, Instant)>,
}

impl Sfu {
    /// When the speaking timer is due next.
    pub(super) fn speaking_poll_timeout(&self) -> Option<Instant> {
        self.speaking_clock.window.map(|(_, due)| due)
    }

    /// Decides speaking states, dominant speakers and levels once per window (called from
    /// [`Sfu::handle_timeout`]).
    pub(super) fn speaking_timeout(&mut self, now: Instant) {
        let settings = self.limits.speaking;
        if !settings.enabled() {
            return;
        }
        let Some((start, due)) = self.speaking_clock.window else {
            self.speaking_clock.window = Some((now, now + settings.interval));
            return;
        };
        if now < due {
            return;
        }
        // The next window is due one interval later, or one interval from now if this call
        // was late by more than that.
        let next = if now >= due + settings.interval {
            now + settings.interval
        } else {
            due + settings.interval
        };
        self.speaking_clock.window = Some((now, next));
        let elapsed = now.saturating_duration_since(start);
        let window_ticks =
            (elapsed.as_millis() as u64 * TICKS_PER_MS).min(u64::from(u32::MAX)) as u32;
        // The activity average's time constant is DOMINANT_TIME_CONSTANT, whatever the window.
        let alpha = (elapsed.as_secs_f32() / super::dominant::TIME_CONSTANT.as_secs_f32()).min(1.0);
        for (channel_id, room) in self.rooms.iter_mut() {
            let tick = Tick {
                channel_id,
                window_ticks,
                settings: &settings,
                alpha,
                elapsed,
            };
            tick.run(
                room,
                &mut self.producers,
                &mut self.events,
                &mut self.counters,
            );
        }
    }

    /// Ends a producer's speaking at once (pause, close): `speakingChanged` false, before the
    /// event that says why.
    pub(super) fn stop_speaking(&mut self, pk: ProducerKey) {
        let Some(p) = self.producers.get_mut(pk) else {
            return;
        };
        if p.speaker.reset() {
            self.counters.speaking_stopped += 1;
            self.events.push(speaking_changed(p, false));
        }
    }
}

/// One room's share of a timer tick.
struct Tick<'a> {
    channel_id: &'a str,
    window_ticks: u32,
    settings: &'a SpeakingSettings,
    alpha: f32,
    elapsed: Duration,
}

impl Tick<'_> {
    fn run(
        &self,
        room: &mut Room,
        producers: &mut Slab<Producer>,
        events: &mut Vec<RoomEvent>,
        counters: &mut Counters,
    ) {
        let mut levels_moved = false;
        for pk in room.producers() {
            let Some(p) = producers.get_mut(pk) else {
                continue;
            };
            if let Some(on) = p
                .speaker
                .decide(self.window_ticks, self.settings, self.alpha)
            {
                if on {
                    counters.speaking_started += 1;
                } else {
                    counters.speaking_stopped += 1;
                }
                events.push(speaking_changed(p, on));
            }
            levels_moved |= moved(p.speaker.reported, p.speaker.listed_volume(p.paused));
        }
        let candidates = room
            .participants
            .values()
            .filter_map(|p| p.producer)
            .chain(room.remote.iter().copied())
            .filter_map(|pk| producers.get(pk).map(|p| (pk, p)))
            .map(|(pk, p)| super::dominant::Candidate {
                key: pk,
                speaking: p.speaker.speaking,
                activity: p.speaker.activity,
            });
        if let Some(pk) = room.dominant.update(candidates, self.elapsed) {
            if let Some(p) = producers.get(pk) {
                counters.dominant_changes += 1;
                events.push(RoomEvent {
                    channel_id: self.channel_id.to_string(),
                    audience: Audience::All,
                    event: Event::DominantSpeaker {
                        user_id: p.user_id.clone(),
                        producer_id: p.id.clone(),
                    },
                });
            }
        }
        if levels_moved {
            let mut levels = Vec::new();
            for pk in room.producers() {
                let Some(p) = producers.get_mut(pk) else {
                    continue;
                };
                let volume = p.speaker.listed_volume(p.paused);
                p.speaker.reported = volume;
                if let Some(volume) = volume {
                    levels.push(LevelEntry {
                        user_id: p.user_id.clone(),
                        volume,
                    });
                }
            }
            levels.sort_by(|a, b| {
                b.volume
                    .cmp(&a.volume)
                    .then_with(|| a.user_id.cmp(&b.user_id))
            });
            events.push(RoomEvent {
                channel_id: self.channel_id.to_string(),
                audience: Audience::All,
                event: Event::AudioLevels { levels },
            });
        }
    }
}

/// Whether a producer's listed volume moved enough since the last `audioLevels`.
fn moved(reported: Option<i8>, now: Option<i8>) -> bool {
    match (reported, now) {
        (None, None) => false,
        (Some(a), Some(b)) => (i16::from(a) - i16::from(b)).abs() >= LEVEL_STEP_DB,
        _ => true,
    }
}

fn speaking_changed(p: &Producer, speaking: bool) -> RoomEvent {
    RoomEvent {
        channel_id: p.channel_id.clone(),
        audience: Audience::All,
        event: Event::SpeakingChanged {
            user_id: p.user_id.clone(),
            producer_id: p.id.clone(),
            speaking,
            volume: p.speaker.volume,
        },
    }
}

#[cfg(test)]
#[path = "speaking_tests.rs"]
mod tests;
