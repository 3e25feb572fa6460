//! Speaking detection with a fake clock and synthetic packets: a real [`Sfu`] with rooms and
//! producers made through the API calls; packets go straight to each producer's meter (the
//! media path's SRTP and routing are covered by `tests/speaking.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::super::{Announced, Egress, Path, Settings, Sfu};
use super::{SpeakingSettings, STALE};
use crate::sfu::api::{
    CreateTransportRequest, Direction, Event, ProduceRequest, ProducerRequest, RoomEvent,
};
use crate::wire::rtp;

struct Nowhere;
impl Egress for Nowhere {
    fn send(&mut self, _: Path, _: &[u8]) {}
}

/// How a packet carries its level.
#[derive(Clone, Copy, Debug)]
enum Ext {
    OneByte(u8),
    TwoByte(u8),
    Missing,
    /// A two-byte element where one is due.
    WrongLength,
}

/// Audio-level extension id the fake browser signals.
const EXT_ID: u8 = 3;

/// A 20 ms CELT packet (TOC 0xf8) with the level element in `ext`; V flag set.
fn packet(seq: u16, ts: u32, ext: Ext) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    let block: Vec<u8> = match ext {
        Ext::OneByte(level) => vec![0xBE, 0xDE, 0, 1, EXT_ID << 4, 0x80 | level, 0, 0],
        Ext::TwoByte(level) => vec![0x10, 0x00, 0, 1, EXT_ID, 1, 0x80 | level, 0],
        Ext::WrongLength => vec![0xBE, 0xDE, 0, 1, (EXT_ID << 4) | 1, 20, 20, 0],
        Ext::Missing => vec![0xBE, 0xDE, 0, 1, 0x51, 0xaa, 0xbb, 0],
    };
    p.extend_from_slice(&block);
    p.extend_from_slice(&[0xf8, 1, 2, 3, 4, 5, 6, 7]);
    p
}

struct Stream {
    pk: usize,
    seq: u16,
    ts: u32,
}

struct Room {
    sfu: Sfu,
    start: Instant,
    now: Instant,
    streams: Vec<Stream>,
    /// Every event, with the ms since the start at which it came out.
    events: Vec<(u64, RoomEvent)>,
}

fn settings() -> Settings {
    Settings {
        announced: vec![Announced {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp: true,
            tcp: false,
        }],
        consent_timeout: Duration::from_secs(30),
        dtls_timeout: Duration::from_secs(30),
        consumer_hold: Duration::ZERO,
        dtls_config: crate::wire::dtls::dtls_config(),
        identity: crate::wire::dtls::DtlsIdentity::generate().unwrap(),
    }
}

