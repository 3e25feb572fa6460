//! A room's dominant speaker: one producer, changed only when a challenger clearly dominates.
//!
//! A simpler rule than Volfin & Cohen's (immediate, medium and long scores, as in Jitsi and
//! mediasoup's ActiveSpeakerObserver) with the property that matters: two speakers alternating
//! at equal levels do not make it flap, and a short interjection does not take it. Each
//! producer has an *activity*: its share of loud time per window, averaged exponentially with a
//! time constant of [`TIME_CONSTANT`]. After each window:
//!
//! - no dominant speaker yet (or its producer closed): the speaking producer with the highest
//!   activity becomes dominant at once, so a room of one has its speaker as dominant as soon
//!   as it speaks;
//! - the dominant speaker is not speaking (it stopped for the hang time, or is paused): the
//!   most active speaking producer takes over once its activity is above the dominant's;
//! - the dominant speaker is speaking: a speaking challenger takes over only when its
//!   activity has led the dominant's by [`MARGIN`] for [`CHALLENGE`] in a row.
//!
//! Otherwise the dominant speaker stays, through silence too: it is the last one who clearly
//! held the floor. Equal speakers alternating in turns shorter than the hang time both stay
//! "speaking" and their activities differ by less than the margin (about 0.15 for 400 ms
//! turns), so nothing changes; turns longer than that are real turn-taking and are followed,
//! each switch once the new speaker's activity overtakes the old one's.

use std::time::Duration;

use super::ProducerKey;

/// Time constant of the activity average.
pub(super) const TIME_CONSTANT: Duration = Duration::from_millis(1500);
/// How far a challenger's activity must lead a speaking dominant speaker's.
const MARGIN: f32 = 0.25;
/// How long that lead must hold.
const CHALLENGE: Duration = Duration::from_millis(400);

/// One producer as the dominant-speaker rule sees it after a window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub key: ProducerKey,
    pub speaking: bool,
    pub activity: f32,
}

#[derive(Debug, Default)]
pub(super) struct Dominant {
    current: Option<ProducerKey>,
    /// A challenger leading a speaking dominant speaker by the margin, and for how long.
    challenger: Option<(ProducerKey, Duration)>,
}

impl Dominant {
    /// The producer closed: it is no longer dominant nor challenging.
    pub(super) fn forget(&mut self, key: ProducerKey) {
        if self.current == Some(key) {
            self.current = None;
        }
        if self.challenger.is_some_and(|(k, _)| k == key) {
            self.challenger = None;
        }
    }

    /// Applies the rule after a window of `elapsed`; returns the new dominant speaker when it
    /// changed.
    pub(super) fn update(
        &mut self,
        candidates: impl Iterator<Item = Candidate>,
        elapsed: Duration,
    ) -> Option<ProducerKey> {
        let mut dominant = None;
        let mut best: Option<Candidate> = None;
        for c in candidates {
            if Some(c.key) == self.current {
                dominant = Some(c);
            } else if c.speaking
                && best.is_none_or(|b| {
                    c.activity > b.activity || (c.activity == b.activity && c.key < b.key)
                })
            {
                best = Some(c);
            }
        }
        let Some(best) = best else {
            self.challenger = None;
            return None;
        };
        let take = match dominant {
            None => true,
            Some(d) if !d.speaking => best.activity > d.activity,
            Some(d) if best.activity >= d.activity + MARGIN => {
                let held = match self.challenger {
                    Some((key, held)) if key == best.key => held + elapsed,
                    _ => elapsed,
                };
                self.challenger = Some((best.key, held));
                held >= CHALLENGE
            }
            Some(_) => {
                self.challenger = None;
                false
            }
        };
        if !take {
            return None;
        }
        self.current = Some(best.key);
        self.challenger = None;
        Some(best.key)
    }
}
