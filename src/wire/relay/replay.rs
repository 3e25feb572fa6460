//! The relay link's anti-replay window over 64-bit sequence numbers (RFC 4303 §3.4.3, as in
//! RFC 3711 §3.3.2), [`WINDOW`] datagrams wide.
//!
//! The bitmap is a ring of 64-bit words indexed by `seq / 64` (RFC 6479): moving the window
//! forward clears the words it enters instead of shifting the whole map, so a jump costs at most
//! one pass over the ring and nothing allocates. The ring has one word more than the window
//! needs, so that a word being cleared never holds a sequence number still inside the window.
//!
//! [`check`](ReplayWindow::check) only reads; [`accept`](ReplayWindow::accept) is called after
//! the datagram authenticated, so a forged datagram can neither mark a sequence number as seen
//! nor move the window.

use super::DropReason;

/// Window width in datagrams: a datagram up to `WINDOW - 1` behind the highest one accepted is
/// still taken once (reordering on the link); one further behind is [`DropReason::TooOld`].
pub const WINDOW: u64 = 1024;

const WORD_BITS: u64 = 64;
/// `WINDOW / 64` words cover the window; one more keeps the word being cleared out of it.
const WORDS: usize = (WINDOW / WORD_BITS) as usize + 1;

/// The highest sequence number accepted and which of the [`WINDOW`] below it were.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// Highest accepted sequence number; `None` before the first.
    highest: Option<u64>,
    /// Bit `seq % 64` of word `(seq / 64) % WORDS`: `seq` was accepted.
    bits: [u64; WORDS],
}

/// Ring slot and bit mask of `seq`.
fn slot(seq: u64) -> (usize, u64) {
    (
        ((seq / WORD_BITS) % WORDS as u64) as usize,
        1u64 << (seq % WORD_BITS),
    )
}

impl ReplayWindow {
    /// The highest sequence number accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `seq` may be accepted: newer than the highest, or inside the window and not yet
    /// seen.
    pub fn check(&self, seq: u64) -> Result<(), DropReason> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if seq > highest {
            return Ok(());
        }
        if highest - seq >= WINDOW {
            return Err(DropReason::TooOld);
        }
        let (word, mask) = slot(seq);
        if self.bits[word] & mask != 0 {
            Err(DropReason::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as received. Call only after [`check`](Self::check) passed and the
    /// datagram authenticated; a `seq` too old is ignored.
    pub fn accept(&mut self, seq: u64) {
        match self.highest {
            Some(highest) if seq <= highest => {
                if highest - seq >= WINDOW {
                    return;
                }
            }
            Some(highest) => {
                // Clear the words that `seq` moves the window into: from the word after the
                // highest one's to `seq`'s own, all of them after a jump past the whole ring.
                let (from, to) = (highest / WORD_BITS, seq / WORD_BITS);
                if to - from >= WORDS as u64 {
                    self.bits = [0; WORDS];
                } else {
                    for block in from + 1..=to {
                        self.bits[(block % WORDS as u64) as usize] = 0;
                    }
                }
                self.highest = Some(seq);
            }
            None => {
                self.bits = [0; WORDS];
                self.highest = Some(seq);
            }
        }
        let (word, mask) = slot(seq);
        self.bits[word] |= mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut ReplayWindow, seq: u64) -> Result<(), DropReason> {
        w.check(seq)?;
        w.accept(seq);
        Ok(())
    }

    #[test]
    fn in_order_then_duplicates() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.highest(), None);
        for seq in 0..3000 {
            assert_eq!(take(&mut w, seq), Ok(()), "{seq}");
        }
        assert_eq!(w.highest(), Some(2999));
        for seq in 2999 - (WINDOW - 1)..=2999 {
            assert_eq!(w.check(seq), Err(DropReason::Replayed), "{seq}");
        }
        assert_eq!(w.check(2999 - WINDOW), Err(DropReason::TooOld));
        assert_eq!(w.check(0), Err(DropReason::TooOld));
        assert_eq!(w.check(3000), Ok(()));
    }

