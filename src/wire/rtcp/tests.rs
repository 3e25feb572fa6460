//! RTCP parse/build tests, cross-checked against the independent `rtc-rtcp` crate.

use super::*;
use bytes::Bytes;
use rtc_rtcp::extended_report::{
    DLRRReport, DLRRReportBlock, ExtendedReport, ReceiverReferenceTimeReportBlock,
};
use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc_rtcp::raw_packet::RawPacket;
use rtc_rtcp::receiver_report::ReceiverReport as RtcRr;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport as RtcSr;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc_rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    TransportLayerCc,
};
use rtc_rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use std::time::Duration;

type Boxed = Box<dyn rtc_rtcp::Packet>;

fn marshal(packets: &[Boxed]) -> Vec<u8> {
    rtc_rtcp::packet::marshal(packets).unwrap().to_vec()
}

fn block(ssrc: u32) -> ReportBlock {
    ReportBlock {
        ssrc,
        fraction_lost: 25,
        cumulative_lost: 1234,
        highest_sequence: 0x0001_2345,
        jitter: 480,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 0x0001_8000,
    }
}

fn reception(b: &ReportBlock) -> ReceptionReport {
    ReceptionReport {
        ssrc: b.ssrc,
        fraction_lost: b.fraction_lost,
        total_lost: b.cumulative_lost as u32,
        last_sequence_number: b.highest_sequence,
        jitter: b.jitter,
        last_sender_report: b.last_sr,
        delay: b.delay_since_last_sr,
    }
}

fn collect(compound: &[u8]) -> Vec<RtcpPacket<'_>> {
    packets(compound).collect::<Result<_, _>>().unwrap()
}

#[test]
fn choir_reports_parse_in_rtc_rtcp_and_match_its_encoding() {
    let blocks = [block(0xaaaa_0001), block(0xaaaa_0002)];
    let mut buf = [0u8; 256];
    let mut len =
        write_sender_report(&mut buf, 0x1111, 0xe000_0001_8000_0000, 960, 50, 6000).unwrap();
    len += write_receiver_report(&mut buf[len..], 0x1111, &blocks).unwrap();
    len += write_sdes_cname(&mut buf[len..], 0x1111, "choir-cname").unwrap();
    let ours = &buf[..len];

    let expected: Vec<Boxed> = vec![
        Box::new(RtcSr {
            ssrc: 0x1111,
            ntp_time: 0xe000_0001_8000_0000,
            rtp_time: 960,
            packet_count: 50,
            octet_count: 6000,
            ..Default::default()
        }),
        Box::new(RtcRr {
            ssrc: 0x1111,
            reports: blocks.iter().map(reception).collect(),
            ..Default::default()
        }),
        Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: 0x1111,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from_static(b"choir-cname"),
                }],
            }],
        }),
    ];
    let parsed = rtc_rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(ours)).unwrap();
    assert_eq!(parsed.len(), 3);
    for (got, want) in parsed.iter().zip(&expected) {
        assert!(got.equal(want.as_ref()), "{got:?} != {want:?}");
    }
    // Byte-identical to rtc-rtcp, except that rtc-rtcp ends the SDES chunk's null octets with
    // a padding count; RFC 3550 §6.5 asks for null octets there (choir accepts both).
    let theirs = marshal(&expected);
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours[..ours.len() - 1], theirs[..theirs.len() - 1]);
    assert_eq!((ours[ours.len() - 1], theirs[theirs.len() - 1]), (0, 2));

    // And choir reads its own output back.
    let ours = collect(ours);
    let RtcpPacket::ReceiverReport(rr) = ours[1] else {
        panic!("{:?}", ours[1])
    };
    assert_eq!(rr.reports.iter().collect::<Vec<_>>(), blocks);
}

