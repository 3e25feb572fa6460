//! The relay link's hot path makes no heap allocation: after warm-up, 10,000 seal + open round
//! trips of media and keepalive messages (payload written and parsed, replay window moving,
//! reordered and replayed datagrams refused) allocate nothing (counted by a wrapping global
//! allocator, on this thread only so the test harness does not interfere).

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use choir::wire::relay::payload::Payload;
use choir::wire::relay::{DropReason, LinkKey, Receiver, Sender, HEADER_LEN};

const ROUND_TRIPS: u64 = 10_000;
const LINK: u32 = 0x5151_0001;

/// One voice packet: 12-octet header, 100 octets of payload.
fn write_rtp(buf: &mut [u8], seq: u64) -> usize {
    buf[..12].copy_from_slice(&[0x80, 111, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]);
    buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    buf[12..112].fill(seq as u8);
    112
}

/// Seals `count` messages, opens each (one in 50 twice: refused as replayed), checks them.
fn round_trips(tx: &mut Sender, rx: &mut Receiver, count: u64) {
    let mut rtp = [0u8; 1500];
    let mut buf = [0u8; 1500];
    let mut replay = [0u8; 1500];
    for _ in 0..count {
        let seq = tx.next_seq().expect("sequence space");
        let rtp_len = write_rtp(&mut rtp, seq);
        let message = if seq.is_multiple_of(10) {
            Payload::Keepalive {
                sent_at_micros: seq * 20_000,
            }
        } else {
            Payload::Media {
                stream: (seq % 4) as u32,
                rtp: &rtp[..rtp_len],
            }
        };
        let n = message.write(&mut buf[HEADER_LEN..]).expect("write");
        let len = tx.seal_in_place(&mut buf, n).expect("seal");
        replay[..len].copy_from_slice(&buf[..len]);
        let (header, plaintext) = rx.open(&mut buf[..len]).expect("open");
        assert_eq!(header.seq, seq);
        assert_eq!(Payload::parse(plaintext), Ok(message));
        if seq.is_multiple_of(50) {
            assert_eq!(
                rx.open(&mut replay[..len]).err(),
                Some(DropReason::Replayed)
            );
        }
    }
}

#[test]
fn no_allocation_per_datagram() {
    let key = [0x42u8; 32];
    let mut tx = Sender::new(LinkKey::new(&key).unwrap(), LINK);
    let mut rx = Receiver::new(LinkKey::new(&key).unwrap(), LINK);
    round_trips(&mut tx, &mut rx, 10);
    let ((), counted) = allocations_in(|| round_trips(&mut tx, &mut rx, ROUND_TRIPS));
    assert_eq!(counted, 0, "heap allocations in steady state");
    assert_eq!(rx.highest_seq(), Some(ROUND_TRIPS + 9));
}