    #[test]
    fn reordering_inside_the_window_is_taken_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(take(&mut w, 5000), Ok(()));
        // Every older one still in the window, in a scrambled order, once each.
        let oldest = 5000 - (WINDOW - 1);
        let mut order: Vec<u64> = (oldest..5000).collect();
        order.reverse();
        order.swap(3, 700);
        for &seq in &order {
            assert_eq!(take(&mut w, seq), Ok(()), "{seq}");
        }
        for &seq in &order {
            assert_eq!(take(&mut w, seq), Err(DropReason::Replayed), "{seq}");
        }
        assert_eq!(w.check(oldest - 1), Err(DropReason::TooOld));
        assert_eq!(w.highest(), Some(5000));
    }

    #[test]
    fn forward_moves_forget_exactly_what_left_the_window() {
        // From every position inside a word, move forward by every distance up to past the
        // ring: what is still in the window stays seen, what left it is too old, what was
        // never seen is free.
        for start in [0u64, 63, 64, 1000, 1023, 1024, 1087] {
            for jump in (1..=WINDOW + 2 * WORD_BITS)
                .step_by(7)
                .chain([WINDOW - 1, WINDOW])
            {
                let mut w = ReplayWindow::default();
                take(&mut w, start).unwrap();
                take(&mut w, start + 1).unwrap();
                let top = start + 1 + jump;
                take(&mut w, top).unwrap();
                for old in [start, start + 1] {
                    let expected = if top - old >= WINDOW {
                        Err(DropReason::TooOld)
                    } else {
                        Err(DropReason::Replayed)
                    };
                    assert_eq!(
                        w.check(old),
                        expected,
                        "start {start} jump {jump} old {old}"
                    );
                }
                // Never-seen numbers between are free (the jump cleared stale bits).
                for between in (start + 2..top).rev().take(WINDOW as usize - 1) {
                    assert_eq!(
                        w.check(between),
                        Ok(()),
                        "start {start} jump {jump} {between}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_jump_past_the_window_clears_it() {
        let mut w = ReplayWindow::default();
        for seq in 0..WINDOW {
            take(&mut w, seq).unwrap();
        }
        let top = 10 * WINDOW + 17;
        take(&mut w, top).unwrap();
        for seq in top - (WINDOW - 1)..top {
            assert_eq!(w.check(seq), Ok(()), "{seq}");
        }
        assert_eq!(w.check(top), Err(DropReason::Replayed));
        assert_eq!(w.check(WINDOW - 1), Err(DropReason::TooOld));
    }

    #[test]
    fn the_end_of_the_sequence_space() {
        let mut w = ReplayWindow::default();
        take(&mut w, u64::MAX - 2).unwrap();
        take(&mut w, u64::MAX).unwrap();
        assert_eq!(w.check(u64::MAX), Err(DropReason::Replayed));
        assert_eq!(w.check(u64::MAX - 2), Err(DropReason::Replayed));
        assert_eq!(take(&mut w, u64::MAX - 1), Ok(()));
        assert_eq!(w.check(u64::MAX - (WINDOW - 1)), Ok(()));
        assert_eq!(w.check(u64::MAX - WINDOW), Err(DropReason::TooOld));
        assert_eq!(w.check(0), Err(DropReason::TooOld));
        // A first datagram anywhere, then the space's first number.
        let mut w = ReplayWindow::default();
        take(&mut w, 0).unwrap();
        assert_eq!(w.check(0), Err(DropReason::Replayed));
        take(&mut w, u64::MAX).unwrap();
        assert_eq!(w.check(0), Err(DropReason::TooOld));
        assert_eq!(w.check(u64::MAX - 1), Ok(()));
    }

    #[test]
    fn accept_of_a_too_old_number_changes_nothing() {
        let mut w = ReplayWindow::default();
        take(&mut w, 4 * WINDOW).unwrap();
        let before = w.clone();
        w.accept(WINDOW);
        assert_eq!(w.bits, before.bits);
        assert_eq!(w.highest(), before.highest());
    }

    #[test]
    fn the_window_fits_the_ring() {
        // The words strictly between the oldest and the newest block of a full window must
        // never share a slot with the newest block.
        assert!(WORDS as u64 * WORD_BITS >= WINDOW + WORD_BITS);
        assert_eq!(std::mem::size_of::<ReplayWindow>(), 16 + 8 * WORDS);
    }
}
