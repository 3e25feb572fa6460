//! Loss repair in the sans-IO core, with in-memory `choir::client` peers and a fake clock
//! (tests/common/loopback.rs): generic NACK (RFC 4585) — listeners' NACKs answered from the
//! history, byte-identical, only for consumers that negotiated NACK, within a rate; choir's own
//! NACKs to a speaker that negotiated it —, a speaker's Receiver Report carrying its listeners'
//! loss, and RED (RFC 2198) for a listener that asked for it. (tests/nack.rs does NACK over
//! sockets with str0m.)

#[path = "common/loopback.rs"]
mod loopback;

use std::collections::BTreeMap;
use std::time::Duration;

use choir::wire::rtcp::{self, ReportBlock, RtcpPacket};
use choir::wire::rtp;
use loopback::{Loopback, Queue};

const CHANNEL: &str = "nack";

/// A speaker and two listeners, the first negotiating NACK, the second not.
fn room(speaker_nack: bool) -> (Loopback, usize, usize, usize) {
    let mut lb = Loopback::new();
    let speaker = lb.join_with(CHANNEL, "speaker", true, speaker_nack);
    let nacking = lb.join(CHANNEL, "nacking", false);
    let plain = lb.join(CHANNEL, "plain", false);
    lb.consume_with(CHANNEL, nacking, speaker, true);
    lb.consume_with(CHANNEL, plain, speaker, false);
    lb.settle();
    (lb, speaker, nacking, plain)
}

/// Sends the speaker's packets `seqs` (20 ms apart); `member`'s leg loses those in `lost`.
/// Returns what each member received, by member and sequence number, and what `member` would
/// have received.
fn speak(
    lb: &mut Loopback,
    speaker: usize,
    seqs: impl IntoIterator<Item = u16>,
    member: usize,
    lost: &[u16],
) -> BTreeMap<(usize, u16), Vec<u8>> {
    let mut got = BTreeMap::new();
    let mut buf = [0u8; 2048];
    let path = lb.members[member].recv.path;
    for seq in seqs {
        lb.now += Duration::from_millis(20);
        let len = lb.rtp_packet(speaker, seq, &mut buf);
        let mut q = lb.send_rtp(speaker, &buf[..len]);
        q.0.retain(|(to, d)| *to != path || !lost.contains(&u16::from_be_bytes([d[2], d[3]])));
        for (member, p) in lb.deliver(q) {
            got.insert((member, u16::from_be_bytes([p[2], p[3]])), p);
        }
    }
    got
}

/// A listener's NACK for `seqs` of its consumer `media_ssrc`; what it got back.
fn nack(lb: &mut Loopback, member: usize, media_ssrc: u32, seqs: &[u16]) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 256];
    let n = rtcp::write_nack(&mut buf, 0x77, media_ssrc, seqs.iter().copied()).unwrap();
    let q = lb.send_rtcp(member, false, &buf[..n]);
    lb.deliver(q)
        .into_iter()
        .filter(|(m, _)| *m == member)
        .map(|(_, p)| p)
        .collect()
}

fn consumer_ssrc(got: &BTreeMap<(usize, u16), Vec<u8>>, member: usize) -> u32 {
    let p = got.iter().find(|((m, _), _)| *m == member).unwrap().1;
    u32::from_be_bytes([p[8], p[9], p[10], p[11]])
}

fn drops(lb: &Loopback, reason: &str) -> u64 {
    lb.sfu.counters().dropped("nack", reason)
}

