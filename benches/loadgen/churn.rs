//! Churn beside the steady load (`--churn RATE`; SOAK.md): while the steady rooms are measured,
//! participants keep joining and leaving through the voice API, RATE joins per second, in turn
//! (of every four):
//!
//! - two *leave*: both transports, ICE and DTLS, a producer publishing Opus-sized SRTP at 50
//!   packets/s and a consumer of every producer in the room; after `--churn-life` it calls
//!   `leave` and closes its sockets;
//! - one *vanish*: the same, but at the end it goes silent (no STUN, nothing sent: a closed tab);
//!   choir must remove it when its consent expires (`--consent-timeout`);
//! - one *never*: creates both transports (connecting the send one through the API) and never
//!   sends a datagram; choir must remove it at its join deadline (`--join-timeout`).
//!
//! Every other churner of each kind joins a steady room (so the steady speakers gain and lose
//! consumers while they are measured); the others get a room of their own, which choir must
//! remove when it empties. The steady participants' losses are measured as always (churners
//! are not counted). At the end ([`Churn::finish`]) the server must be back where it was before
//! the churn: rooms, participants, transports, producers, consumers and bound ports as in
//! `/health`, open fds, RSS within the tolerance; one consent timeout per vanished churner and
//! one join timeout per never-connecting one.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use choir::client::ClientTransport;
use serde_json::{json, Value};

use crate::setup::{self, Api, Clients};
use crate::sys;
use crate::worker::{PACKET, PERIOD};

static FAILED: AtomicBool = AtomicBool::new(false);

/// Whether a churn run ended with the server not back at its baseline (or a churner failed).
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Leave,
    Vanish,
    Never,
}

const TURN: [Kind; 4] = [Kind::Leave, Kind::Vanish, Kind::Leave, Kind::Never];

/// How to churn.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Joins per second.
    pub rate: f64,
    /// How long a connecting churner stays before it leaves or vanishes.
    pub life: Duration,
    /// choir's consent timeout and join deadline (how long removals may take).
    pub consent: Duration,
    pub join: Duration,
    /// RSS at the end within this fraction of the baseline.
    pub rss_tolerance: f64,
}

#[derive(Debug, Default)]
struct Tally {
    joined: [u64; 3],
    connected: u64,
    /// Churners in a steady room that received forwarded RTP.
    heard: u64,
    left: u64,
    vanished: u64,
    never: u64,
    failures: u64,
    first_failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, e: String) {
        self.failures += 1;
        if self.first_failures.len() < 5 {
            self.first_failures.push(e);
        }
    }
}

/// The server's population, from `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts([u64; 6]);

const COUNTED: [&str; 6] = [
    "rooms",
    "participants",
    "transports",
    "producers",
    "consumers",
    "boundPorts",
];

impl Counts {
    fn of(api: &Api) -> Result<Counts, String> {
        let h = api.get("health")?;
        let mut c = [0; 6];
        for (slot, key) in c.iter_mut().zip(COUNTED) {
            *slot = h[key].as_u64().ok_or(format!("health: no {key}"))?;
        }
        Ok(Counts(c))
    }

    fn show(&self) -> String {
        let parts: Vec<String> = COUNTED
            .iter()
            .zip(self.0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        parts.join(", ")
    }
}

/// (consent timeouts, join timeouts) so far; the second is absent on a choir without a join
/// deadline.
fn removals(api: &Api) -> (u64, Option<u64>) {
    let stats = api.get("stats").unwrap_or(Value::Null);
    let t = &stats["total"];
    (
        t["consentTimeouts"].as_u64().unwrap_or(0),
        t["joinTimeouts"].as_u64(),
    )
}

struct Leg {
    socket: UdpSocket,
    client: Box<ClientTransport>,
}

struct Churner {
    n: u64,
    kind: Kind,
    room: String,
    user: String,
    steady_room: bool,
    /// Send leg, recv leg.
    legs: Vec<Leg>,
    ssrc: u32,
    seq: u16,
    next_packet: Instant,
    ends: Instant,
    /// Silent (vanished) until then, when its sockets are closed.
    silent_until: Option<Instant>,
    heard: u64,
}

/// A churn run in progress: a thread joining and removing churners.
pub struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Tally>>,
    api: Api,
    pid: Option<u32>,
    spec: Spec,
    base: Counts,
    fds0: u64,
    rss0: u64,
    removals0: (u64, Option<u64>),
    started: Instant,
}

