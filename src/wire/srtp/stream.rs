//! Per-SSRC state of a session: the SSRC-specific part of the cryptographic context
//! (RFC 3711 §3.2.1: rollover counter, highest sequence number and replay list for SRTP,
//! SRTCP index and replay list for SRTCP).
//!
//! A voice transport carries a handful of SSRCs, so the table is a pair of small vectors
//! scanned linearly: the SSRCs alone are contiguous, so a lookup over a few dozen streams
//! touches one or two cache lines. Memory is reserved at construction; a vector only grows
//! when a new stream appears, never per packet.

use super::replay::ReplayWindow;
use super::SrtpError;

/// The most streams one session tracks (RFC 3711 leaves this to the implementation).
pub const MAX_STREAMS: usize = 1024;

/// Streams reserved up front.
const INITIAL_CAPACITY: usize = 8;

/// SRTP and SRTCP state of one SSRC.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stream {
    pub(crate) rtp: ReplayWindow,
    pub(crate) rtcp: ReplayWindow,
}

/// SSRC → [`Stream`] table, capped at [`MAX_STREAMS`].
#[derive(Debug)]
pub(crate) struct Streams {
    ssrcs: Vec<u32>,
    states: Vec<Stream>,
}

impl Streams {
    pub(crate) fn new() -> Self {
        Self {
            ssrcs: Vec::with_capacity(INITIAL_CAPACITY),
            states: Vec::with_capacity(INITIAL_CAPACITY),
        }
    }

    /// The state of `ssrc`, if the stream exists.
    pub(crate) fn get(&self, ssrc: u32) -> Option<&Stream> {
        let slot = self.ssrcs.iter().position(|&s| s == ssrc)?;
        self.states.get(slot)
    }

    /// The state of `ssrc`, created empty on first use.
    pub(crate) fn get_or_insert(&mut self, ssrc: u32) -> Result<&mut Stream, SrtpError> {
        let slot = match self.ssrcs.iter().position(|&s| s == ssrc) {
            Some(slot) => slot,
            None => {
                self.ensure_room(ssrc)?;
                self.ssrcs.push(ssrc);
                self.states.push(Stream::default());
                self.states.len() - 1
            }
        };
        self.states.get_mut(slot).ok_or(SrtpError::TooManyStreams)
    }

    /// Fails with [`SrtpError::TooManyStreams`] if `ssrc` is new and the table is full.
    pub(crate) fn ensure_room(&self, ssrc: u32) -> Result<(), SrtpError> {
        if self.ssrcs.len() >= MAX_STREAMS && !self.ssrcs.contains(&ssrc) {
            Err(SrtpError::TooManyStreams)
        } else {
            Ok(())
        }
    }

    /// Forgets `ssrc`; returns whether it was known.
    pub(crate) fn remove(&mut self, ssrc: u32) -> bool {
        match self.ssrcs.iter().position(|&s| s == ssrc) {
            Some(slot) => {
                self.ssrcs.swap_remove(slot);
                self.states.swap_remove(slot);
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ssrcs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_remove_and_cap() {
        let mut streams = Streams::new();
        for ssrc in 0..MAX_STREAMS as u32 {
            streams
                .get_or_insert(ssrc)
                .unwrap()
                .rtp
                .accept(u64::from(ssrc));
        }
        assert_eq!(streams.len(), MAX_STREAMS);
        assert_eq!(
            streams.get_or_insert(u32::MAX).err(),
            Some(SrtpError::TooManyStreams)
        );
        assert_eq!(streams.ensure_room(7), Ok(()));
        assert_eq!(streams.get(7).unwrap().rtp.roc(), Some(0));
        assert!(streams.remove(7));
        assert!(!streams.remove(7));
        assert!(streams.get(7).is_none());
        assert_eq!(
            streams.get(MAX_STREAMS as u32 - 1).unwrap().rtp.check(1023),
            Err(SrtpError::Replayed)
        );
        assert!(streams.get_or_insert(u32::MAX).is_ok());
    }
}