#[test]
fn rtc_rtcp_compound_parses_in_choir() {
    let blocks = [block(7), block(8)];
    let compound = marshal(&[
        Box::new(RtcSr {
            ssrc: 0xdead_beef,
            ntp_time: 0x0102_0304_0506_0708,
            rtp_time: 0x0a0b_0c0d,
            packet_count: 99,
            octet_count: 12_345,
            reports: blocks.iter().map(reception).collect(),
            ..Default::default()
        }),
        Box::new(RtcRr {
            ssrc: 0xdead_beef,
            reports: vec![reception(&block(9))],
            ..Default::default()
        }),
        Box::new(SourceDescription {
            chunks: vec![
                SourceDescriptionChunk {
                    source: 1,
                    items: vec![
                        SourceDescriptionItem {
                            sdes_type: SdesType::SdesCname,
                            text: Bytes::from_static(b"abc"),
                        },
                        SourceDescriptionItem {
                            sdes_type: SdesType::SdesName,
                            text: Bytes::from_static(b"a longer display name"),
                        },
                    ],
                },
                SourceDescriptionChunk {
                    source: 2,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: Bytes::from_static(b"wxyz"),
                    }],
                },
            ],
        }),
        Box::new(Goodbye {
            sources: vec![0xdead_beef, 42],
            reason: Bytes::from_static(b"shutdown"),
        }),
    ]);
    let parsed = collect(&compound);
    assert_eq!(parsed.len(), 4);

    let RtcpPacket::SenderReport(sr) = parsed[0] else {
        panic!("{:?}", parsed[0])
    };
    assert_eq!(
        (
            sr.ssrc,
            sr.ntp,
            sr.rtp_timestamp,
            sr.packet_count,
            sr.octet_count
        ),
        (0xdead_beef, 0x0102_0304_0506_0708, 0x0a0b_0c0d, 99, 12_345)
    );
    assert_eq!(sr.reports.len(), 2);
    assert_eq!(sr.reports.iter().collect::<Vec<_>>(), blocks);

    let RtcpPacket::ReceiverReport(rr) = parsed[1] else {
        panic!("{:?}", parsed[1])
    };
    assert_eq!(rr.ssrc, 0xdead_beef);
    assert_eq!(rr.reports.iter().collect::<Vec<_>>(), [block(9)]);

    let RtcpPacket::Sdes(sdes) = parsed[2] else {
        panic!("{:?}", parsed[2])
    };
    let chunks: Vec<_> = sdes.chunks().collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!((chunks[0].ssrc, chunks[0].cname()), (1, Some(&b"abc"[..])));
    let items: Vec<_> = chunks[0].items.map(|i| (i.kind, i.value)).collect();
    assert_eq!(
        items,
        [(1, &b"abc"[..]), (2, &b"a longer display name"[..])]
    );
    assert_eq!((chunks[1].ssrc, chunks[1].cname()), (2, Some(&b"wxyz"[..])));

    let RtcpPacket::Bye(bye) = parsed[3] else {
        panic!("{:?}", parsed[3])
    };
    assert_eq!(bye.sources.iter().collect::<Vec<_>>(), [0xdead_beef, 42]);
    assert_eq!(bye.reason, Some(&b"shutdown"[..]));
}

/// NACK, PLI and the types choir does not interpret: transport-cc, REMB, XR, APP.
fn feedback_packets() -> Vec<Boxed> {
    vec![
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![
                NackPair {
                    packet_id: 65_534,
                    lost_packets: 0b101,
                },
                NackPair {
                    packet_id: 100,
                    lost_packets: 0,
                },
            ],
        }),
        Box::new(PictureLossIndication {
            sender_ssrc: 3,
            media_ssrc: 4,
        }),
        Box::new(TransportLayerCc {
            sender_ssrc: 5,
            media_ssrc: 6,
            base_sequence_number: 153,
            packet_status_count: 1,
            reference_time: 4_057_090,
            fb_pkt_count: 23,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: 1,
            })],
            recv_deltas: vec![RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 37_000,
            }],
        }),
        Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 7,
            bitrate: 64_000.0,
            ssrcs: vec![8],
        }),
        Box::new(ExtendedReport {
            sender_ssrc: 9,
            reports: vec![
                Box::new(ReceiverReferenceTimeReportBlock {
                    ntp_timestamp: 0x0102_0304_0506_0708,
                }),
                Box::new(DLRRReportBlock {
                    reports: vec![DLRRReport {
                        ssrc: 10,
                        last_rr: 11,
                        dlrr: 12,
                    }],
                }),
            ],
        }),
        // APP (RFC 3550 §6.7): subtype 3, SSRC, name "test", 4 bytes of data.
        Box::new(RawPacket(Bytes::from_static(&[
            0x83, 204, 0, 3, 0, 0, 0, 13, b't', b'e', b's', b't', 1, 2, 3, 4,
        ]))),
    ]
}