impl Room {
    /// A room "r" with one producer per user, the stream's timestamps starting at `ts0`.
    fn new(users: &[&str], speaking: SpeakingSettings, ts0: u32) -> Room {
        let start = Instant::now();
        let mut sfu = Sfu::new(settings(), start);
        let mut limits = sfu.limits();
        limits.speaking = speaking;
        sfu.set_limits(limits);
        sfu.open_room("r");
        let mut streams = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let req = CreateTransportRequest {
                channel_id: "r".into(),
                user_id: (*user).into(),
                direction: Direction::Send,
            };
            sfu.create_transport(&req, 40_000 + i as u16, start)
                .unwrap();
            let rtp = serde_json::from_value(serde_json::json!({
                "codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}],
                "headerExtensions":[
                    {"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":1},
                    {"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":EXT_ID}],
                "encodings":[{"ssrc":1000 + i}],"rtcp":{"cname":user}}))
            .unwrap();
            let id = sfu
                .produce(&ProduceRequest {
                    channel_id: "r".into(),
                    user_id: (*user).into(),
                    kind: "audio".into(),
                    rtp_parameters: rtp,
                    paused: false,
                })
                .unwrap();
            streams.push(Stream {
                pk: sfu.producer_ids[&id],
                seq: 0,
                ts: ts0,
            });
        }
        // The speaking clock starts: windows are [0, 200 ms), [200, 400 ms), ...
        sfu.handle_timeout(start, &mut Nowhere);
        sfu.take_events();
        Room {
            sfu,
            start,
            now: start,
            streams,
            events: Vec::new(),
        }
    }

    fn ms(&self) -> u64 {
        self.now.duration_since(self.start).as_millis() as u64
    }

    fn feed(&mut self, who: usize, ext: Ext) {
        let s = &mut self.streams[who];
        let p = packet(s.seq, s.ts, ext);
        let h = rtp::parse(&p).unwrap();
        let sfu = &mut self.sfu;
        if let Some(prod) = sfu.producers.get_mut(s.pk) {
            if !prod.paused {
                prod.speaker.on_packet(&h, &p, &mut sfu.counters);
            }
        }
    }

    /// Runs `ms` in 20 ms steps: each step, `script(ms, stream)` says what that stream's packet
    /// carries (None: no packet; the timestamp advances anyway, as a sender's clock does).
    fn run(&mut self, ms: u64, mut script: impl FnMut(u64, usize) -> Option<Ext>) {
        for _ in 0..ms / 20 {
            let t = self.ms();
            for who in 0..self.streams.len() {
                if let Some(ext) = script(t, who) {
                    self.feed(who, ext);
                    self.streams[who].seq = self.streams[who].seq.wrapping_add(1);
                }
                self.streams[who].ts = self.streams[who].ts.wrapping_add(960);
            }
            self.now += Duration::from_millis(20);
            self.sfu.handle_timeout(self.now, &mut Nowhere);
            self.collect();
        }
    }

    fn collect(&mut self) {
        let t = self.ms();
        for e in self.sfu.take_events() {
            self.events.push((t, e));
        }
    }

    /// (ms, user, speaking) of every speakingChanged.
    fn speaking(&self) -> Vec<(u64, String, bool)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match &e.event {
                Event::SpeakingChanged {
                    user_id, speaking, ..
                } => Some((*t, user_id.clone(), *speaking)),
                _ => None,
            })
            .collect()
    }

    /// (ms, user) of every dominantSpeaker.
    fn dominant(&self) -> Vec<(u64, String)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match &e.event {
                Event::DominantSpeaker { user_id, .. } => Some((*t, user_id.clone())),
                _ => None,
            })
            .collect()
    }
}

const LOUD: Ext = Ext::OneByte(20);
const SILENT: Ext = Ext::OneByte(127);

fn one(script: impl Fn(u64) -> Option<Ext>) -> impl FnMut(u64, usize) -> Option<Ext> {
    move |t, _| script(t)
}

#[test]
fn a_burst_turns_on_and_off_once_within_the_bounds() {
    let mut r = Room::new(&["a"], SpeakingSettings::default(), 1000);
    r.run(
        4000,
        one(|t| {
            Some(if (1000..2000).contains(&t) {
                LOUD
            } else {
                SILENT
            })
        }),
    );
    let s = r.speaking();
    assert_eq!(s.len(), 2, "{s:?}");
    let (on, off) = (&s[0], &s[1]);
    assert!(on.2 && !off.2);
    // On within a window (+ the window's own 20 ms tick) of the onset; off after the hang.
    assert!((1000..=1220).contains(&on.0), "{s:?}");
    assert!((2600..=2820).contains(&off.0), "{s:?}");
    // The room of one has its speaker as dominant.
    assert_eq!(r.dominant(), vec![(on.0, "a".to_string())]);
    assert_eq!(r.sfu.counters.speaking_started, 1);
    assert_eq!(r.sfu.counters.speaking_stopped, 1);
    assert_eq!(r.sfu.counters.dominant_changes, 1);
}

