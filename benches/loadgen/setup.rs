//! Setting rooms up: through choir's voice API (HTTP), or through the bare relay's stdin.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::Arc;
use std::time::{Duration, Instant};

use choir::client::{ClientTransport, ServerParams};
use choir::wire::dtls::{DtlsIdentity, DtlsRole};
use serde_json::{json, Value};

use crate::worker::{LegSpec, Peer};

/// A blocking client of choir's voice API (keep-alive).
pub struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/voice/{path}", self.base)
    }

    /// The server's base URL (`http://ADDR`).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> Result<Value, String> {
        self.agent
            .get(&self.url(path))
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?
            .into_json()
            .map_err(|e| format!("GET {path}: {e}"))
    }

    /// `GET <base><path>` as text (e.g. "/metrics").
    pub fn text(&self, path: &str) -> Result<String, String> {
        self.agent
            .get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?
            .into_string()
            .map_err(|e| format!("GET {path}: {e}"))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        match self.agent.post(&self.url(path)).send_json(body) {
            Ok(r) => r.into_json().map_err(|e| format!("POST {path}: {e}")),
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "POST {path}: {code} {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("POST {path}: {e}")),
        }
    }
}

/// What every client transport shares: the DTLS config and one certificate (choir checks each
/// transport's fingerprint; reusing one certificate saves 1.7 ms per leg).
pub struct Clients {
    pub config: Arc<dimpl::Config>,
    pub identity: DtlsIdentity,
}

impl Clients {
    pub fn new() -> Clients {
        Clients {
            config: choir::wire::dtls::dtls_config(),
            identity: DtlsIdentity::generate().expect("a DTLS certificate"),
        }
    }
}

/// Chrome-like Opus producer parameters.
pub fn rtp_parameters(ssrc: u32, cname: &str) -> Value {
    json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,
      "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[]}],
     "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1,"encrypt":false,"parameters":{}}],
     "encodings":[{"ssrc":ssrc,"dtx":false}],"rtcp":{"cname":cname,"reducedSize":true}})
}

