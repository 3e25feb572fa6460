//! Packet index tracking and replay protection, RFC 3711 §3.3.1, §3.3.2 and Appendix A.
//!
//! One [`ReplayWindow`] per SSRC and per protocol holds the highest packet index seen so far
//! and a bitmap of the [`WINDOW`] indices just below it. For SRTP the highest index also
//! carries the rollover counter (`index = ROC * 2^16 + SEQ`), so the same structure answers
//! both "which ROC does this sequence number belong to" and "has this index been seen".
//! For SRTCP the index travels in the packet and only the replay part is used.
//!
//! The window is only advanced by [`ReplayWindow::accept`], which the session calls after a
//! packet authenticated; a forged packet can therefore neither move the ROC nor mark an index
//! as seen.

use super::SrtpError;

/// Replay window size in packets (RFC 3711 §3.3.2 asks for at least 64).
pub(crate) const WINDOW: u64 = 128;

/// The largest SRTP packet index: 32-bit ROC, 16-bit SEQ (RFC 3711 §3.3.1).
pub(crate) const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;

/// The largest SRTCP index (31 bits, RFC 3711 §3.4).
pub(crate) const MAX_SRTCP_INDEX: u64 = (1 << 31) - 1;

/// Highest accepted index and the replay bitmap below it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    /// Highest index accepted so far; meaningless until `started`.
    highest: u64,
    /// Bit `n` set: index `highest - n` was accepted.
    seen: u128,
    started: bool,
}

impl ReplayWindow {
    /// Estimates the SRTP packet index of sequence number `seq` (RFC 3711 Appendix A).
    ///
    /// The estimate is the index ending in `seq` closest to the highest index seen, which is
    /// what Appendix A's three-way choice of `ROC - 1`, `ROC` or `ROC + 1` amounts to. The
    /// first packet of a stream gets `ROC = 0` (RFC 3711 §3.3.1).
    pub(crate) fn estimate_srtp_index(&self, seq: u16) -> Result<u64, SrtpError> {
        if !self.started {
            return Ok(u64::from(seq));
        }
        // Distance from the highest SEQ, folded into -32768..=32767.
        let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        let index = (self.highest as i64).checked_add(delta).unwrap_or(-1);
        if index < 0 {
            // It would belong to ROC -1: older than the stream itself.
            return Err(SrtpError::TooOld);
        }
        let index = index as u64;
        if index > MAX_SRTP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        Ok(index)
    }

    /// The SRTCP index to send next: 0 for the first packet, then one more each time
    /// (RFC 3711 §3.4). The index space is never wrapped; the keys must be renewed first
    /// (RFC 3711 §9.2).
    pub(crate) fn next_srtcp_index(&self) -> Result<u64, SrtpError> {
        if !self.started {
            return Ok(0);
        }
        match self.highest.checked_add(1) {
            Some(index) if index <= MAX_SRTCP_INDEX => Ok(index),
            _ => Err(SrtpError::IndexExhausted),
        }
    }

    /// Replay check (RFC 3711 §3.3.2): new, or inside the window and not yet seen.
    pub(crate) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.highest {
            return Ok(());
        }
        let age = self.highest - index;
        if age >= WINDOW {
            Err(SrtpError::TooOld)
        } else if self.seen & (1u128 << age) != 0 {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `index` as received; call only after the packet authenticated and passed
    /// [`check`](Self::check).
    pub(crate) fn accept(&mut self, index: u64) {
        if !self.started {
            self.started = true;
            self.highest = index;
            self.seen = 1;
        } else if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            let age = self.highest - index;
            if age < WINDOW {
                self.seen |= 1u128 << age;
            }
        }
    }

    /// The rollover counter of the highest index, if any packet was accepted.
    pub(crate) fn roc(&self) -> Option<u32> {
        self.started.then_some((self.highest >> 16) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_at(index: u64) -> ReplayWindow {
        let mut w = ReplayWindow::default();
        w.accept(index);
        w
    }

    #[test]
    fn first_packet_uses_roc_zero() {
        let w = ReplayWindow::default();
        assert_eq!(w.estimate_srtp_index(65535), Ok(65535));
        assert_eq!(w.roc(), None);
    }

    #[test]
    fn index_estimation_across_the_wrap() {
        // Highest SEQ 65530 with ROC 0: SEQ 3 is the next ROC.
        let w = window_at(65530);
        assert_eq!(w.estimate_srtp_index(3), Ok(65536 + 3));
        assert_eq!(w.estimate_srtp_index(65000), Ok(65000));
        // Highest SEQ 2 with ROC 1: a late 65534 still belongs to ROC 0.
        let w = window_at(65536 + 2);
        assert_eq!(w.estimate_srtp_index(65534), Ok(65534));
        assert_eq!(w.estimate_srtp_index(100), Ok(65536 + 100));
        assert_eq!(w.roc(), Some(1));
    }

    #[test]
    fn index_before_roc_zero_is_too_old() {
        let w = window_at(5);
        assert_eq!(w.estimate_srtp_index(65534), Err(SrtpError::TooOld));
    }

    #[test]
    fn index_past_the_48_bit_space_is_refused() {
        let w = window_at(MAX_SRTP_INDEX);
        assert_eq!(w.estimate_srtp_index(0), Err(SrtpError::IndexExhausted));
        assert_eq!(
            w.estimate_srtp_index(MAX_SRTP_INDEX as u16),
            Ok(MAX_SRTP_INDEX)
        );
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(1000), Ok(()));
        w.accept(1000);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed));
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(SrtpError::Replayed));
        assert_eq!(w.check(1000 - WINDOW + 1), Ok(()));
        assert_eq!(w.check(1000 - WINDOW), Err(SrtpError::TooOld));
        w.accept(1010);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed));
        assert_eq!(w.check(999), Err(SrtpError::Replayed));
        assert_eq!(w.check(1005), Ok(()));
        // A jump past the window forgets everything below it.
        w.accept(1010 + 500);
        assert_eq!(w.check(1010), Err(SrtpError::TooOld));
        assert_eq!(w.check(1509), Ok(()));
    }

    #[test]
    fn srtcp_index_sequence() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.next_srtcp_index(), Ok(0));
        w.accept(0);
        assert_eq!(w.next_srtcp_index(), Ok(1));
        let w = window_at(MAX_SRTCP_INDEX);
        assert_eq!(w.next_srtcp_index(), Err(SrtpError::IndexExhausted));
    }
}