fn check_feedback(parsed: &[RtcpPacket<'_>]) {
    let RtcpPacket::Nack {
        sender_ssrc,
        media_ssrc,
        items,
    } = parsed[0]
    else {
        panic!("{:?}", parsed[0])
    };
    assert_eq!((sender_ssrc, media_ssrc), (1, 2));
    assert_eq!(
        items.iter().collect::<Vec<_>>(),
        [(65_534, 0b101), (100, 0)]
    );
    assert_eq!(items.lost().collect::<Vec<_>>(), [65_534, 65_535, 1, 100]);
    assert_eq!(
        parsed[1],
        RtcpPacket::Pli {
            sender_ssrc: 3,
            media_ssrc: 4
        }
    );
    let others: Vec<_> = parsed[2..].to_vec();
    assert_eq!(
        others,
        [
            RtcpPacket::Other {
                packet_type: PT_RTPFB,
                fmt: 15
            },
            RtcpPacket::Other {
                packet_type: PT_PSFB,
                fmt: 15
            },
            RtcpPacket::Other {
                packet_type: PT_XR,
                fmt: 0
            },
            RtcpPacket::Other {
                packet_type: PT_APP,
                fmt: 3
            },
        ]
    );
}

#[test]
fn feedback_and_unknown_types_parse_in_choir() {
    let all = feedback_packets();
    check_feedback(&collect(&marshal(&all)));
    // Reduced-size RTCP (RFC 5506): each packet on its own.
    let singles: Vec<Vec<u8>> = all
        .iter()
        .map(|p| marshal(std::slice::from_ref(p)))
        .collect();
    let mut alone = Vec::new();
    for bytes in &singles {
        let parsed = collect(bytes);
        assert_eq!(parsed.len(), 1);
        alone.extend(parsed);
    }
    check_feedback(&alone);
}

#[test]
fn padding_is_removed() {
    // RR with one block, then 8 bytes of padding (P bit, last octet 8).
    let mut buf = [0u8; 64];
    let len = write_receiver_report(&mut buf, 5, &[block(6)]).unwrap();
    let mut padded = buf[..len].to_vec();
    padded[0] |= 0x20;
    padded[3] += 2;
    padded.extend([0, 0, 0, 0, 0, 0, 0, 8]);
    let parsed = collect(&padded);
    let RtcpPacket::ReceiverReport(rr) = parsed[0] else {
        panic!()
    };
    assert_eq!(rr.reports.iter().collect::<Vec<_>>(), [block(6)]);

    // A BYE whose reason is followed by alignment and then 4 bytes of padding.
    let mut bye = [0u8; 16];
    bye[..12].copy_from_slice(&[0xa1, 203, 0, 3, 0, 0, 0, 9, 2, b'h', b'i', 0]);
    bye[12..].copy_from_slice(&[0, 0, 0, 4]);
    let parsed = collect(&bye);
    let RtcpPacket::Bye(b) = parsed[0] else {
        panic!()
    };
    assert_eq!(b.reason, Some(&b"hi"[..]));

    for bad_count in [0, 37] {
        *padded.last_mut().unwrap() = bad_count;
        assert_eq!(packets(&padded).next(), Some(Err(RtcpError::BadPadding)));
    }
}

#[test]
fn malformed_packets_are_errors() {
    let err = |bytes: &[u8]| packets(bytes).find_map(Result::err);
    assert_eq!(err(&[0x80, 201, 0]), Some(RtcpError::TooShort));
    assert_eq!(
        err(&[0x40, 201, 0, 1, 0, 0, 0, 1]),
        Some(RtcpError::BadVersion)
    );
    assert_eq!(
        err(&[0x80, 201, 0, 2, 0, 0, 0, 1]),
        Some(RtcpError::BadLength)
    );
    assert_eq!(
        err(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
        Some(RtcpError::BadReportCount)
    );
    assert_eq!(
        err(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
        Some(RtcpError::BadReportCount)
    );
    // SDES item running past the packet; chunk with no terminator.
    assert_eq!(
        err(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 9, b'a', b'b']),
        Some(RtcpError::BadSdes)
    );
    assert_eq!(
        err(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, b'a', b'b']),
        Some(RtcpError::BadSdes)
    );
    assert_eq!(err(&[0x82, 203, 0, 1, 0, 0, 0, 1]), Some(RtcpError::BadBye));
    assert_eq!(
        err(&[0x81, 203, 0, 2, 0, 0, 0, 1, 5, b'a', b'b', b'c']),
        Some(RtcpError::BadBye)
    );
    assert_eq!(
        err(&[0x81, 205, 0, 1, 0, 0, 0, 1]),
        Some(RtcpError::BadFeedback)
    );
    assert_eq!(
        err(&[0x81, 206, 0, 1, 0, 0, 0, 1]),
        Some(RtcpError::BadFeedback)
    );
    // An error ends the iteration.
    let mut both = vec![0x80, 201, 0, 1, 0, 0, 0, 1];
    both.extend([0x40, 201, 0, 1, 0, 0, 0, 1, 0x80, 201, 0, 1, 0, 0, 0, 1]);
    let results: Vec<_> = packets(&both).collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1], Err(RtcpError::BadVersion));
    assert_eq!(packets(&[]).count(), 0);
}

