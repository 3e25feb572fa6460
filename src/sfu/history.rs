//! A producer's recent packets, kept to answer its listeners' NACKs (RFC 4585 §6.2.1) with the
//! packet itself, on the consumer's own SSRC (audio has no RTX stream).
//!
//! One history per producer, shared by all its consumers: it holds the decrypted packet as it
//! arrived, before any consumer's rewrite; a retransmission rewrites it again for the consumer
//! that asked (`crate::sfu::nack`), and RED takes the frames before a packet from it
//! (`crate::sfu::red`). Fixed memory (18 KiB), made once when the producer gets its first
//! consumer that negotiated NACK or RED: [`SLOTS`] slots indexed by sequence number modulo
//! [`SLOTS`], and a byte ring of [`ARENA`] bytes the packets are copied into. Storing and
//! looking up never allocate. A packet is kept for at most [`MAX_AGE`], as long as its slot and
//! its bytes are not taken by newer packets: at 20 ms per packet 64 slots are 1.28 s; 16 KiB
//! hold 1 s of Opus up to ≈ 100 kbit/s (Chromium sends 32 kbit/s voice: ≈ 6 KiB/s with
//! headers).

use std::time::{Duration, Instant};

/// Slots, one per sequence number modulo this.
pub const SLOTS: usize = 64;
/// Bytes of packet data kept.
pub const ARENA: usize = 16 * 1024;
/// Older packets are not retransmitted: a listener's jitter buffer has played out (or
/// concealed) them long before (libwebrtc asks for a packet only while its age plus the round
/// trip is under 1 s).
pub const MAX_AGE: Duration = Duration::from_millis(1000);

/// Why a packet cannot be retransmitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Older than [`MAX_AGE`] or than what the history still holds.
    TooOld,
    /// Never arrived from the producer (lost on the speaker's own leg), or not yet.
    NotReceived,
}

impl Miss {
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::TooOld => "too_old",
            Miss::NotReceived => "not_received",
        }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    seq: u16,
    /// Absolute offset of the packet's first byte in the stream of bytes ever written.
    start: u64,
    len: u16,
    at: Instant,
}

/// The recent packets of one producer stream, by (incoming) sequence number.
pub struct PacketHistory {
    slots: [Option<Slot>; SLOTS],
    arena: Box<[u8; ARENA]>,
    /// Bytes ever written, including the tails skipped to keep a packet contiguous.
    written: u64,
    /// Highest sequence number stored.
    highest: Option<u16>,
}

impl PacketHistory {
    pub fn new() -> Self {
        PacketHistory {
            slots: [None; SLOTS],
            arena: Box::new([0; ARENA]),
            written: 0,
            highest: None,
        }
    }

    /// Keeps `packet` (a whole RTP packet, decrypted) under sequence number `seq`. A late packet
    /// whose slot already holds a newer one is not kept; nor is one longer than the arena.
    pub fn store(&mut self, seq: u16, packet: &[u8], now: Instant) {
        let Ok(len) = u16::try_from(packet.len()) else {
            return;
        };
        if packet.len() > ARENA {
            return;
        }
        let i = usize::from(seq) % SLOTS;
        if let Some(old) = &self.slots[i] {
            if newer(old.seq, seq) {
                return;
            }
        }
        let mut at = (self.written % ARENA as u64) as usize;
        if at + packet.len() > ARENA {
            // Skip the tail: a packet is one contiguous range.
            self.written += (ARENA - at) as u64;
            at = 0;
        }
        self.arena[at..at + packet.len()].copy_from_slice(packet);
        self.slots[i] = Some(Slot {
            seq,
            start: self.written,
            len,
            at: now,
        });
        self.written += u64::from(len);
        if self.highest.is_none_or(|h| newer(seq, h)) {
            self.highest = Some(seq);
        }
    }

    /// The packet with sequence number `seq`, if it is still held and younger than
    /// [`MAX_AGE`].
    pub fn get(&self, seq: u16, now: Instant) -> Result<&[u8], Miss> {
        let highest = self.highest.ok_or(Miss::NotReceived)?;
        if newer(seq, highest) {
            return Err(Miss::NotReceived);
        }
        if usize::from(highest.wrapping_sub(seq)) >= SLOTS {
            return Err(Miss::TooOld);
        }
        let slot = match self.slots[usize::from(seq) % SLOTS] {
            Some(slot) if slot.seq == seq => slot,
            // The slot holds an older packet (or none): this one never arrived. (A newer one
            // cannot be there: `seq` is within SLOTS of the highest.)
            _ => return Err(Miss::NotReceived),
        };
        if now.saturating_duration_since(slot.at) > MAX_AGE
            || self.written - slot.start > ARENA as u64
        {
            return Err(Miss::TooOld);
        }
        let at = (slot.start % ARENA as u64) as usize;
        Ok(&self.arena[at..at + usize::from(slot.len)])
    }
}

