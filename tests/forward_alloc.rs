//! The forwarding hot path makes no heap allocation: 10,000 packets from one producer fanned out
//! to 10 consumers (decrypt once, rewrite + encrypt per consumer), counted by a global allocator;
//! with NACK and RED (to listeners, and from a speaker); and across a cascade link (relayed out, received in and fanned out).

#[path = "common/cascade.rs"]
mod cascade;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/loopback.rs"]
mod loopback;

use std::net::SocketAddr;

use choir::sfu::{Egress, Path};
use counting_alloc::allocations_in;

use loopback::{Counter, Loopback, Queue};

#[test]
fn ten_thousand_packets_to_ten_consumers_allocate_nothing() {
    let mut lb = Loopback::new();
    let speaker = lb.join("room", "speaker", true);
    let listeners: Vec<usize> = (0..10)
        .map(|i| lb.join("room", &format!("l{i}"), false))
        .collect();
    for &l in &listeners {
        lb.consume("room", l, speaker);
    }
    lb.settle();

    let path = lb.members[speaker].send.path;
    let key = Some(lb.members[speaker].send.key);
    let mut plain = [0u8; 2048];
    let mut datagram = [0u8; 2048];
    let mut send = |lb: &mut Loopback, seq: u16, out: &mut Counter| {
        let len = lb.rtp_packet(speaker, seq, &mut plain);
        datagram[..len].copy_from_slice(&plain[..len]);
        let n = lb.members[speaker]
            .send
            .client
            .protect_rtp(&mut datagram, len)
            .unwrap();
        let now = lb.now;
        // Only the core's handling of the datagram is measured.
        let ((), allocations) = allocations_in(|| {
            lb.sfu
                .handle_datagram(key, path, &mut datagram, n, now, out)
        });
        allocations
    };

    // Warm-up: per-stream state (SRTP contexts, statistics) is created on first use.
    let mut warm = Counter { sent: 0, bytes: 0 };
    for seq in 0..100 {
        send(&mut lb, seq, &mut warm);
    }
    let mut out = Counter { sent: 0, bytes: 0 };
    let mut total = 0;
    for seq in 100..10_100 {
        total += send(&mut lb, seq, &mut out);
    }
    assert_eq!(out.sent, 100_000, "every packet reached every consumer");
    assert_eq!(
        total, 0,
        "heap allocations while forwarding 10,000 packets to 10 consumers"
    );
    assert!(
        lb.sfu.counters().drops.is_empty(),
        "{:?}",
        lb.sfu.counters().drops
    );

    // And the consumers really get the speaker's audio: one more packet, decrypted by each.
    let mut q = Queue::default();
    let len = lb.rtp_packet(speaker, 10_100, &mut plain);
    datagram[..len].copy_from_slice(&plain[..len]);
    let n = lb.members[speaker]
        .send
        .client
        .protect_rtp(&mut datagram, len)
        .unwrap();
    let now = lb.now;
    lb.sfu
        .handle_datagram(key, path, &mut datagram, n, now, &mut q);
    let received = lb.deliver(q);
    assert_eq!(received.len(), 10);
    for (member, bytes) in received {
        assert!(listeners.contains(&member));
        assert_eq!(bytes[1] & 0x7f, 100, "router payload type");
        assert_eq!(
            &bytes[bytes.len() - 100..],
            &plain[20..120],
            "payload intact"
        );
    }
}

/// With NACK negotiated on both legs (the history kept, gaps tracked, NACKs sent to the speaker
/// and answered to the listeners) and RED for two listeners (built from the history),
/// forwarding and retransmitting allocate nothing either.
#[test]
fn nack_on_both_legs_and_red_allocate_nothing() {
    let c = nack_and_red(false);
    assert!(c.rtp_retransmitted > 1_500, "{c:?}");
    assert!(c.nacks_sent > 400, "{c:?}");
}

/// The same with a speaker that sends RED: each packet unpacked, each lost one recovered from
/// the next.
#[test]
fn a_red_speaker_allocates_nothing() {
    let c = nack_and_red(true);
    assert!(c.rtp_retransmitted > 1_500, "{c:?}");
    assert!(c.rtp_recovered >= 499, "{c:?}");
}

