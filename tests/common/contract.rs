//! The voice API contract's bodies as the plan's clients send them (Chrome's produce
//! parameters, a mediasoup-client device's capabilities, a DTLS client's parameters) and a
//! join made of them.

use serde_json::{json, Value};

use crate::common::Daemon;

/// Chrome's produce parameters, as in the contract.
pub fn chrome_rtp_parameters(ssrc: u32) -> Value {
    json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,
      "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc","parameter":""}]}],
     "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}},
       {"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1,"encrypt":false,"parameters":{}}],
     "encodings":[{"ssrc":ssrc,"dtx":false}],"rtcp":{"cname":"UvVHyckjW26uo8T8","reducedSize":true},"msid":"- t"})
}

/// A mediasoup-client device's recvRtpCapabilities (3.24: no MID extension).
pub fn client_caps() -> Value {
    json!({"codecs":[{"mimeType":"audio/opus","kind":"audio","preferredPayloadType":100,"clockRate":48000,"channels":2,
        "parameters":{},"rtcpFeedback":[]}],
      "headerExtensions":[
        {"kind":"audio","uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","preferredId":4,"preferredEncrypt":false,"direction":"sendrecv"},
        {"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10,"preferredEncrypt":false,"direction":"sendrecv"}]})
}

pub fn dtls_client() -> Value {
    json!({"role":"client","fingerprints":[{"algorithm":"sha-256","value":
        "82:5A:68:3D:36:C3:0A:DE:AF:E7:32:43:D2:88:83:57:AC:2D:65:E5:80:C4:B6:FB:AF:1A:A0:21:9F:6D:0C:AD"}]})
}

/// Joins `user` to `channel`: capabilities, both transports, connect, produce. Returns the
/// (send transport, recv transport, producer id).
pub fn join(d: &Daemon, channel: &str, user: &str, ssrc: u32) -> (Value, Value, String) {
    let (s, _) = d.get(&format!("rtp-capabilities/{channel}"));
    assert_eq!(s, 200);
    let send = d.ok(
        "create-transport",
        &json!({"channelId":channel,"userId":user,"direction":"send"}),
    );
    let recv = d.ok(
        "create-transport",
        &json!({"channelId":channel,"userId":user,"direction":"recv"}),
    );
    d.ok(
        "connect-transport",
        &json!({"channelId":channel,"userId":user,"transportId":send["id"],"dtlsParameters":dtls_client()}),
    );
    let produced = d.ok(
        "produce",
        &json!({"channelId":channel,"userId":user,"kind":"audio","rtpParameters":chrome_rtp_parameters(ssrc)}),
    );
    (
        send,
        recv,
        produced["producerId"].as_str().unwrap().to_string(),
    )
}