/// mediasoup-client's recvRtpCapabilities for audio in Chromium: with generic NACK, so that
/// choir keeps each producer's history as it does for the plan's frontend (a choir before NACK
/// ignores it).
pub fn rtp_capabilities() -> Value {
    json!({"codecs":[{"mimeType":"audio/opus","kind":"audio","preferredPayloadType":100,"clockRate":48000,"channels":2,
        "parameters":{},"rtcpFeedback":[{"type":"nack","parameter":""}]}],
      "headerExtensions":[{"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10,"preferredEncrypt":false,"direction":"sendrecv"}]})
}

/// Creates one transport of `user` and connects it with our fingerprint.
pub fn transport(
    api: &Api,
    clients: &Clients,
    room: &str,
    user: &str,
    direction: &str,
) -> Result<(SocketAddr, Box<ClientTransport>), String> {
    let t = api.post(
        "create-transport",
        &json!({"channelId":room,"userId":user,"direction":direction}),
    )?;
    let candidate = t["iceCandidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["protocol"] == "udp"))
        .ok_or("create-transport: no UDP candidate")?;
    let ip: IpAddr = candidate["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("create-transport: no candidate ip")?;
    let port = candidate["port"].as_u64().ok_or("no candidate port")? as u16;
    let address = SocketAddr::new(ip, port);
    let text = |v: &Value| v.as_str().map(str::to_string).ok_or("missing field");
    let server = ServerParams {
        address,
        ufrag: text(&t["iceParameters"]["usernameFragment"])?,
        password: text(&t["iceParameters"]["password"])?,
        fingerprint: text(&t["dtlsParameters"]["fingerprints"][0]["value"])?,
    };
    let client = ClientTransport::new(
        server,
        DtlsRole::Client,
        clients.config.clone(),
        clients.identity.clone(),
        Instant::now(),
    );
    api.post(
        "connect-transport",
        &json!({"channelId":room,"userId":user,"transportId":t["id"],
            "dtlsParameters":{"role":client.signalled_role(),
            "fingerprints":[{"algorithm":"sha-256","value":client.fingerprint()}]}}),
    )?;
    Ok((address, Box::new(client)))
}

/// Sets up a room of `participants` through choir's API; the first `speakers` publish and
/// everyone consumes every other speaker. Returns the legs (send leg, recv leg per participant).
pub fn choir_room(
    api: &Api,
    clients: &Clients,
    room: &str,
    participants: usize,
    speakers: usize,
    ssrc_base: u32,
) -> Result<Vec<LegSpec>, String> {
    let layout = Layout {
        nodes: &[api],
        node: &|_| 0,
        remote: &|_| false,
    };
    spread_room(&layout, clients, room, participants, speakers, ssrc_base)
}

/// Where a room's participants join, for [`spread_room`]: participant u through
/// `nodes[node(u)]`, its recv leg's latency recorded apart when `remote(u)`.
pub struct Layout<'a> {
    pub nodes: &'a [&'a Api],
    pub node: &'a dyn Fn(usize) -> usize,
    pub remote: &'a dyn Fn(usize) -> bool,
}

/// [`choir_room`] over several nodes (cluster regions): each node's participants in turn, the
/// first of them placing the room there; each speaker produces through its own node; with
/// several nodes, every node lists every speaker (the cascade linked the room) before anyone
/// consumes.
pub fn spread_room(
    layout: &Layout<'_>,
    clients: &Clients,
    room: &str,
    participants: usize,
    speakers: usize,
    ssrc_base: u32,
) -> Result<Vec<LegSpec>, String> {
    let api_of = |u: usize| layout.nodes[(layout.node)(u)];
    let mut order: Vec<usize> = (0..participants).collect();
    order.sort_by_key(|&u| (layout.node)(u));
    let mut placed = vec![false; layout.nodes.len()];
    let mut legs = Vec::new();
    let mut producers = Vec::new();
    for &u in &order {
        let api = api_of(u);
        if !std::mem::replace(&mut placed[(layout.node)(u)], true) {
            api.get(&format!("rtp-capabilities/{room}"))?;
        }
        let user = format!("u{u}");
        let (send_addr, send) = transport(api, clients, room, &user, "send")?;
        let (recv_addr, recv) = transport(api, clients, room, &user, "recv")?;
        let publish = if u < speakers {
            let ssrc = ssrc_base + u as u32;
            let p = api.post(
                "produce",
                &json!({"channelId":room,"userId":user,"kind":"audio",
                    "rtpParameters":rtp_parameters(ssrc, &user)}),
            )?;
            let id = p["producerId"].as_str().ok_or("no producerId")?;
            producers.push((u, id.to_string()));
            Some((ssrc, participants as u32 - 1))
        } else {
            None
        };
        legs.push(LegSpec {
            server: send_addr,
            peer: Peer::Srtp(send),
            publish,
            socket: None,
            remote: false,
        });
        legs.push(LegSpec {
            server: recv_addr,
            peer: Peer::Srtp(recv),
            publish: None,
            socket: None,
            remote: (layout.remote)(u),
        });
    }
    if layout.nodes.len() > 1 {
        for (i, api) in layout.nodes.iter().enumerate() {
            let Some(u) = (speakers..participants).find(|&u| (layout.node)(u) == i) else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let v = api.get(&format!("producers/{room}/u{u}"))?;
                if v["producers"].as_array().map_or(0, Vec::len) >= speakers {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {i} does not list {room}'s speakers: {v}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    for u in 0..participants {
        for (v, producer) in &producers {
            if *v != u {
                api_of(u).post(
                    "consume",
                    &json!({"channelId":room,"userId":format!("u{u}"),"producerId":producer,
                        "rtpCapabilities":rtp_capabilities()}),
                )?;
            }
        }
    }
    Ok(legs)
}

/// The bare relay, run as a child process, set up over its stdin/stdout.
pub struct Relay {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Relay {
    pub fn new(mut child: Child) -> Relay {
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Relay {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| format!("relay: {e}"))?;
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .map_err(|e| format!("relay: {e}"))?;
        Ok(answer)
    }

    /// A room with the same shape as [`choir_room`]'s, on the relay.
    pub fn room(&mut self, participants: usize, speakers: usize) -> Result<Vec<LegSpec>, String> {
        let answer = self.ask(&format!("room {participants}"))?;
        // "ports <first token> <port per leg>..."
        let numbers: Vec<u32> = answer
            .split_whitespace()
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect();
        let (first_token, ports) = match numbers.split_first() {
            Some((t, ports)) if ports.len() == 2 * participants => (*t, ports),
            _ => return Err(format!("relay answered {answer:?}")),
        };
        let ports: Vec<u16> = ports.iter().map(|&p| p as u16).collect();
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut legs = Vec::new();
        for u in 0..participants {
            legs.push(LegSpec {
                server: at(ports[2 * u]),
                peer: Peer::Plain(first_token + 2 * u as u32),
                publish: (u < speakers)
                    .then_some((0x2000_0000 + u as u32, participants as u32 - 1)),
                socket: None,
                remote: false,
            });
            legs.push(LegSpec {
                server: at(ports[2 * u + 1]),
                peer: Peer::Plain(first_token + 2 * u as u32 + 1),
                publish: None,
                socket: None,
                remote: false,
            });
        }
        Ok(legs)
    }

    /// The relay's (forwarded, send failures) counters.
    pub fn stats(&mut self) -> (u64, u64) {
        let answer = self.ask("stats").unwrap_or_default();
        let v: Vec<u64> = answer
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (
            v.first().copied().unwrap_or(0),
            v.get(1).copied().unwrap_or(0),
        )
    }
}
