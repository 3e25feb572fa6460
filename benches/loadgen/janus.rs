//! Setting rooms up on Janus 1.1 (`--target janus`): its HTTP transport API, the videoroom
//! plugin, one audio-only Opus room per choir room. Every participant publishes on its own
//! PeerConnection (we offer, Janus answers as DTLS client) and subscribes to the others' feeds on
//! one multistream PeerConnection (Janus offers; we answer as DTLS client, ICE controlled).
//! Janus is a full ICE agent: [`ClientTransport`] answers its checks as well as sending its own.
//!
//! The generator's socket of each leg is bound before the SDP is written, so the SDP carries its
//! real host candidate; the worker connects it to Janus's candidate afterwards.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use choir::client::{ClientTransport, ServerParams};
use choir::wire::dtls::DtlsRole;
use serde_json::{json, Value};
use socket2::Socket;

use crate::setup::Clients;
use crate::sys;
use crate::worker::{LegSpec, Peer};

/// A blocking client of one Janus session (keep-alive HTTP, long-poll for events).
pub struct Janus {
    agent: ureq::Agent,
    base: String,
    session: u64,
    /// Creates the rooms.
    admin: u64,
    transactions: u64,
    /// Events that arrived while waiting for another transaction's.
    stash: HashMap<String, Value>,
}

impl Janus {
    /// Opens a session on the Janus at `base` (`http://127.0.0.1:8088/janus`).
    pub fn connect(base: &str) -> Result<Janus, String> {
        let mut j = Janus {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(45))
                .build(),
            base: base.trim_end_matches('/').to_string(),
            session: 0,
            admin: 0,
            transactions: 0,
            stash: HashMap::new(),
        };
        let created = j.post("", json!({"janus":"create"}))?;
        j.session = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus create: {created}"))?;
        j.admin = j.attach()?;
        Ok(j)
    }

    fn post(&mut self, path: &str, mut body: Value) -> Result<Value, String> {
        self.transactions += 1;
        body["transaction"] = json!(format!("t{}", self.transactions));
        let url = format!("{}{path}", self.base);
        let v: Value = self
            .agent
            .post(&url)
            .send_json(body)
            .map_err(|e| format!("janus POST {url}: {e}"))?
            .into_json()
            .map_err(|e| format!("janus POST {url}: {e}"))?;
        if v["janus"] == "error" {
            return Err(format!("janus POST {url}: {}", v["error"]));
        }
        Ok(v)
    }

    fn attach(&mut self) -> Result<u64, String> {
        let path = format!("/{}", self.session);
        let v = self.post(
            &path,
            json!({"janus":"attach","plugin":"janus.plugin.videoroom"}),
        )?;
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus attach: {v}"))
    }

    /// A videoroom request answered at once (`create`): its `plugindata.data`.
    fn request(&mut self, handle: u64, body: Value) -> Result<Value, String> {
        let path = format!("/{}/{handle}", self.session);
        let v = self.post(&path, json!({"janus":"message","body":body}))?;
        plugin_data(&v)
    }

    /// A videoroom request answered by an event (`join`, `start`): the event, whole.
    fn message(&mut self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value, String> {
        let path = format!("/{}/{handle}", self.session);
        let mut msg = json!({"janus":"message","body":body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        let ack = self.post(&path, msg)?;
        let tx = ack["transaction"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(event) = self.stash.remove(&tx) {
                plugin_data(&event)?;
                return Ok(event);
            }
            let url = format!("{}/{}?maxev=100", self.base, self.session);
            let events: Value = self
                .agent
                .get(&url)
                .call()
                .map_err(|e| format!("janus GET {url}: {e}"))?
                .into_json()
                .map_err(|e| format!("janus GET {url}: {e}"))?;
            let events = match events {
                Value::Array(v) => v,
                one => vec![one],
            };
            for e in events {
                if e["janus"] == "event" {
                    if let Some(t) = e["transaction"].as_str() {
                        self.stash.insert(t.to_string(), e);
                    }
                }
            }
        }
        Err(format!("janus: no answer to {tx} in 30 s"))
    }
}

/// A plugin reply's `plugindata.data`, or its error.
fn plugin_data(v: &Value) -> Result<Value, String> {
    let data = &v["plugindata"]["data"];
    if data.is_null() {
        return Err(format!("janus: no plugin data in {v}"));
    }
    if let Some(e) = data["error"].as_str() {
        return Err(format!("janus videoroom: {e} ({})", data["error_code"]));
    }
    Ok(data.clone())
}

/// What an SDP from Janus gives us: its ICE credentials, fingerprint, DTLS setup, first UDP
/// IPv4 host candidate, and each m-section's (mid, payload type).
#[derive(Debug, Default)]
struct RemoteSdp {
    ufrag: String,
    pwd: String,
    fingerprint: String,
    setup: String,
    candidate: Option<SocketAddr>,
    sections: Vec<(String, String)>,
}

fn parse_sdp(sdp: &str) -> Result<RemoteSdp, String> {
    let mut r = RemoteSdp::default();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let pt = m.split_whitespace().nth(3).unwrap_or("111");
            r.sections.push((String::new(), pt.to_string()));
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            if let Some(s) = r.sections.last_mut() {
                s.0 = v.to_string();
            }
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            r.ufrag = v.to_string();
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            r.pwd = v.to_string();
        } else if let Some(v) = line.strip_prefix("a=fingerprint:sha-256 ") {
            r.fingerprint = v.to_string();
        } else if let Some(v) = line.strip_prefix("a=setup:") {
            r.setup = v.to_string();
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            // foundation component transport priority address port "typ" type
            let f: Vec<&str> = v.split_whitespace().collect();
            if r.candidate.is_none() && f.len() >= 6 && f[2].eq_ignore_ascii_case("udp") {
                if let (Ok(ip), Ok(port)) = (f[4].parse::<IpAddr>(), f[5].parse::<u16>()) {
                    r.candidate = ip.is_ipv4().then_some(SocketAddr::new(ip, port));
                }
            }
        }
    }
    if r.ufrag.is_empty() || r.pwd.is_empty() || r.fingerprint.is_empty() || r.candidate.is_none() {
        return Err(format!("janus SDP lacks ICE/DTLS parameters: {sdp:?}"));
    }
    Ok(r)
}

