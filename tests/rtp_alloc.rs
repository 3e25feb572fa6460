//! The per-packet RTP/RTCP paths make no heap allocation: parse, rewrite, sequence mapping,
//! RTCP build and parse, receive statistics. A counting global allocator watches this
//! thread only (the test harness allocates on its own threads).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use choir::wire::rtcp::{self, ReceiveStats, RtcpPacket};
use choir::wire::rtp::{self, ExtensionMap, SequenceMapper};

/// An Opus packet as browsers send it: audio level (id 1), abs-send-time (id 3) and
/// transport-wide sequence number (id 5) in a one-byte extension block, 60 bytes of payload.
fn opus_packet() -> Vec<u8> {
    let mut p = vec![0x90, 111, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
    p.extend([0xBE, 0xDE, 0, 3]);
    p.extend([0x10, 0x85, 0x32, 1, 2, 3, 0x51, 0, 7, 0, 0, 0]);
    p.extend((0..60).map(|i| i as u8));
    p
}

/// Inbound RTCP from a browser: SR + SDES, then transport-cc, NACK and PLI, built by the
/// independent rtc-rtcp crate (allocating, outside the measured section).
fn browser_rtcp() -> Vec<u8> {
    use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc_rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    use rtc_rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    let packets: Vec<Box<dyn rtc_rtcp::Packet>> = vec![
        Box::new(rtc_rtcp::sender_report::SenderReport {
            ssrc: 0x1122_3344,
            ntp_time: 0xe000_0000_8000_0000,
            ..Default::default()
        }),
        Box::new(TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            ..Default::default()
        }),
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![NackPair {
                packet_id: 10,
                lost_packets: 0xff,
            }],
        }),
        Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        }),
    ];
    rtc_rtcp::packet::marshal(&packets).unwrap().to_vec()
}

#[test]
fn per_packet_paths_do_not_allocate() {
    let t0 = Instant::now();
    let mut packet = opus_packet();
    let inbound_rtcp = browser_rtcp();
    let mut scratch = [0u8; 1500];
    let mut rtcp_out = [0u8; 1500];
    let mut map = ExtensionMap::new();
    map.set(1, 1);
    map.set(5, 3); // abs-send-time (3) not negotiated: dropped
    let mut mapper = SequenceMapper::new(48_000);
    let mut stats = ReceiveStats::new(0x1122_3344, 48_000);

    let mut iteration = |i: u32| {
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        let seq = (i as u16).wrapping_add(65_000);
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&(i.wrapping_mul(960)).to_be_bytes());

        // Ingress: parse once, account receive statistics.
        let header = rtp::parse(&packet).unwrap();
        stats.on_packet(header.sequence, header.timestamp, now);
        black_box(header.extension(&packet, 5));

        // Egress, per consumer: map, copy, rewrite.
        if i.is_multiple_of(500) {
            mapper.resync();
        }
        let (out_seq, out_ts) = mapper.map(header.sequence, header.timestamp, now).unwrap();
        let out = &mut scratch[..packet.len()];
        out.copy_from_slice(&packet);
        rtp::rewrite(out, &header, 0xabcd, 100, out_seq, out_ts, &map).unwrap();
        black_box(&out);

        // RTCP: build a compound report and parse it and a browser's packets.
        if i.is_multiple_of(50) {
            stats.on_sender_report(rtcp::ntp_timestamp(SystemTime::now()), now);
        }
        let block = stats.report_block(now).unwrap();
        let mut len = rtcp::write_sender_report(
            &mut rtcp_out,
            0xabcd,
            rtcp::ntp_timestamp(SystemTime::now()),
            out_ts,
            i,
            i * 60,
        )
        .unwrap();
        len += rtcp::write_receiver_report(&mut rtcp_out[len..], 0xabcd, &[block]).unwrap();
        len += rtcp::write_sdes_cname(&mut rtcp_out[len..], 0xabcd, "choir").unwrap();
        for compound in [&rtcp_out[..len], &inbound_rtcp[..]] {
            for p in rtcp::packets(compound) {
                match p.unwrap() {
                    RtcpPacket::SenderReport(sr) => black_box(sr.reports.iter().count()),
                    RtcpPacket::ReceiverReport(rr) => black_box(rr.reports.iter().count()),
                    RtcpPacket::Sdes(sdes) => {
                        black_box(sdes.chunks().filter_map(|c| c.cname()).count())
                    }
                    RtcpPacket::Nack { items, .. } => black_box(items.lost().count()),
                    other => black_box(matches!(other, RtcpPacket::Pli { .. }) as usize),
                };
            }
        }
        black_box(rtcp::round_trip_time(
            &block,
            rtcp::ntp_timestamp(SystemTime::now()),
        ));
    };

    for i in 0..100 {
        iteration(i);
    }
    let ((), allocations) = allocations_in(|| {
        for i in 100..10_100 {
            iteration(i);
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(stats.cumulative_lost(), 0);
}
