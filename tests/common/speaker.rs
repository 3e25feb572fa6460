//! Scripted speakers for the speaking tests: `choir::client` transports producing Opus with
//! RFC 6464 audio levels over loopback UDP, the script that plays them, and a push channel read
//! on a thread (tests/speaking.rs, tests/cluster_speaking.rs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use choir::client::{ClientTransport, ServerParams};
use choir::wire::dtls::{self, DtlsIdentity, DtlsRole};
use serde_json::{json, Value};

use crate::common::Daemon;

/// choir's defaults: window, hang.
pub const TICK: Duration = Duration::from_millis(200);
pub const HANG: Duration = Duration::from_millis(600);
/// Allowed latency on top (issue 15): the packet path, the shard's 20 ms timer, SSE, a loaded
/// 2-core machine.
pub const SLACK: Duration = Duration::from_millis(300);
pub const LOUD: u8 = 20;
pub const SILENT: u8 = 127;

/// A browser's send side: one transport producing Opus with the audio level extension (id 1).
pub struct Speaker {
    pub socket: UdpSocket,
    pub client: ClientTransport,
    pub server: SocketAddr,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub producer_id: String,
    /// The level sent now; `None`: sending nothing.
    pub level: Option<u8>,
}

impl Speaker {
    pub fn join(d: &Daemon, channel: &str, user: &str, ssrc: u32) -> Speaker {
        let (s, _) = d.get(&format!("rtp-capabilities/{channel}"));
        assert_eq!(s, 200);
        let t = d.ok(
            "create-transport",
            &json!({"channelId":channel,"userId":user,"direction":"send"}),
        );
        let c = &t["iceCandidates"].as_array().unwrap()[0];
        let server = SocketAddr::new(
            c["ip"].as_str().unwrap().parse().unwrap(),
            c["port"].as_u64().unwrap() as u16,
        );
        let text = |v: &Value| v.as_str().unwrap().to_string();
        let client = ClientTransport::new(
            ServerParams {
                address: server,
                ufrag: text(&t["iceParameters"]["usernameFragment"]),
                password: text(&t["iceParameters"]["password"]),
                fingerprint: text(&t["dtlsParameters"]["fingerprints"][0]["value"]),
            },
            DtlsRole::Client,
            dtls::dtls_config(),
            DtlsIdentity::generate().unwrap(),
            Instant::now(),
        );
        d.ok(
            "connect-transport",
            &json!({"channelId":channel,"userId":user,"transportId":t["id"],
                "dtlsParameters":{"role":client.signalled_role(),
                "fingerprints":[{"algorithm":"sha-256","value":client.fingerprint()}]}}),
        );
        let rtp = json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}],
            "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1}],
            "encodings":[{"ssrc":ssrc}],"rtcp":{"cname":user}});
        let p = d.ok(
            "produce",
            &json!({"channelId":channel,"userId":user,"kind":"audio","rtpParameters":rtp}),
        );
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut speaker = Speaker {
            socket,
            client,
            server,
            ssrc,
            seq: 0,
            ts: 0x7fff_0000,
            producer_id: p["producerId"].as_str().unwrap().into(),
            level: Some(SILENT),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !speaker.client.is_connected() {
            assert!(Instant::now() < deadline, "{user} did not connect");
            speaker.pump(Instant::now());
            std::thread::sleep(Duration::from_millis(2));
        }
        speaker
    }

    /// ICE, DTLS and consent both ways.
    pub fn pump(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        while let Some(n) = self.client.poll_transmit(now, &mut buf) {
            let _ = self.socket.send_to(&buf[..n], self.server);
        }
        while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
            self.client.handle_datagram(&mut buf[..n], now);
        }
    }

    /// One 20 ms packet: the level (one-byte form, V flag set), a CELT 20 ms TOC, a payload.
    pub fn send(&mut self, level: u8) {
        let mut buf = [0u8; 2048];
        buf[..2].copy_from_slice(&[0x90, 111]);
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        buf[12..20].copy_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x80 | level, 0, 0]);
        buf[20] = 0xf8;
        let len = 80;
        let n = self.client.protect_rtp(&mut buf, len).unwrap();
        let _ = self.socket.send_to(&buf[..n], self.server);
        self.seq = self.seq.wrapping_add(1);
    }
}

/// Sends every speaker's current level each 20 ms (timestamps advance while silent too, as a
/// browser's do) for `d`, applying `script` (ms since `start` → changes) as time passes.
pub fn play(
    speakers: &mut [Speaker],
    start: Instant,
    d: Duration,
    mut script: impl FnMut(u64, &mut [Speaker]),
) {
    let end = Instant::now() + d;
    let mut next = Instant::now();
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next {
            script(now.duration_since(start).as_millis() as u64, speakers);
            for s in speakers.iter_mut() {
                if let Some(level) = s.level {
                    s.send(level);
                }
                s.ts = s.ts.wrapping_add(960);
            }
            next += Duration::from_millis(20);
        }
        for s in speakers.iter_mut() {
            s.pump(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A push channel read on a thread: each event with the instant it arrived.
pub struct Events {
    pub rx: mpsc::Receiver<(Instant, Value)>,
    pub seen: Vec<(Instant, Value)>,
}

impl Events {
    pub fn open(d: &Daemon, channel: &str, user: &str, levels: bool) -> Events {
        let q = if levels { "?levels=1" } else { "" };
        let resp = ureq::get(&d.url(&format!("events/{channel}/{user}{q}")))
            .timeout(Duration::from_secs(60))
            .call()
            .expect("events");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(resp.into_reader())
                .lines()
                .map_while(Result::ok)
            {
                if let Some(data) = line.strip_prefix("data: ") {
                    let v: Value = serde_json::from_str(data).unwrap();
                    if tx.send((Instant::now(), v)).is_err() {
                        return;
                    }
                }
            }
        });
        Events {
            rx,
            seen: Vec::new(),
        }
    }

    /// Everything that arrived so far.
    pub fn drain(&mut self) -> &[(Instant, Value)] {
        self.seen.extend(self.rx.try_iter());
        &self.seen
    }

    /// Waits up to `timeout` for an event matching `f`.
    pub fn wait(
        &mut self,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.drain().iter().find(|(_, v)| f(v)) {
                return Some(e.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if let Ok(e) = self.rx.recv_timeout(left) {
                self.seen.push(e);
            }
        }
    }

    pub fn of_type(&mut self, kind: &str) -> Vec<(Instant, Value)> {
        self.drain()
            .iter()
            .filter(|(_, v)| v["type"] == kind)
            .cloned()
            .collect()
    }
}

pub fn is<'a>(kind: &'static str, user: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| v["type"] == kind && v["userId"] == user
}