/// A speaker negotiating NACK (and sending RED with `speaker_red`), 10 listeners: 8 with NACK,
/// 2 with RED. Every tenth packet is lost on the speaker's leg, and listeners NACK. Asserts no
/// allocation; returns the counters.
fn nack_and_red(speaker_red: bool) -> choir::sfu::Counters {
    let mut lb = Loopback::new();
    let speaker = lb.join_codecs("room", "speaker", true, true, speaker_red);
    let listeners: Vec<usize> = (0..10)
        .map(|i| lb.join("room", &format!("l{i}"), false))
        .collect();
    // The first eight negotiate NACK, the last two RED.
    let ssrcs: Vec<u32> = listeners
        .iter()
        .enumerate()
        .map(|(i, &l)| lb.consume_caps("room", l, speaker, i < 8, i >= 8))
        .collect();
    lb.settle();

    let path = lb.members[speaker].send.path;
    let key = Some(lb.members[speaker].send.key);
    let mut plain = [0u8; 2048];
    let mut previous = [0u8; 2048];
    let mut datagram = [0u8; 2048];
    let mut nack = [0u8; 2048];
    let mut total = 0;
    let mut out = Counter { sent: 0, bytes: 0 };
    for seq in 0..5_000u16 {
        lb.now += std::time::Duration::from_millis(20);
        let now = lb.now;
        // Every tenth packet is lost on the speaker's leg (choir NACKs it upstream, or recovers
        // it from the next one's RED).
        if seq % 10 != 9 {
            let mut len = lb.rtp_packet(speaker, seq, &mut plain);
            if speaker_red {
                // A 20 ms Opus frame (TOC 0x78) after the one before it, payload type 63.
                plain[20] = 0x78;
                let n = lb.rtp_packet(speaker, seq.wrapping_sub(1), &mut previous);
                previous[20] = 0x78;
                let earlier = [(960, &previous[20..n])];
                len = choir::wire::rtp::red::encode(&mut plain, len, 20, 111, &earlier).unwrap();
                plain[1] = 63;
            }
            datagram[..len].copy_from_slice(&plain[..len]);
            let speaker_leg = &mut lb.members[speaker].send.client;
            let n = speaker_leg.protect_rtp(&mut datagram, len).unwrap();
            let ((), a) = allocations_in(|| {
                lb.sfu
                    .handle_datagram(key, path, &mut datagram, n, now, &mut out)
            });
            total += a;
        }
        // Every fifth packet one listener asks for the two before.
        if seq % 5 == 4 && seq >= 100 {
            let l = usize::from(seq / 5) % 8;
            let len =
                choir::wire::rtcp::write_nack(&mut nack, 1, ssrcs[l], [seq - 3, seq - 2]).unwrap();
            let leg = &mut lb.members[listeners[l]].recv;
            let n = leg.client.protect_rtcp(&mut nack, len).unwrap();
            let (path, key) = (leg.path, Some(leg.key));
            let ((), a) = allocations_in(|| {
                lb.sfu
                    .handle_datagram(key, path, &mut nack, n, now, &mut out)
            });
            total += a;
        }
    }
    assert_eq!(
        total, 0,
        "heap allocations with NACK on both legs (RED speaker: {speaker_red})"
    );
    lb.sfu.counters().clone()
}

/// Counts client datagrams; keeps the last link datagram (in a buffer allocated up front).
struct Capture {
    sent: u64,
    links: u64,
    link: Box<[u8; 2048]>,
    len: usize,
}

impl Egress for Capture {
    fn send(&mut self, _path: Path, _datagram: &[u8]) {
        self.sent += 1;
    }

    fn send_to(&mut self, _local_port: u16, _to: SocketAddr, datagram: &[u8]) {
        self.links += 1;
        self.link[..datagram.len()].copy_from_slice(datagram);
        self.len = datagram.len();
    }
}

/// Cascade: a speaker on node A with 10 local listeners, 10 listeners on node B. Relaying each
/// packet out on the link (A) and receiving it from the link and fanning it out (B) allocate
/// nothing.
#[test]
fn relaying_over_a_cascade_link_allocates_nothing() {
    let mut m = cascade::Mesh::new(2, "room");
    let speaker = m.nodes[0].join("room", "speaker", true);
    for i in 0..10 {
        let l = m.nodes[0].join("room", &format!("a{i}"), false);
        m.nodes[0].consume("room", l, speaker);
    }
    let remote: Vec<usize> = (0..10)
        .map(|i| m.nodes[1].join("room", &format!("b{i}"), false))
        .collect();
    m.announce("room");
    let pid = m.nodes[0].members[speaker].producer_id.clone().unwrap();
    for l in remote {
        m.nodes[1].consume_id("room", l, &pid, false, false);
    }
    m.settle();

    let path = m.nodes[0].members[speaker].send.path;
    let key = Some(m.nodes[0].members[speaker].send.key);
    let from = cascade::addr(0);
    let mut plain = [0u8; 2048];
    let mut datagram = [0u8; 2048];
    let mut a_out = Capture {
        sent: 0,
        links: 0,
        link: Box::new([0; 2048]),
        len: 0,
    };
    let mut b_out = Counter { sent: 0, bytes: 0 };
    let mut total = 0;
    for seq in 0..10_100u16 {
        if seq == 100 {
            // Warm-up done (per-stream state is created on first use).
            (a_out.sent, a_out.links, b_out.sent, total) = (0, 0, 0, 0);
        }
        let (a, b) = m.nodes.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        let len = a.rtp_packet(speaker, seq, &mut plain);
        datagram[..len].copy_from_slice(&plain[..len]);
        let n = a.members[speaker]
            .send
            .client
            .protect_rtp(&mut datagram, len)
            .unwrap();
        let now = a.now;
        let ((), allocations) = allocations_in(|| {
            a.sfu
                .handle_datagram(key, path, &mut datagram, n, now, &mut a_out);
            let len = a_out.len;
            b.sfu
                .on_link_datagram(cascade::PORT, from, &mut a_out.link[..len], now, &mut b_out);
        });
        total += allocations;
    }
    assert_eq!(a_out.links, 10_000, "one relayed copy per packet");
    assert_eq!(a_out.sent, 100_000);
    assert_eq!(
        b_out.sent, 100_000,
        "every packet reached every remote consumer"
    );
    assert_eq!(m.nodes[1].sfu.counters().relay_packets_in, 10_100);
    assert!(
        m.nodes[1].sfu.counters().drops.is_empty(),
        "{:?}",
        m.nodes[1].sfu.counters().drops
    );
    assert_eq!(
        total, 0,
        "heap allocations relaying 10,000 packets over a link"
    );
}