impl Churn {
    /// Takes the baseline and starts churning against choir at `url` (`pid`: its process).
    /// `steady`: the steady rooms' names; `cpu`: where the churn thread runs.
    pub fn start(
        url: &str,
        pid: Option<u32>,
        steady: Vec<String>,
        cpu: Option<usize>,
        spec: Spec,
    ) -> Result<Churn, String> {
        let api = Api::new(url);
        let base = Counts::of(&api)?;
        let removals0 = removals(&api);
        let fds0 = pid.and_then(sys::fd_count).unwrap_or(0);
        let rss0 = pid.and_then(sys::rss_kib).unwrap_or(0);
        eprintln!(
            "churn: {} joins/s, life {:?}; baseline {}, fds {fds0}, RSS {:.1} MiB",
            spec.rate,
            spec.life,
            base.show(),
            rss0 as f64 / 1024.0
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, spec, url) = (stop.clone(), spec.clone(), url.to_string());
            std::thread::Builder::new()
                .name("loadgen-churn".into())
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        let _ = sys::pin_to(cpu);
                    }
                    drive(&url, &steady, &spec, &stop)
                })
                .map_err(|e| format!("churn thread: {e}"))?
        };
        Ok(Churn {
            stop,
            thread: Some(thread),
            api,
            pid,
            spec,
            base,
            fds0,
            rss0,
            removals0,
            started: Instant::now(),
        })
    }

    /// Stops joining, lets every churner leave or vanish, waits (bounded) for choir to remove
    /// them, and compares the server with the baseline. Returns the report; [`failed`] tells
    /// whether it passed.
    pub fn finish(mut self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(t)) => t,
            _ => {
                let mut t = Tally::default();
                t.fail("the churn thread panicked".into());
                t
            }
        };
        // Removals take up to the consent timeout or the join deadline after the last churner.
        let deadline =
            Instant::now() + self.spec.consent.max(self.spec.join) + Duration::from_secs(15);
        let settled = Instant::now();
        let mut counts = Counts::of(&self.api);
        while counts.as_ref() != Ok(&self.base) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            counts = Counts::of(&self.api);
        }
        let counts_after = settled.elapsed().as_secs_f64();
        // The churn thread's API connection closes with it: give choir a moment to see that.
        let fd_deadline = Instant::now() + Duration::from_secs(5);
        let fds = || self.pid.and_then(sys::fd_count).unwrap_or(0);
        while fds() > self.fds0 && Instant::now() < fd_deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (fds, rss) = (fds(), self.pid.and_then(sys::rss_kib).unwrap_or(0));
        let (consent, join) = removals(&self.api);
        let mut problems = Vec::new();
        match &counts {
            Ok(c) if *c == self.base => {}
            Ok(c) => problems.push(format!(
                "server holds {} (baseline {})",
                c.show(),
                self.base.show()
            )),
            Err(e) => problems.push(e.clone()),
        }
        // Fewer than at the baseline is no leak: an idle keep-alive connection of the
        // generator's API pool may have closed meanwhile.
        if fds > self.fds0 {
            problems.push(format!("{fds} fds open (baseline {})", self.fds0));
        }
        let drift = (rss as f64 - self.rss0 as f64) / self.rss0.max(1) as f64;
        if self.rss0 > 0 && drift.abs() > self.spec.rss_tolerance {
            problems.push(format!(
                "RSS {:.1} MiB, {:+.1} % from the baseline",
                rss as f64 / 1024.0,
                100.0 * drift
            ));
        }
        let consent_timeouts = consent - self.removals0.0;
        if consent_timeouts != tally.vanished {
            problems.push(format!(
                "{consent_timeouts} consent timeouts for {} vanished churners",
                tally.vanished
            ));
        }
        let join_timeouts = match (join, self.removals0.1) {
            (Some(j), Some(j0)) => {
                if j - j0 != tally.never {
                    problems.push(format!(
                        "{} join timeouts for {} never-connecting churners",
                        j - j0,
                        tally.never
                    ));
                }
                format!("{}", j - j0)
            }
            _ => "? (this choir counts none)".into(),
        };
        if tally.failures > 0 {
            problems.push(format!(
                "{} churners failed, first: {:?}",
                tally.failures, tally.first_failures
            ));
            tally.failures = 0;
        }
        let [leave, vanish, never] = tally.joined;
        let mut report = format!(
            "churn: {} joins in {secs:.0} s ({leave} leave, {vanish} vanish, {never} never connect); \
             {} connected, {} heard their steady room, {} left, consent timeouts {consent_timeouts}, \
             join timeouts {join_timeouts}; back to the baseline {:.1} s after the last churner: {}; \
             fds {fds} (baseline {}), RSS {:.1} MiB ({:+.1} %)",
            leave + vanish + never,
            tally.connected,
            tally.heard,
            tally.left,
            counts_after,
            counts.map(|c| c.show()).unwrap_or_else(|e| e),
            self.fds0,
            rss as f64 / 1024.0,
            100.0 * drift
        );
        if problems.is_empty() {
            report.push_str("\nchurn: passed");
        } else {
            FAILED.store(true, Ordering::Relaxed);
            report.push_str(&format!("\nchurn: FAILED: {}", problems.join("; ")));
        }
        report
    }
}