/// Walks every packet and every view, as a consumer of `packets` would.
fn exercise(bytes: &[u8]) -> Vec<Result<(), RtcpError>> {
    packets(bytes)
        .map(|p| {
            match p? {
                RtcpPacket::SenderReport(sr) => drop(sr.reports.iter().count()),
                RtcpPacket::ReceiverReport(rr) => drop(rr.reports.iter().count()),
                RtcpPacket::Sdes(sdes) => {
                    for chunk in sdes.chunks() {
                        let _ = (chunk.cname(), chunk.items.count());
                    }
                }
                RtcpPacket::Bye(bye) => drop(bye.sources.iter().count()),
                RtcpPacket::Nack { items, .. } => drop(items.lost().count()),
                RtcpPacket::Pli { .. } | RtcpPacket::Other { .. } => {}
            }
            Ok(())
        })
        .collect()
}

#[test]
fn every_truncation_is_an_error_and_garbage_never_panics() {
    let mut all: Vec<Boxed> = vec![
        Box::new(RtcSr {
            ssrc: 1,
            reports: vec![reception(&block(2))],
            ..Default::default()
        }),
        Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: 1,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from_static(b"cname"),
                }],
            }],
        }),
        Box::new(Goodbye {
            sources: vec![1],
            reason: Bytes::from_static(b"bye"),
        }),
    ];
    all.extend(feedback_packets());
    let compound = marshal(&all);
    let mut boundaries = vec![0];
    for p in &all {
        boundaries.push(boundaries.last().unwrap() + p.marshal_size());
    }
    assert_eq!(*boundaries.last().unwrap(), compound.len());
    for len in 0..=compound.len() {
        let results = exercise(&compound[..len]);
        let complete = boundaries.iter().position(|&b| b >= len).unwrap();
        if boundaries.contains(&len) {
            assert_eq!(results.len(), complete, "prefix {len}");
            assert!(results.iter().all(Result::is_ok), "prefix {len}");
        } else {
            assert_eq!(results.len(), complete, "prefix {len}");
            assert!(results.last().unwrap().is_err(), "prefix {len}");
        }
    }

    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut bytes = compound.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        exercise(&bytes);
        let noise: Vec<u8> = (0..next() % 64).map(|_| next() as u8 | 0x80).collect();
        exercise(&noise);
    }
}

