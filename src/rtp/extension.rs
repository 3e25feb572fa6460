//! RFC 8285 header extensions: element walking, id mapping and in-place rewriting.
//!
//! The one-byte form (§4.2, profile 0xBEDE) has a 4-bit id (1..=14) and a 4-bit length minus
//! one; id 15 ends processing of the block. The two-byte form (§4.3, profile 0x100X) has an
//! 8-bit id (1..=255) and an 8-bit length. In both, a zero id byte is a single padding byte.

use super::RtpError;

/// Profile word of the one-byte form (RFC 8285 §4.2).
pub const PROFILE_ONE_BYTE: u16 = 0xBEDE;
/// Profile word of the two-byte form (RFC 8285 §4.3); the low 4 bits are "appbits".
pub const PROFILE_TWO_BYTE: u16 = 0x1000;

/// Highest id the one-byte form can carry (15 is reserved, RFC 8285 §4.2).
const MAX_ONE_BYTE_ID: u8 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    OneByte,
    TwoByte,
}

impl Form {
    fn of(profile: u16) -> Option<Self> {
        if profile == PROFILE_ONE_BYTE {
            Some(Self::OneByte)
        } else if profile & 0xfff0 == PROFILE_TWO_BYTE {
            Some(Self::TwoByte)
        } else {
            None
        }
    }
}

/// Position of one element inside its block.
#[derive(Debug, Clone, Copy)]
struct Element {
    id: u8,
    /// Offset of the element's first header byte.
    start: usize,
    /// Offset of its data.
    data: usize,
    /// Offset one past its data.
    end: usize,
}

/// Finds the element at or after `pos` (padding skipped); `Ok(None)` at the end of the block
/// or at a one-byte id 15, after which nothing may be interpreted (RFC 8285 §4.2).
fn next_element(block: &[u8], mut pos: usize, form: Form) -> Result<Option<Element>, RtpError> {
    loop {
        let Some(&first) = block.get(pos) else {
            return Ok(None);
        };
        let id = match form {
            Form::OneByte => first >> 4,
            Form::TwoByte => first,
        };
        if id == 0 {
            pos += 1;
            continue;
        }
        let (data, len) = match form {
            Form::OneByte if id > MAX_ONE_BYTE_ID => return Ok(None),
            Form::OneByte => (pos + 1, usize::from(first & 0x0f) + 1),
            Form::TwoByte => {
                let len = block.get(pos + 1).ok_or(RtpError::BadExtensionElement)?;
                (pos + 2, usize::from(*len))
            }
        };
        let end = data + len;
        if end > block.len() {
            return Err(RtpError::BadExtensionElement);
        }
        return Ok(Some(Element {
            id,
            start: pos,
            data,
            end,
        }));
    }
}

/// Checks that every element of an RFC 8285 block lies within it. Other profiles are opaque.
pub(super) fn validate(profile: u16, block: &[u8]) -> Result<(), RtpError> {
    let Some(form) = Form::of(profile) else {
        return Ok(());
    };
    let mut pos = 0;
    while let Some(element) = next_element(block, pos, form)? {
        pos = element.end;
    }
    Ok(())
}

/// Iterator over the RFC 8285 elements of a block as `(id, data)`; see
/// [`RtpHeader::extensions`](super::RtpHeader::extensions). Stops at the first malformed
/// element.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    block: &'a [u8],
    form: Option<Form>,
    pos: usize,
}

impl<'a> Extensions<'a> {
    pub(super) fn new(profile: u16, block: Option<&'a [u8]>) -> Self {
        Self {
            block: block.unwrap_or_default(),
            form: block.and_then(|_| Form::of(profile)),
            pos: 0,
        }
    }
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let form = self.form?;
        match next_element(self.block, self.pos, form) {
            Ok(Some(element)) => {
                self.pos = element.end;
                Some((element.id, self.block.get(element.data..element.end)?))
            }
            Ok(None) | Err(_) => {
                self.form = None;
                None
            }
        }
    }
}

/// Number of ids above 14 (two-byte form only) an [`ExtensionMap`] can hold.
pub const EXTENSION_MAP_HIGH_CAPACITY: usize = 16;