impl Default for PacketHistory {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether sequence number `a` comes after `b` (RFC 3550 serial arithmetic, half the space).
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![(seq % 251) as u8; len];
        p[0] = 0x80;
        p
    }

    #[test]
    fn keeps_the_last_packets_by_sequence_number() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new();
        assert_eq!(h.get(5, t0), Err(Miss::NotReceived));
        for seq in 0..100u16 {
            h.store(seq, &packet(seq, 120), t0);
        }
        for seq in 36..100u16 {
            assert_eq!(h.get(seq, t0).unwrap(), &packet(seq, 120)[..], "{seq}");
        }
        assert_eq!(h.get(35, t0), Err(Miss::TooOld), "beyond the slots");
        assert_eq!(h.get(100, t0), Err(Miss::NotReceived), "not yet");
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new();
        for i in 0..40u16 {
            let seq = 65_520u16.wrapping_add(i);
            h.store(seq, &packet(seq, 90), t0);
        }
        assert_eq!(h.get(65_530, t0).unwrap(), &packet(65_530, 90)[..]);
        assert_eq!(h.get(3, t0).unwrap(), &packet(3, 90)[..]);
        assert_eq!(h.get(24, t0), Err(Miss::NotReceived));
        assert_eq!(h.get(65_000, t0), Err(Miss::TooOld));
    }

    #[test]
    fn a_gap_is_not_received_and_a_late_packet_fills_it() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new();
        for seq in [10u16, 11, 13, 14] {
            h.store(seq, &packet(seq, 60), t0);
        }
        assert_eq!(h.get(12, t0), Err(Miss::NotReceived));
        h.store(12, &packet(12, 60), t0);
        assert_eq!(h.get(12, t0).unwrap(), &packet(12, 60)[..]);
        // A very late packet does not displace the newer one in its slot.
        for seq in 15..80u16 {
            h.store(seq, &packet(seq, 60), t0);
        }
        h.store(12, &packet(12, 60), t0);
        assert_eq!(h.get(76, t0).unwrap(), &packet(76, 60)[..]);
        assert_eq!(h.get(12, t0), Err(Miss::TooOld));
    }

    #[test]
    fn packets_expire_after_max_age() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new();
        h.store(1, &packet(1, 60), t0);
        h.store(2, &packet(2, 60), t0 + Duration::from_millis(500));
        let later = t0 + MAX_AGE + Duration::from_millis(1);
        assert_eq!(h.get(1, later), Err(Miss::TooOld));
        assert!(h.get(2, later).is_ok());
    }

    #[test]
    fn a_history_takes_under_nineteen_kib() {
        let size = std::mem::size_of::<PacketHistory>() + ARENA;
        eprintln!("history: {size} bytes per producer");
        assert!(size < 19 * 1024, "{size}");
    }

    #[test]
    fn the_arena_bounds_the_bytes_held() {
        let t0 = Instant::now();
        let mut h = PacketHistory::new();
        // 1,200-byte packets: 13 fit in 16 KiB (the tail is skipped at each wrap).
        for seq in 0..50u16 {
            h.store(seq, &packet(seq, 1200), t0);
        }
        for seq in 37..50u16 {
            assert_eq!(h.get(seq, t0).unwrap(), &packet(seq, 1200)[..], "{seq}");
        }
        assert_eq!(
            h.get(36, t0),
            Err(Miss::TooOld),
            "its bytes were overwritten"
        );
        // Mixed sizes: whatever is returned is intact.
        for seq in 50..400u16 {
            h.store(seq, &packet(seq, 40 + usize::from(seq * 37 % 1400)), t0);
        }
        for seq in 336..400u16 {
            if let Ok(p) = h.get(seq, t0) {
                assert_eq!(p, &packet(seq, 40 + usize::from(seq * 37 % 1400))[..]);
            }
        }
        assert!(h.get(399, t0).is_ok());
    }
}