/// Our side of one PeerConnection: a bound socket and fresh ICE credentials.
struct Local {
    socket: Socket,
    address: SocketAddr,
    ufrag: String,
    pwd: String,
}

impl Local {
    fn new(ip: IpAddr) -> Result<Local, String> {
        let socket = sys::udp_socket(SocketAddr::new(ip, 0), None, sys::RECV_BUFFER, true)
            .map_err(|e| format!("socket: {e}"))?;
        let address = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or("socket without an address")?;
        let mut r = [0u8; 24];
        let _ = aws_lc_rs::rand::fill(&mut r);
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Local {
            socket,
            address,
            ufrag: hex[..16].to_string(),
            pwd: hex[16..].to_string(),
        })
    }

    /// Session-level and transport lines of our SDP.
    fn transport_lines(&self, fingerprint: &str, setup: &str) -> String {
        format!(
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {fingerprint}\r\na=setup:{setup}\r\na=rtcp-mux\r\n",
            self.ufrag, self.pwd
        )
    }

    fn candidate_lines(&self) -> String {
        format!(
            "a=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates\r\n",
            self.address.ip(),
            self.address.port()
        )
    }

    /// A client transport to `remote`; `controlled` when Janus offered.
    fn leg(
        self,
        remote: &RemoteSdp,
        clients: &Clients,
        controlled: bool,
        publish: Option<(u32, u32)>,
    ) -> LegSpec {
        let server = remote.candidate.expect("checked by parse_sdp");
        // Janus answering `active` is the DTLS client; when it offered `actpass`, we are.
        let role = if remote.setup == "active" {
            DtlsRole::Server
        } else {
            DtlsRole::Client
        };
        let params = ServerParams {
            address: server,
            ufrag: remote.ufrag.clone(),
            password: remote.pwd.clone(),
            fingerprint: remote.fingerprint.clone(),
        };
        let mut client = ClientTransport::new(
            params,
            role,
            clients.config.clone(),
            clients.identity.clone(),
            Instant::now(),
        )
        .with_local_credentials(&self.ufrag, &self.pwd);
        if controlled {
            client = client.controlled();
        }
        LegSpec {
            server,
            peer: Peer::Srtp(Box::new(client)),
            publish,
            socket: Some(self.socket),
            remote: false,
        }
    }
}

