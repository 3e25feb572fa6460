//! RFC 8285 header extensions: element walking, id mapping and in-place rewriting.
//!
//! The one-byte form (§4.2, profile 0xBEDE) has a 4-bit id (1..=14) and a 4-bit length minus
//! one; id 15 ends processing of the block. The two-byte form (§4.3, profile 0x100X) has an
//! 8-bit id (1..=255) and an 8-bit length. In both, a zero id byte is a single padding byte.

use super::{ExtensionBlock, RtpError};

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

    /// The id in an element's first byte.
    fn id(self, first: u8) -> u8 {
        match self {
            Self::OneByte => first >> 4,
            Self::TwoByte => first,
        }
    }

    /// Whether a block of this form can carry consumer id `to` (0 means dropped).
    fn can_carry(self, to: u8) -> bool {
        to != 0 && (self == Self::TwoByte || to <= MAX_ONE_BYTE_ID)
    }

    /// The first byte of an element given the id `to`, keeping a one-byte length nibble.
    fn with_id(self, first: u8, to: u8) -> u8 {
        match self {
            Self::OneByte => (to << 4) | (first & 0x0f),
            Self::TwoByte => to,
        }
    }

    /// Bytes before an element's data: id and length.
    fn element_header_len(self) -> usize {
        match self {
            Self::OneByte => 1,
            Self::TwoByte => 2,
        }
    }
}

/// Position of one element inside its block.
#[derive(Debug, Clone, Copy)]
struct Element {
    id: u8,
    /// Offset of the element's first header byte.
    start: usize,
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
        let id = form.id(first);
        if id == 0 {
            pos += 1;
            continue;
        }
        let len = match form {
            Form::OneByte if id > MAX_ONE_BYTE_ID => return Ok(None),
            Form::OneByte => usize::from(first & 0x0f) + 1,
            Form::TwoByte => usize::from(*block.get(pos + 1).ok_or(RtpError::BadExtensionElement)?),
        };
        let end = pos + form.element_header_len() + len;
        if end > block.len() {
            return Err(RtpError::BadExtensionElement);
        }
        return Ok(Some(Element {
            id,
            start: pos,
            end,
        }));
    }
}

/// Most elements a [`Layout`] records; browsers send 3 to 5 on audio.
const LAYOUT_CAPACITY: usize = 8;

/// Where the elements of an RFC 8285 block start, found once by [`scan`] so that each
/// consumer's [`rewrite`] goes straight to them. Ids and lengths are read from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// Offset in the block of element `i` in byte `i` (little-endian), for `i < count`.
    /// Packed in a register-sized word so that parsing builds it without memory traffic.
    starts: u64,
    count: u8,
    /// False when the block did not fit (more than [`LAYOUT_CAPACITY`] elements, or offsets
    /// above 255): [`rewrite`] then walks the bytes itself.
    complete: bool,
    /// True when everything after the last element is padding.
    clean_tail: bool,
}

impl Layout {
    const EMPTY: Self = Self {
        starts: 0,
        count: 0,
        complete: true,
        clean_tail: true,
    };

    /// Offsets of the recorded elements, in block order.
    fn starts(&self) -> Starts {
        Starts {
            packed: self.starts,
            remaining: self.count,
        }
    }
}

/// Iterator over the offsets packed in [`Layout::starts`].
struct Starts {
    packed: u64,
    remaining: u8,
}

impl Iterator for Starts {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.remaining = self.remaining.checked_sub(1)?;
        let start = usize::from(self.packed as u8);
        self.packed >>= 8;
        Some(start)
    }
}

/// Validates an RFC 8285 block (every element within it) and records its layout. Blocks of
/// other profiles are opaque and accepted as they are.
pub(super) fn scan(profile: u16, block: &[u8]) -> Result<Layout, RtpError> {
    let Some(form) = Form::of(profile) else {
        return Ok(Layout::EMPTY);
    };
    let mut layout = Layout::EMPTY;
    let mut pos = 0;
    while let Some(element) = next_element(block, pos, form)? {
        pos = element.end;
        match u8::try_from(element.start) {
            Ok(start) if usize::from(layout.count) < LAYOUT_CAPACITY => {
                layout.starts |= u64::from(start) << (8 * layout.count);
                layout.count += 1;
            }
            _ => layout.complete = false,
        }
    }
    // Anything but zeros after the last element (an id-15 element and what follows it) must
    // be cleared by a rewrite.
    layout.clean_tail = block
        .get(pos..)
        .is_some_and(|tail| tail.iter().all(|&b| b == 0));
    Ok(layout)
}