#[test]
fn threshold_and_ratio_boundaries() {
    // Exactly at the threshold (−40 dBov) is loud; one dB below is not.
    for (level, speaks) in [(40u8, true), (41, false)] {
        let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
        r.run(1000, one(|_| Some(Ext::OneByte(level))));
        assert_eq!(!r.speaking().is_empty(), speaks, "level -{level}");
    }
    // 4 loud packets of 20 ms in each 200 ms window: 40 % starts; 3 (30 %) does not.
    for (loud_per_window, speaks) in [(4u64, true), (3, false)] {
        let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
        r.run(
            2000,
            one(|t| {
                Some(if (t % 200) / 20 < loud_per_window {
                    LOUD
                } else {
                    SILENT
                })
            }),
        );
        assert_eq!(
            !r.speaking().is_empty(),
            speaks,
            "{loud_per_window} per window"
        );
    }
}

#[test]
fn a_short_pause_is_absorbed_by_the_hang_time() {
    let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
    // 1 s of speech, a 400 ms breath (< 600 ms hang), 1 s of speech, silence.
    r.run(
        4000,
        one(|t| {
            Some(if t < 1000 || (1400..2400).contains(&t) {
                LOUD
            } else {
                SILENT
            })
        }),
    );
    let s = r.speaking();
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(s[0].2 && !s[1].2 && s[1].0 >= 3000);
}

#[test]
fn dtx_gaps_count_as_silence() {
    let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
    // DTX: during silence one packet per 400 ms; each loud blip is one packet after a 400 ms
    // timestamp jump, which counts only its own 20 ms: never 40 % of a window.
    r.run(4000, one(|t| (t % 400 == 0).then_some(LOUD)));
    assert!(r.speaking().is_empty(), "{:?}", r.speaking());
    let heard = r.sfu.producers[r.streams[0].pk].speaker.window.heard;
    assert!(heard <= 960, "{heard}");
    // Speech, then DTX: off after the hang, like silence.
    r.run(1000, one(|_| Some(LOUD)));
    r.run(2000, one(|t| (t % 400 == 0).then_some(SILENT)));
    let s = r.speaking();
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(s[1].0 - 5000 <= 820, "{s:?}");
}

#[test]
fn stale_input_stops_speaking() {
    // Packets stop while loud: off after the hang (600 ms)...
    let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
    r.run(3000, one(|t| (t < 1000).then_some(LOUD)));
    let s = r.speaking();
    assert_eq!(s.len(), 2);
    assert!((1600..=1820).contains(&s[1].0), "{s:?}");
    // ... or, with a long hang, after STALE without any packet.
    let hang = Duration::from_secs(10);
    let mut r = Room::new(
        &["a"],
        SpeakingSettings {
            hang,
            ..Default::default()
        },
        0,
    );
    r.run(4000, one(|t| (t < 1000).then_some(LOUD)));
    let s = r.speaking();
    assert_eq!(s.len(), 2);
    let stale = STALE.as_millis() as u64;
    assert!((1000 + stale..=1220 + stale).contains(&s[1].0), "{s:?}");
    // A stale stream is not listed in audioLevels: the last one is empty.
    let last = r.events.iter().rev().find_map(|(_, e)| match &e.event {
        Event::AudioLevels { levels } => Some(levels.clone()),
        _ => None,
    });
    assert_eq!(last, Some(vec![]));
}