#[test]
fn builders_check_their_buffers() {
    let mut buf = [0u8; 1024];
    let blocks = [block(1); 31];
    let sizes = [
        write_sender_report(&mut buf, 1, 2, 3, 4, 5).unwrap(),
        write_receiver_report(&mut buf, 1, &blocks).unwrap(),
        write_receiver_report(&mut buf, 1, &[]).unwrap(),
        write_sdes_cname(&mut buf, 1, "").unwrap(),
        write_sdes_cname(&mut buf, 1, "abcdef").unwrap(),
        write_sdes_cname(&mut buf, 1, &"x".repeat(255)).unwrap(),
    ];
    assert_eq!(sizes, [28, 8 + 31 * 24, 8, 12, 20, 268]);
    for len in 0..sizes[0] {
        assert_eq!(write_sender_report(&mut buf[..len], 1, 2, 3, 4, 5), None);
    }
    for len in 0..sizes[1] {
        assert_eq!(write_receiver_report(&mut buf[..len], 1, &blocks), None);
    }
    for len in 0..sizes[4] {
        assert_eq!(write_sdes_cname(&mut buf[..len], 1, "abcdef"), None);
    }
    assert_eq!(write_receiver_report(&mut buf, 1, &[block(1); 32]), None);
    assert_eq!(write_sdes_cname(&mut buf, 1, &"x".repeat(256)), None);

    // Every CNAME length gives a valid, 32-bit aligned SDES.
    let name = "y".repeat(255);
    for n in 0..=255 {
        let len = write_sdes_cname(&mut buf, 9, &name[..n]).unwrap();
        let parsed = collect(&buf[..len]);
        let RtcpPacket::Sdes(sdes) = parsed[0] else {
            panic!()
        };
        assert_eq!(
            sdes.chunks().next().unwrap().cname(),
            Some(&name.as_bytes()[..n])
        );
    }

    // Cumulative loss is 24-bit signed: negative values survive, larger ones clamp.
    for (value, wire) in [
        (-5, -5),
        (-(1 << 23), -(1 << 23)),
        (1 << 24, (1 << 23) - 1),
        (i32::MIN, -(1 << 23)),
    ] {
        let mut b = block(1);
        b.cumulative_lost = value;
        let mut bytes = [0u8; 24];
        b.write(&mut bytes).unwrap();
        assert_eq!(ReportBlock::read(&bytes).unwrap().cumulative_lost, wire);
    }
}

#[test]
fn ntp_conversions() {
    use std::time::{SystemTime, UNIX_EPOCH};
    assert_eq!(ntp_timestamp(UNIX_EPOCH), 2_208_988_800 << 32);
    let t = UNIX_EPOCH + Duration::from_millis(1_500);
    assert_eq!(ntp_timestamp(t), (2_208_988_801 << 32) | 0x8000_0000);
    assert_eq!(
        compact_ntp(ntp_timestamp(t)),
        (2_208_988_801u64 << 16) as u32 | 0x8000
    );
    assert_eq!(
        ntp_timestamp(UNIX_EPOCH - Duration::from_secs(3_000_000_000)),
        0
    );
    let now = ntp_timestamp(SystemTime::now());
    assert!(now >> 32 > 3_900_000_000, "after 2023");

    // RFC 3550 §6.4.1 example: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000.
    let rb = ReportBlock {
        last_sr: 0xb705_2000,
        delay_since_last_sr: 0x0005_4000,
        ..Default::default()
    };
    let arrival = 0xb710_8000u64 << 16;
    assert_eq!(
        round_trip_time(&rb, arrival),
        Some(Duration::from_millis(6_125))
    );
    assert_eq!(round_trip_time(&ReportBlock::default(), arrival), None);
    let early = 0xb705_0000u64 << 16;
    assert_eq!(round_trip_time(&rb, early), None);
}

#[test]
fn nack_written_packs_sixteen_numbers_per_entry_and_rtc_rtcp_reads_it() {
    let mut buf = [0u8; 64];
    let lost = [65_534u16, 65_535, 1, 14, 40];
    let n = write_nack(&mut buf, 0xaaaa, 0xbbbb, lost).unwrap();
    assert_eq!(n, 12 + 2 * 4);
    let theirs = rtc_rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(&buf[..n])).unwrap();
    let want: Boxed = Box::new(TransportLayerNack {
        sender_ssrc: 0xaaaa,
        media_ssrc: 0xbbbb,
        nacks: vec![
            NackPair {
                packet_id: 65_534,
                lost_packets: 0b1000_0000_0000_0101,
            },
            NackPair {
                packet_id: 40,
                lost_packets: 0,
            },
        ],
    });
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].equal(want.as_ref()), "{:?}", theirs[0]);
    assert_eq!(&buf[..n], &marshal(&[want])[..], "byte-identical");
    let parsed: Vec<_> = packets(&buf[..n]).collect::<Result<_, _>>().unwrap();
    let RtcpPacket::Nack { items, .. } = parsed[0] else {
        panic!("{parsed:?}")
    };
    assert_eq!(items.lost().collect::<Vec<_>>(), lost);

    assert_eq!(write_nack(&mut buf, 1, 2, []), None, "nothing to ask for");
    assert_eq!(write_nack(&mut buf[..15], 1, 2, [7]), None, "too small");
    assert_eq!(write_nack(&mut buf[..16], 1, 2, [7]), Some(16));
}