/// Creates Janus room `room` and joins its `speakers` publishers (the first participants);
/// returns their legs and feed ids. Subscribe once they are connected: Janus refuses feeds
/// whose media is not up yet.
pub fn publishers(
    j: &mut Janus,
    clients: &Clients,
    room: u64,
    participants: usize,
    speakers: usize,
    ssrc_base: u32,
    ip: IpAddr,
) -> Result<(Vec<LegSpec>, Vec<u64>), String> {
    let admin = j.admin;
    j.request(
        admin,
        json!({"request":"create","room":room,"publishers":participants,"audiocodec":"opus",
            "audiolevel_ext":false,"audiolevel_event":false,"notify_joining":false}),
    )?;
    let fingerprint = clients.identity.fingerprint_sha256();
    let mut legs = Vec::new();
    let mut feeds = Vec::new();
    for u in 0..speakers {
        let handle = j.attach()?;
        let local = Local::new(ip)?;
        let ssrc = ssrc_base + u as u32;
        let offer = format!(
            "v=0\r\no=- {ssrc} 1 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS *\r\n\
             m=audio {port} UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 {ip}\r\n{candidates}{transport}\
             a=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
             a=ssrc:{ssrc} cname:u{u}\r\n",
            port = local.address.port(),
            candidates = local.candidate_lines(),
            transport = local.transport_lines(fingerprint, "actpass"),
        );
        let event = j.message(
            handle,
            json!({"request":"joinandconfigure","ptype":"publisher","room":room,
                "display":format!("u{u}"),"audio":true}),
            Some(json!({"type":"offer","sdp":offer})),
        )?;
        let feed = event["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("janus join: no feed id in {event}"))?;
        let answer = parse_sdp(event["jsep"]["sdp"].as_str().unwrap_or_default())?;
        feeds.push(feed);
        legs.push(local.leg(
            &answer,
            clients,
            false,
            Some((ssrc, participants as u32 - 1)),
        ));
    }
    Ok((legs, feeds))
}

/// Subscribes every participant of `room` to the others' feeds, one multistream PeerConnection
/// each; returns their legs.
pub fn subscribers(
    j: &mut Janus,
    clients: &Clients,
    room: u64,
    participants: usize,
    feeds: &[u64],
    ip: IpAddr,
) -> Result<Vec<LegSpec>, String> {
    let fingerprint = clients.identity.fingerprint_sha256();
    let mut legs = Vec::new();
    for u in 0..participants {
        let streams: Vec<Value> = feeds
            .iter()
            .enumerate()
            .filter(|(v, _)| *v != u)
            .map(|(_, f)| json!({"feed":f}))
            .collect();
        if streams.is_empty() {
            continue;
        }
        let handle = j.attach()?;
        let event = join_subscriber(j, handle, room, &streams)?;
        let offer = parse_sdp(event["jsep"]["sdp"].as_str().unwrap_or_default())?;
        let local = Local::new(ip)?;
        let mids: Vec<&str> = offer.sections.iter().map(|(m, _)| m.as_str()).collect();
        let mut answer = format!(
            "v=0\r\no=- {} 1 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=msid-semantic: WMS *\r\n",
            local.address.port(),
            mids.join(" ")
        );
        for (k, (mid, pt)) in offer.sections.iter().enumerate() {
            let port = if k == 0 { local.address.port() } else { 9 };
            answer.push_str(&format!(
                "m=audio {port} UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 {ip}\r\n"
            ));
            if k == 0 {
                answer.push_str(&local.candidate_lines());
            }
            answer.push_str(&local.transport_lines(fingerprint, "active"));
            answer.push_str(&format!(
                "a=mid:{mid}\r\na=recvonly\r\na=rtpmap:{pt} opus/48000/2\r\n"
            ));
        }
        j.message(
            handle,
            json!({"request":"start"}),
            Some(json!({"type":"answer","sdp":answer})),
        )?;
        legs.push(local.leg(&offer, clients, true, None));
    }
    Ok(legs)
}

/// `join` as a subscriber, retried for a moment while Janus still sets a feed's media up.
fn join_subscriber(
    j: &mut Janus,
    handle: u64,
    room: u64,
    streams: &[Value],
) -> Result<Value, String> {
    let body = json!({"request":"join","ptype":"subscriber","room":room,"streams":streams});
    let mut last = String::new();
    for _ in 0..50 {
        match j.message(handle, body.clone(), None) {
            Ok(event) if event["jsep"]["sdp"].is_string() => return Ok(event),
            Ok(event) => last = format!("janus subscribe: no offer in {event}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}