#[test]
fn a_nacking_listener_gets_lost_packets_again_byte_identical() {
    let (mut lb, speaker, nacking, plain) = room(false);
    let lost = [110, 111, 140];
    let got = speak(&mut lb, speaker, 100..150, nacking, &lost);
    let ssrc = consumer_ssrc(&got, nacking);
    assert!(!got.contains_key(&(nacking, 110)));

    // Its leg lost 110, 111 and 140: it asks, choir answers with exactly those, as the other
    // listener got them (the same stream: the consumers' numbering mirrors the producer's).
    let again = nack(&mut lb, nacking, ssrc, &lost);
    assert_eq!(again.len(), 3);
    for (p, seq) in again.iter().zip(lost) {
        assert_eq!(p[2..4], seq.to_be_bytes());
        assert_eq!(p[..8], got[&(plain, seq)][..8], "{seq}: same header");
        assert_eq!(
            p[12..],
            got[&(plain, seq)][12..],
            "{seq}: same extensions and payload"
        );
    }
    let c = lb.sfu.counters();
    assert_eq!((c.nacks_received, c.nacked_packets), (1, 3));
    assert_eq!(c.rtp_retransmitted, 3);

    // Not received by choir yet, and too old.
    assert!(nack(&mut lb, nacking, ssrc, &[150, 151]).is_empty());
    assert_eq!(drops(&lb, "not_received"), 2);
    lb.now += Duration::from_millis(1100);
    assert!(nack(&mut lb, nacking, ssrc, &[140]).is_empty());
    assert_eq!(drops(&lb, "too_old"), 1);
    // Far behind the stream: too old as well (its numbering is not kept).
    assert!(nack(&mut lb, nacking, ssrc, &[65_000]).is_empty());
    assert_eq!(drops(&lb, "too_old"), 2);

    // The listener that did not negotiate NACK gets nothing.
    let plain_ssrc = consumer_ssrc(&got, plain);
    assert!(nack(&mut lb, plain, plain_ssrc, &[120]).is_empty());
    assert_eq!(drops(&lb, "not_negotiated"), 1);
    // Nor does a NACK about a stream this transport does not receive.
    assert!(nack(&mut lb, nacking, plain_ssrc, &[120]).is_empty());
    assert_eq!(drops(&lb, "unknown_ssrc"), 1);
    assert_eq!(lb.sfu.counters().rtp_retransmitted, 3);
}

#[test]
fn a_nack_storm_does_not_multiply_the_output() {
    let (mut lb, speaker, nacking, _) = room(false);
    let all: Vec<u16> = (30..47).collect();
    let got = speak(&mut lb, speaker, 0..50, nacking, &all);
    let ssrc = consumer_ssrc(&got, nacking);
    // 100 NACKs for 17 packets each, 5 ms apart (0.5 s): 1,700 asked for. (The client's
    // replay check would refuse a packet twice: count what choir sent.)
    for _ in 0..100 {
        lb.now += Duration::from_millis(5);
        nack(&mut lb, nacking, ssrc, &all);
    }
    let answered = lb.sfu.counters().rtp_retransmitted;
    // A burst of 25, then 25 per second: half the stream's own rate.
    assert!((36..=38).contains(&answered), "{answered}");
    assert_eq!(
        drops(&lb, "rate_limited") + answered,
        lb.sfu.counters().nacked_packets
    );
}