/// The data of element `id` in an RFC 8285 block, found through the layout [`scan`] recorded
/// (no walk over the bytes): `Some(None)` when absent, `None` when the layout is incomplete
/// or the profile is not RFC 8285 (then walk with [`Extensions`]).
#[inline]
pub(super) fn find<'a>(
    profile: u16,
    block: &'a [u8],
    layout: &Layout,
    id: u8,
) -> Option<Option<&'a [u8]>> {
    let form = Form::of(profile)?;
    if !layout.complete {
        return None;
    }
    for start in layout.starts() {
        let Some(&first) = block.get(start) else {
            return Some(None);
        };
        if form.id(first) != id {
            continue;
        }
        let (data, len) = match form {
            Form::OneByte => (start + 1, usize::from(first & 0x0f) + 1),
            Form::TwoByte => (start + 2, usize::from(*block.get(start + 1)?)),
        };
        return Some(block.get(data..data + len));
    }
    Some(None)
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
                let data = element.start + form.element_header_len();
                Some((element.id, self.block.get(data..element.end)?))
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
            None => self.get_high(from),
        }
    }

    /// Ids above 14: rare, kept out of line.
    #[cold]
    fn get_high(&self, from: u8) -> u8 {
        self.high
            .iter()
            .take(usize::from(self.high_len))
            .find(|&&(id, _)| id == from)
            .map_or(0, |&(_, to)| to)
    }
}

/// Rewrites the extension block of `packet` in place: maps ids, and compacts away dropped
/// elements, zero-filling the freed tail. Elements before the first dropped one are not
/// moved, so in the common case only the id bytes that change are written.
pub(super) fn rewrite(
    packet: &mut [u8],
    ext: &ExtensionBlock,
    map: &ExtensionMap,
) -> Result<(), RtpError> {
    let Some(form) = Form::of(ext.profile) else {
        return blank(packet, ext);
    };
    let block = packet
        .get_mut(ext.start..ext.end)
        .ok_or(RtpError::HeaderMismatch)?;
    let layout = &ext.layout;
    if !(layout.complete && layout.clean_tail) {
        return compact_walk(block, form, map);
    }
    let mut starts = layout.starts();
    while let Some(start) = starts.next() {
        let byte = block.get_mut(start).ok_or(RtpError::HeaderMismatch)?;
        let id = form.id(*byte);
        let to = map.get(id);
        if !form.can_carry(to) {
            return compact_recorded(block, form, map, starts, start);
        }
        if to != id {
            *byte = form.with_id(*byte, to);
        }
    }
    Ok(())
}

/// Compacts the recorded elements at `starts` down to `write`, where a dropped element
/// started.
fn compact_recorded(
    block: &mut [u8],
    form: Form,
    map: &ExtensionMap,
    starts: Starts,
    mut write: usize,
) -> Result<(), RtpError> {
    for start in starts {
        let element = next_element(block, start, form)?.ok_or(RtpError::HeaderMismatch)?;
        let to = map.get(element.id);
        if form.can_carry(to) {
            write = move_down(block, form, element.start..element.end, to, write)?;
        }
    }
    zero_from(block, write);
    Ok(())
}

/// Compacts a block that has no complete layout, walking its bytes.
fn compact_walk(block: &mut [u8], form: Form, map: &ExtensionMap) -> Result<(), RtpError> {
    let (mut read, mut write) = (0, 0);
    while let Some(element) = next_element(block, read, form)? {
        read = element.end;
        let to = map.get(element.id);
        if form.can_carry(to) {
            write = move_down(block, form, element.start..element.end, to, write)?;
        }
    }
    zero_from(block, write);
    Ok(())
}

/// Moves the kept element at `element` down to `write` (never up: elements are visited in
/// order) and gives it id `to`; returns where the next kept element goes.
#[inline(always)]
fn move_down(
    block: &mut [u8],
    form: Form,
    element: std::ops::Range<usize>,
    to: u8,
    write: usize,
) -> Result<usize, RtpError> {
    if element.end > block.len() || write > element.start {
        return Err(RtpError::HeaderMismatch);
    }
    let len = element.len();
    if write != element.start {
        block.copy_within(element, write);
    }
    if let Some(byte) = block.get_mut(write) {
        *byte = form.with_id(*byte, to);
    }
    Ok(write + len)
}

/// Zero bytes are padding (RFC 8285 §4.2, §4.3).
fn zero_from(block: &mut [u8], at: usize) {
    if let Some(tail) = block.get_mut(at..) {
        tail.fill(0);
    }
}

/// Blanks an opaque (non-RFC 8285) extension, which cannot have been negotiated: it becomes
/// an all-padding one-byte block of the same length.
fn blank(packet: &mut [u8], ext: &ExtensionBlock) -> Result<(), RtpError> {
    let profile_word = ext
        .start
        .checked_sub(4)
        .and_then(|at| packet.get_mut(at..at + 2))
        .ok_or(RtpError::HeaderMismatch)?;
    profile_word.copy_from_slice(&PROFILE_ONE_BYTE.to_be_bytes());
    packet
        .get_mut(ext.start..ext.end)
        .ok_or(RtpError::HeaderMismatch)?
        .fill(0);
    Ok(())
}