/// Maps producer-side extension ids to consumer-side ids; 0 means drop.
///
/// Ids 1..=14 (all a one-byte block can carry, and in practice all that get negotiated) are a
/// direct table; ids 15..=255, which only the two-byte form (RFC 8285 §4.3) can carry, are a
/// short list of up to [`EXTENSION_MAP_HIGH_CAPACITY`] pairs. The whole map is 48 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionMap {
    /// `low[id]` for ids 1..=14; `low[0]` is unused and stays 0.
    low: [u8; 15],
    high_len: u8,
    high: [(u8, u8); EXTENSION_MAP_HIGH_CAPACITY],
}

impl Default for ExtensionMap {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtensionMap {
    /// A map that drops every extension.
    pub fn new() -> Self {
        Self {
            low: [0; 15],
            high_len: 0,
            high: [(0, 0); EXTENSION_MAP_HIGH_CAPACITY],
        }
    }

    /// Maps producer id `from` to consumer id `to` (0 drops `from`). `from == 0` is ignored.
    /// A new id above 14 beyond [`EXTENSION_MAP_HIGH_CAPACITY`] is ignored (stays dropped);
    /// [`try_set`](Self::try_set) reports that.
    pub fn set(&mut self, from: u8, to: u8) {
        self.try_set(from, to);
    }

    /// As [`set`](Self::set); returns false when the mapping could not be stored.
    pub fn try_set(&mut self, from: u8, to: u8) -> bool {
        if from == 0 {
            return false;
        }
        if let Some(slot) = self.low.get_mut(usize::from(from)) {
            *slot = to;
            return true;
        }
        let len = usize::from(self.high_len);
        let (used, free) = self.high.split_at_mut(len.min(EXTENSION_MAP_HIGH_CAPACITY));
        if let Some(index) = used.iter().position(|&(id, _)| id == from) {
            if to == 0 {
                // Keep the list dense: move the last pair into the hole.
                used.swap(index, len - 1);
                self.high_len -= 1;
            } else if let Some(pair) = used.get_mut(index) {
                pair.1 = to;
            }
            return true;
        }
        if to == 0 {
            return true;
        }
        match free.first_mut() {
            Some(pair) => {
                *pair = (from, to);
                self.high_len += 1;
                true
            }
            None => false,
        }
    }

    /// The consumer id for producer id `from`; 0 when it is dropped.
    #[inline]
    pub fn get(&self, from: u8) -> u8 {
        match self.low.get(usize::from(from)) {
            Some(&to) => to,
            None => self
                .high
                .iter()
                .take(usize::from(self.high_len))
                .find(|&&(id, _)| id == from)
                .map_or(0, |&(_, to)| to),
        }
    }
}

/// Rewrites the extension block `packet[start..end]` (profile word at `start - 4`) in place.
pub(super) fn rewrite(
    packet: &mut [u8],
    profile: u16,
    start: usize,
    end: usize,
    map: &ExtensionMap,
) -> Result<(), RtpError> {
    let Some(form) = Form::of(profile) else {
        // Opaque RFC 3550 extension: it cannot have been negotiated, so blank it out as an
        // all-padding one-byte block of the same length.
        let profile_word = start
            .checked_sub(4)
            .and_then(|at| packet.get_mut(at..at + 2))
            .ok_or(RtpError::HeaderMismatch)?;
        profile_word.copy_from_slice(&PROFILE_ONE_BYTE.to_be_bytes());
        packet
            .get_mut(start..end)
            .ok_or(RtpError::HeaderMismatch)?
            .fill(0);
        return Ok(());
    };
    let block = packet.get_mut(start..end).ok_or(RtpError::HeaderMismatch)?;

    let mut read = 0;
    let mut write = 0;
    while let Some(element) = next_element(block, read, form)? {
        read = element.end;
        let to = map.get(element.id);
        if to == 0 || (form == Form::OneByte && to > MAX_ONE_BYTE_ID) {
            continue;
        }
        if write != element.start {
            block.copy_within(element.start..element.end, write);
        }
        if let Some(id_byte) = block.get_mut(write) {
            *id_byte = match form {
                Form::OneByte => (to << 4) | (*id_byte & 0x0f),
                Form::TwoByte => to,
            };
        }
        write += element.end - element.start;
    }
    if let Some(tail) = block.get_mut(write..) {
        tail.fill(0);
    }
    Ok(())
}