#[test]
fn choir_nacks_a_speaker_that_negotiated_it_and_forwards_the_repair() {
    let (mut lb, speaker, nacking, plain) = room(true);
    let mut buf = [0u8; 2048];
    let mut nacked = Vec::new();
    let mut forwarded = BTreeMap::<usize, Vec<u16>>::new();
    // 205 and 206 are lost on the speaker's leg.
    for seq in (200..205).chain(207..215) {
        lb.now += Duration::from_millis(20);
        let len = lb.rtp_packet(speaker, seq, &mut buf);
        let q = lb.send_rtp(speaker, &buf[..len]);
        for d in lb.deliver_all(q) {
            if d.rtp {
                forwarded
                    .entry(d.member)
                    .or_default()
                    .push(u16::from_be_bytes([d.bytes[2], d.bytes[3]]));
                continue;
            }
            assert!(
                d.member == speaker && d.send,
                "choir's NACK goes to the speaker"
            );
            for p in rtcp::packets(&d.bytes) {
                if let Ok(RtcpPacket::Nack {
                    media_ssrc, items, ..
                }) = p
                {
                    assert_eq!(media_ssrc, lb.members[speaker].ssrc);
                    nacked.extend(items.lost());
                }
            }
        }
    }
    // Asked once after the reorder wait, then once more a round trip later.
    assert_eq!(nacked, [205, 206, 205, 206], "{nacked:?}");
    assert_eq!(lb.sfu.counters().nacks_sent, 2);

    // The speaker resends 205: both listeners get it, late, in its place.
    let len = lb.rtp_packet(speaker, 205, &mut buf);
    let q = lb.send_rtp(speaker, &buf[..len]);
    let late: Vec<(usize, Vec<u8>)> = lb.deliver(q);
    assert_eq!(late.len(), 2);
    assert!(late.iter().all(|(_, p)| p[2..4] == 205u16.to_be_bytes()));
    assert_eq!(lb.sfu.counters().rtp_repaired, 1);
    for member in [nacking, plain] {
        assert!(!forwarded[&member].contains(&205));
    }
    // No NACK at all for a speaker that did not negotiate it.
    let (mut lb, speaker, _, _) = room(false);
    for seq in (0..5).chain(9..20) {
        lb.now += Duration::from_millis(20);
        let len = lb.rtp_packet(speaker, seq, &mut buf);
        let q = lb.send_rtp(speaker, &buf[..len]);
        assert!(lb.deliver_all(q).iter().all(|d| d.rtp));
    }
    assert_eq!(lb.sfu.counters().nacks_sent, 0);
}

#[test]
fn the_speakers_receiver_report_carries_its_listeners_loss() {
    let (mut lb, speaker, nacking, plain) = room(false);
    let got = speak(&mut lb, speaker, 0..20, speaker, &[]);
    // Each listener reports on its consumer stream: 10 % and 20 %.
    for (member, fraction) in [(nacking, 26u8), (plain, 51)] {
        let block = ReportBlock {
            ssrc: consumer_ssrc(&got, member),
            fraction_lost: fraction,
            cumulative_lost: 2,
            highest_sequence: 19,
            jitter: 0,
            last_sr: 0,
            delay_since_last_sr: 0,
        };
        let mut buf = [0u8; 64];
        let n = rtcp::write_receiver_report(&mut buf, 0x99, &[block]).unwrap();
        lb.send_rtcp(member, false, &buf[..n]);
    }
    // Over the next second choir reports on the speaker's stream: its own leg lost nothing, the
    // worse listener (of two) lost 20 %.
    let mut reported = None;
    for _ in 0..60 {
        lb.now += Duration::from_millis(20);
        let mut q = Queue::default();
        lb.sfu.handle_timeout(lb.now, &mut q);
        for d in lb.deliver_all(q) {
            if d.rtp || d.member != speaker {
                continue;
            }
            for p in rtcp::packets(&d.bytes) {
                if let Ok(RtcpPacket::ReceiverReport(rr)) = p {
                    let b = rr.reports.iter().next().unwrap();
                    reported = Some((b.fraction_lost, b.cumulative_lost));
                }
            }
        }
    }
    assert_eq!(
        reported,
        Some((51, 0)),
        "fraction lost from the listeners; cumulative loss the speaker's own leg's"
    );
}