#[test]
fn pause_and_close_stop_speaking_first() {
    let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
    r.run(1000, |_, _| Some(LOUD));
    assert_eq!(r.speaking().len(), 2);
    let id = r.sfu.producers[r.streams[0].pk].id.clone();
    let req = ProducerRequest {
        channel_id: "r".into(),
        user_id: "a".into(),
        producer_id: id.clone(),
    };
    r.sfu.set_producer_paused(&req, true).unwrap();
    r.collect();
    let names: Vec<&str> = r
        .events
        .iter()
        .rev()
        .take(2)
        .map(|(_, e)| e.event.name())
        .collect();
    assert_eq!(names, ["producerPaused", "speakingChanged"]);
    let list = r.sfu.list_producers("r", "b").unwrap();
    assert!(list[0].paused && !list[0].speaking, "{list:?}");
    // Paused: loud packets are not counted (the media path drops them); no new "on".
    r.run(1000, |_, _| Some(LOUD));
    assert_eq!(r.speaking().len(), 3);
    r.sfu.set_producer_paused(&req, false).unwrap();
    r.run(400, |_, _| Some(LOUD));
    assert_eq!(r.speaking().len(), 4, "{:?}", r.speaking());
    assert!(r.sfu.list_producers("r", "b").unwrap()[0].speaking);
    // Leave: speakingChanged false, producerClosed, participantLeft, in that order.
    let before = r.events.len();
    r.sfu
        .leave(&crate::sfu::api::ParticipantRequest {
            channel_id: "r".into(),
            user_id: "a".into(),
        })
        .unwrap();
    r.collect();
    let names: Vec<&str> = r.events[before..]
        .iter()
        .map(|(_, e)| e.event.name())
        .collect();
    assert_eq!(
        names,
        ["speakingChanged", "producerClosed", "participantLeft"]
    );
}

#[test]
fn both_extension_forms_count_the_same() {
    for ext in [Ext::OneByte(30), Ext::TwoByte(30)] {
        let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
        r.run(1000, one(|_| Some(ext)));
        assert_eq!(r.speaking().len(), 1, "{ext:?}");
    }
}

#[test]
fn missing_or_wrong_length_extension_is_ignored() {
    let mut r = Room::new(&["a"], SpeakingSettings::default(), 0);
    r.run(1000, one(|_| Some(Ext::Missing)));
    assert!(r.speaking().is_empty());
    assert_eq!(r.sfu.counters.dropped("audio_level", "wrong_length"), 0);
    r.run(1000, one(|_| Some(Ext::WrongLength)));
    assert!(r.speaking().is_empty());
    assert_eq!(r.sfu.counters.dropped("audio_level", "wrong_length"), 50);
}

#[test]
fn timestamps_wrap_around() {
    // The timestamp crosses 2^32 in the middle of the burst: still one window of 200 ms each.
    let mut r = Room::new(&["a"], SpeakingSettings::default(), u32::MAX - 960 * 20);
    r.run(1000, one(|_| Some(LOUD)));
    let activity = r.sfu.producers[r.streams[0].pk].speaker.activity;
    let s = r.speaking();
    assert_eq!(s.len(), 1);
    assert!(s[0].0 <= 220, "{s:?}");
    assert!(activity > 0.4, "{activity}");
    // A reordered packet (older timestamp) adds nothing; a far jump back restarts the timeline.
    let heard = |r: &Room| r.sfu.producers[r.streams[0].pk].speaker.window.heard;
    let before = heard(&r);
    r.streams[0].ts = r.streams[0].ts.wrapping_sub(960 * 3);
    r.feed(0, LOUD);
    assert_eq!(heard(&r), before);
    r.streams[0].ts = r.streams[0].ts.wrapping_sub(48_000 * 10);
    r.feed(0, LOUD);
    assert_eq!(heard(&r), before + 960);
}

#[test]
fn disabled_detection_sends_nothing() {
    let off = SpeakingSettings {
        interval: Duration::ZERO,
        ..Default::default()
    };
    let mut r = Room::new(&["a"], off, 0);
    r.run(2000, one(|_| Some(LOUD)));
    assert!(r.events.is_empty());
    assert_eq!(r.sfu.speaking_poll_timeout(), None);
}