/// The churn thread: joins at `spec.rate`, drives the live churners, ends them.
fn drive(url: &str, steady: &[String], spec: &Spec, stop: &AtomicBool) -> Tally {
    let api = Api::new(url);
    let clients = Clients::new();
    let mut tally = Tally::default();
    let mut live: Vec<Churner> = Vec::new();
    let start = Instant::now();
    let (mut next_join, mut next_report, mut n) = (start, start + Duration::from_secs(30), 0u64);
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 2048];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        if !stopping && now >= next_join {
            // On schedule; after a stall (a slow API call) at most twice the rate to catch up.
            let every = Duration::from_secs_f64(1.0 / spec.rate.max(0.001));
            next_join = (next_join + every).max(now + every / 2);
            let kind = TURN[(n % 4) as usize];
            tally.joined[kind as usize] += 1;
            match join(&api, &clients, n, kind, steady, spec) {
                Ok(Some(c)) => live.push(c),
                Ok(None) => tally.never += 1,
                Err(e) => tally.fail(format!("churner {n} ({kind:?}): {e}")),
            }
            n += 1;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < live.len() {
            let c = &mut live[i];
            c.drive(now, &mut buf, &mut out);
            let ended = match c.silent_until {
                Some(until) => now >= until,
                None if now >= c.ends || stopping => {
                    end(&api, c, spec, now, &mut tally);
                    c.kind == Kind::Leave
                }
                None => false,
            };
            if ended {
                live.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if stopping && live.is_empty() {
            return tally;
        }
        if now >= next_report {
            next_report += Duration::from_secs(30);
            let [a, b, c] = tally.joined;
            eprintln!(
                "churn: {:.0} s: {} joined ({a} leave, {b} vanish, {c} never), {} live, {} failed",
                start.elapsed().as_secs_f64(),
                a + b + c,
                live.len(),
                tally.failures
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A churner's life is over (or cut short by the end of the run): it leaves, or goes silent.
fn end(api: &Api, c: &mut Churner, spec: &Spec, now: Instant, tally: &mut Tally) {
    let connected = c.legs.iter().all(|l| l.client.is_connected());
    let cut_short = now < c.ends;
    if connected {
        tally.connected += 1;
    } else if !cut_short {
        tally.fail(format!(
            "churner {} ({:?}) did not connect in {:?}",
            c.n, c.kind, spec.life
        ));
    }
    if c.steady_room && connected && !cut_short {
        if c.heard > 0 {
            tally.heard += 1;
        } else {
            tally.fail(format!(
                "churner {} heard nothing in steady room {}",
                c.n, c.room
            ));
        }
    }
    match c.kind {
        Kind::Leave => match api.post("leave", &json!({"channelId": c.room, "userId": c.user})) {
            Ok(_) => tally.left += 1,
            Err(e) => tally.fail(format!("churner {}: {e}", c.n)),
        },
        _ => {
            // Silent from now on; its sockets stay open (and drained) until choir must have
            // removed it.
            tally.vanished += 1;
            c.silent_until = Some(now + spec.consent + Duration::from_secs(2));
        }
    }
}

/// Joins churner `n` through the API. `None` for a never-connecting one (nothing to drive).
fn join(
    api: &Api,
    clients: &Clients,
    n: u64,
    kind: Kind,
    steady: &[String],
    spec: &Spec,
) -> Result<Option<Churner>, String> {
    // Each kind alternates between a steady room and a room of its own.
    let steady_room = !steady.is_empty() && (n / 4).is_multiple_of(2);
    let room = if steady_room {
        steady[(n / 8) as usize % steady.len()].clone()
    } else {
        format!("churn-{n}")
    };
    let user = format!("churner-{n}");
    api.get(&format!("rtp-capabilities/{room}"))?;
    if kind == Kind::Never {
        setup::transport(api, clients, &room, &user, "send")?;
        api.post(
            "create-transport",
            &json!({"channelId": room, "userId": user, "direction": "recv"}),
        )?;
        return Ok(None);
    }
    let ssrc = 0x4000_0000 + n as u32;
    let (send_addr, send) = setup::transport(api, clients, &room, &user, "send")?;
    api.post(
        "produce",
        &json!({"channelId": room, "userId": user, "kind": "audio",
            "rtpParameters": setup::rtp_parameters(ssrc, &user)}),
    )?;
    let (recv_addr, recv) = setup::transport(api, clients, &room, &user, "recv")?;
    let producers = api.get(&format!("producers/{room}/{user}"))?;
    for p in producers["producers"].as_array().into_iter().flatten() {
        api.post(
            "consume",
            &json!({"channelId": room, "userId": user, "producerId": p["producerId"],
                "rtpCapabilities": setup::rtp_capabilities()}),
        )?;
    }
    let leg = |addr, client| -> Result<Leg, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        socket.connect(addr).map_err(|e| e.to_string())?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Leg { socket, client })
    };
    let now = Instant::now();
    Ok(Some(Churner {
        n,
        kind,
        room,
        user,
        steady_room,
        legs: vec![leg(send_addr, send)?, leg(recv_addr, recv)?],
        ssrc,
        seq: 0,
        next_packet: now,
        ends: now + spec.life,
        silent_until: None,
        heard: 0,
    }))
}

impl Churner {
    /// Reads its sockets; unless silent, answers, keeps consent and publishes.
    fn drive(&mut self, now: Instant, buf: &mut [u8; 2048], out: &mut [u8; 2048]) {
        let silent = self.silent_until.is_some();
        for leg in &mut self.legs {
            while let Ok(len) = leg.socket.recv(buf) {
                let d = &mut buf[..len];
                if len >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1]) {
                    // Forwarded RTP: counted, not decrypted.
                    self.heard += 1;
                } else if !silent {
                    leg.client.handle_datagram(d, now);
                }
            }
            if silent {
                continue;
            }
            while let Some(len) = leg.client.poll_transmit(now, out) {
                let _ = leg.socket.send(&out[..len]);
            }
        }
        if silent || !self.legs[0].client.is_connected() {
            self.next_packet = now;
            return;
        }
        while self.next_packet <= now {
            self.next_packet += PERIOD;
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            out[..4].copy_from_slice(&[0x80, 111, (seq >> 8) as u8, seq as u8]);
            out[4..8].copy_from_slice(&(u32::from(seq).wrapping_mul(960)).to_be_bytes());
            out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            out[12..PACKET].fill(0x55);
            if let Some(len) = self.legs[0].client.protect_rtp(out, PACKET) {
                let _ = self.legs[0].socket.send(&out[..len]);
            }
        }
    }
}