#[test]
fn a_red_listener_gets_the_two_frames_before_each_packet_and_no_nack() {
    let mut lb = Loopback::new();
    let speaker = lb.join(CHANNEL, "speaker", true);
    let red = lb.join(CHANNEL, "red", false);
    let plain = lb.join(CHANNEL, "plain", false);
    let red_ssrc = lb.consume_caps(CHANNEL, red, speaker, true, true);
    lb.consume(CHANNEL, plain, speaker);
    lb.settle();
    // 300..310, 303 lost on the speaker's leg; 306 a DTX frame (one byte).
    let mut buf = [0u8; 2048];
    let mut got = BTreeMap::new();
    for seq in (300..310u16).filter(|&s| s != 303) {
        lb.now += Duration::from_millis(20);
        let mut len = lb.rtp_packet(speaker, seq, &mut buf);
        if seq == 306 {
            len = 21;
        }
        let q = lb.send_rtp(speaker, &buf[..len]);
        for (member, p) in lb.deliver(q) {
            got.insert((member, seq), p);
        }
    }
    let frame = |seq: u16| {
        let mut b = [0u8; 2048];
        let n = lb.rtp_packet(speaker, seq, &mut b);
        b[20..if seq == 306 { 21 } else { n }].to_vec()
    };
    for seq in (300..310u16).filter(|&s| s != 303) {
        let plain_copy = &got[&(plain, seq)];
        assert_eq!(
            plain_copy[1] & 0x7f,
            100,
            "plain Opus for the other listener"
        );
        let p = &got[&(red, seq)];
        assert_eq!(p[1] & 0x7f, 101, "{seq}: RED payload type");
        let h = rtp::parse(p).unwrap();
        assert_eq!(h.ssrc, red_ssrc);
        let blocks: Vec<_> = rtp::red::blocks(&p[h.header_len..h.header_len + h.payload_len])
            .unwrap()
            .collect();
        // The speech frames among the two before it that choir received.
        let earlier: Vec<u16> = [seq.wrapping_sub(2), seq.wrapping_sub(1)]
            .into_iter()
            .filter(|&s| (300..310).contains(&s) && s != 303 && s != 306)
            .collect();
        assert_eq!(blocks.len(), earlier.len() + 1, "{seq}: {blocks:?}");
        for (b, s) in blocks.iter().zip(&earlier) {
            assert_eq!(b.payload_type, 100);
            assert_eq!(b.timestamp_offset, u32::from(seq - s) * 960, "{seq}");
            assert_eq!(b.data, frame(*s), "{seq}: the frame of {s}");
        }
        let primary = blocks.last().unwrap();
        assert_eq!((primary.payload_type, primary.timestamp_offset), (100, 0));
        assert_eq!(primary.data, frame(seq));
    }
    // A RED consumer did not get NACK.
    assert!(nack(&mut lb, red, red_ssrc, &[305]).is_empty());
    assert_eq!(drops(&lb, "not_negotiated"), 1);
}

/// A 20 ms Opus frame of `seq` (TOC 0x78: hybrid fullband, 20 ms, one frame).
fn opus_frame(seq: u16) -> Vec<u8> {
    let mut f = vec![0x78];
    f.extend((0..40u16).map(|i| (i ^ seq) as u8));
    f
}

/// The RED packet a Chromium speaker (RED distance 2) sends as `seq`: its header from
/// `rtp_packet` with payload type 63, the frames of `seq - 2` and `seq - 1`, then its own.
fn red_packet(lb: &Loopback, speaker: usize, seq: u16, buf: &mut [u8]) -> usize {
    lb.rtp_packet(speaker, seq, buf);
    buf[1] = 63;
    let mut len = 20 + opus_frame(seq).len();
    buf[20..len].copy_from_slice(&opus_frame(seq));
    let earlier: Vec<(u32, Vec<u8>)> = [2u16, 1]
        .iter()
        .map(|&k| (u32::from(k) * 960, opus_frame(seq - k)))
        .collect();
    let earlier: Vec<(u32, &[u8])> = earlier.iter().map(|(o, f)| (*o, &f[..])).collect();
    len = rtp::red::encode(buf, len, 20, 111, &earlier).unwrap();
    len
}