#[test]
fn audio_levels_on_three_db_changes_loudest_first() {
    let mut r = Room::new(&["a", "b", "c"], SpeakingSettings::default(), 0);
    // a steady at −20, b steps −30 → −31 (under 3 dB) → −36, c silent.
    r.run(1800, |t, who| {
        Some(match who {
            0 => Ext::OneByte(20),
            1 if t < 600 => Ext::OneByte(30),
            1 if t < 1200 => Ext::OneByte(31),
            1 => Ext::OneByte(36),
            _ => SILENT,
        })
    });
    let levels: Vec<(u64, Vec<(String, i8)>)> = r
        .events
        .iter()
        .filter_map(|(t, e)| match &e.event {
            Event::AudioLevels { levels } => Some((
                *t,
                levels
                    .iter()
                    .map(|l| (l.user_id.clone(), l.volume))
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    let a = |v: i8| ("a".to_string(), v);
    let b = |v: i8| ("b".to_string(), v);
    assert_eq!(levels.len(), 2, "{levels:?}");
    assert_eq!(levels[0].1, vec![a(-20), b(-30)]);
    assert_eq!(levels[1].1, vec![a(-20), b(-36)]);
    assert!((1200..=1420).contains(&levels[1].0));
}

/// Two speakers at the same level alternating in turns of `turn_ms`.
fn alternate(turn_ms: u64) -> impl FnMut(u64, usize) -> Option<Ext> {
    move |t, who| {
        Some(if (t / turn_ms) as usize % 2 == who {
            LOUD
        } else {
            SILENT
        })
    }
}

#[test]
fn dominant_speaker_does_not_flap_between_equal_alternating_speakers() {
    for turn in [200, 400] {
        let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
        r.run(20_000, alternate(turn));
        assert_eq!(
            r.dominant().len(),
            1,
            "turns of {turn} ms: {:?}",
            r.dominant()
        );
    }
    // Both talking at once, equally: the first stays.
    let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
    r.run(20_000, |_, _| Some(LOUD));
    assert_eq!(r.dominant().len(), 1);
}

#[test]
fn dominant_speaker_switches_when_one_clearly_takes_over() {
    // a talks, then b takes over and a falls silent.
    let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
    r.run(6000, |t, who| {
        let on = if who == 0 { t < 2000 } else { t >= 2000 };
        Some(if on { LOUD } else { SILENT })
    });
    let d = r.dominant();
    assert_eq!(
        d.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "{d:?}"
    );
    assert!(d[1].0 - 2000 <= 1500, "{d:?}");
    // b talks all the time; a, dominant, only says "mm" now and then (1 window in 5): b takes
    // over although a keeps "speaking".
    let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
    r.run(2000, |_, who| Some(if who == 0 { LOUD } else { SILENT }));
    r.run(8000, |t, who| {
        let on = who == 1 || (t / 200) % 3 == 0;
        Some(if on { LOUD } else { SILENT })
    });
    let d = r.dominant();
    assert_eq!(
        d.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "{d:?}"
    );
    let a_speaking = r.sfu.producers[r.streams[0].pk].speaker.speaking;
    assert!(a_speaking, "a should still be speaking now and then");
    // An interjection while the dominant speaker pauses for a second does not take over.
    let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
    r.run(4000, |t, who| {
        let on = match who {
            0 => !(2000..3000).contains(&t),
            _ => (2300..2700).contains(&t),
        };
        Some(if on { LOUD } else { SILENT })
    });
    assert_eq!(r.dominant().len(), 1, "{:?}", r.dominant());
    // The dominant speaker's producer closes: the next speaker takes over.
    let mut r = Room::new(&["a", "b"], SpeakingSettings::default(), 0);
    r.run(1000, |_, who| Some(if who == 0 { LOUD } else { SILENT }));
    r.sfu
        .leave(&crate::sfu::api::ParticipantRequest {
            channel_id: "r".into(),
            user_id: "a".into(),
        })
        .unwrap();
    r.run(1000, |_, who| Some(if who == 1 { LOUD } else { SILENT }));
    let d = r.dominant();
    assert_eq!(
        d.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "{d:?}"
    );
}