#[test]
fn a_red_speakers_lost_packets_are_recovered_for_plain_listeners() {
    let mut lb = Loopback::new();
    let speaker = lb.join_codecs(CHANNEL, "speaker", true, false, true);
    let plain = lb.join(CHANNEL, "plain", false);
    let red = lb.join(CHANNEL, "red", false);
    lb.consume(CHANNEL, plain, speaker);
    lb.consume_caps(CHANNEL, red, speaker, false, true);
    lb.settle();
    // The speaker's leg loses 105; 110 and 111; 115, 116 and 117 (RED repeats only two back).
    let lost = [105u16, 110, 111, 115, 116, 117];
    let mut buf = [0u8; 2048];
    let mut order = Vec::new();
    let mut got = BTreeMap::new();
    for seq in (100..122u16).filter(|s| !lost.contains(s)) {
        lb.now += Duration::from_millis(20);
        let len = red_packet(&lb, speaker, seq, &mut buf);
        let q = lb.send_rtp(speaker, &buf[..len]);
        for (member, p) in lb.deliver(q) {
            let h = rtp::parse(&p).unwrap();
            if member == plain {
                order.push(h.sequence);
            }
            got.insert((member, h.sequence), p);
        }
    }
    // The plain listener: plain Opus, every packet but 115, byte-identical frames, in order of
    // sequence and with timestamps 960 apart, whether sent or recovered.
    let packets: Vec<_> = got
        .iter()
        .filter(|((m, _), _)| *m == plain)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(packets.len(), 22 - 1, "all but 115");
    let first = rtp::parse(packets[0]).unwrap();
    for p in &packets {
        let h = rtp::parse(p).unwrap();
        assert_eq!(h.payload_type, 100);
        let seq = 100 + h.sequence.wrapping_sub(first.sequence);
        assert_ne!(seq, 115);
        assert_eq!(
            &p[h.header_len..h.header_len + h.payload_len],
            opus_frame(seq),
            "{seq}"
        );
        assert_eq!(
            h.timestamp.wrapping_sub(first.timestamp),
            u32::from(seq - 100) * 960,
            "{seq}"
        );
    }
    let in_order = order.windows(2).all(|w| w[1].wrapping_sub(w[0]) < 0x8000);
    assert!(in_order, "recovered ones before their carrier: {order:?}");
    assert_eq!(
        lb.sfu.counters().rtp_recovered,
        5,
        "105, 110, 111, 116, 117"
    );
    // The RED listener's packet 112 repeats 110 and 111, recovered.
    let p = got
        .iter()
        .filter(|((m, _), _)| *m == red)
        .map(|(_, p)| p)
        .find(|p| {
            let h = rtp::parse(p).unwrap();
            rtp::red::blocks(&p[h.header_len..h.header_len + h.payload_len])
                .unwrap()
                .last()
                .unwrap()
                .data
                == opus_frame(112)
        })
        .unwrap();
    let h = rtp::parse(p).unwrap();
    let frames: Vec<_> = rtp::red::blocks(&p[h.header_len..h.header_len + h.payload_len])
        .unwrap()
        .map(|b| b.data.to_vec())
        .collect();
    assert_eq!(frames, [opus_frame(110), opus_frame(111), opus_frame(112)]);
    // 110 arriving late (or retransmitted) after its recovery is a duplicate; a truncated RED
    // payload is dropped; neither reaches anyone.
    let len = red_packet(&lb, speaker, 110, &mut buf);
    let q = lb.send_rtp(speaker, &buf[..len]);
    assert!(lb.deliver(q).is_empty());
    let len = red_packet(&lb, speaker, 122, &mut buf);
    // The first block's length runs past the payload.
    (buf[22], buf[23]) = (buf[22] | 0x03, 0xff);
    let q = lb.send_rtp(speaker, &buf[..len]);
    assert!(lb.deliver(q).is_empty());
    let c = lb.sfu.counters();
    assert_eq!(
        (
            c.dropped("rtp", "red_duplicate"),
            c.dropped("rtp", "red_truncated")
        ),
        (1, 1)
    );
}
