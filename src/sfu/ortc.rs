//! ORTC: the RTP capabilities and parameters of the voice API, as mediasoup-client speaks them
//! (field names follow mediasoup's `RtpCapabilities` / `RtpParameters`).
//!
//! The router (room) supports one codec, Opus 48 kHz stereo, and three header extensions.
//! A producer's parameters use the **browser's** payload type and extension ids; they are mapped
//! to the router's here. A consumer's parameters use the router's payload type and the router's
//! extension ids, narrowed to those the consuming client also has with the same id.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The router's Opus payload type (mediasoup's first dynamic payload type).
pub const OPUS_PAYLOAD_TYPE: u8 = 100;
pub const OPUS_CLOCK_RATE: u32 = 48_000;
pub const OPUS_CHANNELS: u8 = 2;

pub const EXT_MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const EXT_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub const EXT_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The payload type of RED (RFC 2198) towards a consumer that asked for it.
pub const RED_PAYLOAD_TYPE: u8 = 101;

/// RTCP feedback the router implements for Opus: generic NACK (RFC 4585 §6.2.1), answered
/// from a short history of each producer's packets (`crate::sfu::nack`).
pub const FEEDBACK_NACK: &str = "nack";

/// The router's Opus format parameters (RFC 7587 §6.1). mediasoup-client copies them into the
/// answer it gives its browser, whose encoder reads them from there: in-band FEC, which the
/// encoder sends once the loss choir reports is above zero, and DTX.
pub fn router_opus_parameters() -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("useinbandfec".into(), 1.into());
    p.insert("usedtx".into(), 1.into());
    p
}

fn nack_feedback() -> RtcpFeedback {
    RtcpFeedback {
        kind: FEEDBACK_NACK.into(),
        parameter: String::new(),
    }
}

/// Whether a feedback list has generic NACK (`{type: "nack", parameter: ""}`; `nack pli` is
/// another message).
fn has_nack(feedback: &[RtcpFeedback]) -> bool {
    feedback
        .iter()
        .any(|f| f.kind == FEEDBACK_NACK && f.parameter.is_empty())
}

/// The router's header extensions: (uri, id).
pub const ROUTER_EXTENSIONS: [(&str, u8); 3] =
    [(EXT_MID, 1), (EXT_ABS_SEND_TIME, 4), (EXT_AUDIO_LEVEL, 10)];

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RtcpFeedback {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub parameter: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecCapability {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_payload_type: Option<u8>,
    pub clock_rate: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionCapability {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub uri: String,
    pub preferred_id: u8,
    #[serde(default)]
    pub preferred_encrypt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RtpCapabilities {
    #[serde(default)]
    pub codecs: Vec<RtpCodecCapability>,
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionCapability>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecParameters {
    pub mime_type: String,
    pub payload_type: u8,
    pub clock_rate: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionParameters {
    pub uri: String,
    pub id: u8,
    #[serde(default)]
    pub encrypt: bool,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RtpEncodingParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtx: Option<bool>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RtcpParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduced_size: Option<bool>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RtpParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    pub codecs: Vec<RtpCodecParameters>,
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    #[serde(default)]
    pub encodings: Vec<RtpEncodingParameters>,
    #[serde(default)]
    pub rtcp: RtcpParameters,
}

/// The router's capabilities, exactly as `GET /rtp-capabilities/:channelId` returns them.
pub fn router_capabilities() -> RtpCapabilities {
    RtpCapabilities {
        codecs: vec![RtpCodecCapability {
            kind: Some("audio".into()),
            mime_type: "audio/opus".into(),
            preferred_payload_type: Some(OPUS_PAYLOAD_TYPE),
            clock_rate: OPUS_CLOCK_RATE,
            channels: Some(OPUS_CHANNELS),
            parameters: router_opus_parameters(),
            rtcp_feedback: vec![nack_feedback()],
        }],
        header_extensions: ROUTER_EXTENSIONS
            .iter()
            .map(|&(uri, id)| RtpHeaderExtensionCapability {
                kind: Some("audio".into()),
                uri: uri.into(),
                preferred_id: id,
                preferred_encrypt: false,
                direction: Some("sendrecv".into()),
            })
            .collect(),
    }
}

fn router_extension_id(uri: &str) -> Option<u8> {
    ROUTER_EXTENSIONS
        .iter()
        .find(|(u, _)| *u == uri)
        .map(|&(_, id)| id)
}

/// Whether a codec capability is RED (RFC 2198) for Opus' clock and channels.
fn is_red(c: &RtpCodecCapability) -> bool {
    is_red_format(&c.mime_type, c.clock_rate, c.channels)
        && c.kind.as_deref().is_none_or(|k| k == "audio")
}

fn is_red_format(mime_type: &str, clock_rate: u32, channels: Option<u8>) -> bool {
    mime_type.eq_ignore_ascii_case("audio/red")
        && clock_rate == OPUS_CLOCK_RATE
        && channels == Some(OPUS_CHANNELS)
}

fn is_opus(mime_type: &str, clock_rate: u32, channels: Option<u8>) -> bool {
    mime_type.eq_ignore_ascii_case("audio/opus")
        && clock_rate == OPUS_CLOCK_RATE
        && channels == Some(OPUS_CHANNELS)
}

/// What the router keeps of a producer's parameters to receive and forward its packets.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerRtp {
    /// The browser's Opus payload type (mapped to [`OPUS_PAYLOAD_TYPE`]).
    pub payload_type: u8,
    /// (browser extension id, router extension id).
    pub extensions: Vec<(u8, u8)>,
    /// The browser's id of the MID extension, if it signalled one.
    pub mid_extension_id: Option<u8>,
    pub ssrc: Option<u32>,
    pub mid: Option<String>,
    pub cname: String,
    pub codec_parameters: Map<String, Value>,
    /// The producer negotiated generic NACK: choir asks it to retransmit what it lost.
    pub nack: bool,
    /// The browser's payload type for RED (RFC 2198), when the producer sends it (choir's
    /// try-it client in Chromium): choir unpacks it (`crate::sfu::red`).
    pub red_payload_type: Option<u8>,
}

/// Validates `produce` input. Errors name the offending field.
pub fn validate_producer(kind: &str, rtp: &RtpParameters) -> Result<ProducerRtp, String> {
    if kind != "audio" {
        return Err(format!(
            "kind must be \"audio\" (this router has only Opus), got {kind:?}"
        ));
    }
    let codec = rtp
        .codecs
        .iter()
        .find(|c| is_opus(&c.mime_type, c.clock_rate, c.channels))
        .ok_or(
            "rtpParameters.codecs has no audio/opus codec with clockRate 48000 and channels 2",
        )?;
    if codec.payload_type > 127 {
        return Err(format!(
            "rtpParameters.codecs: payloadType {} is not 0-127",
            codec.payload_type
        ));
    }
    // RED for Opus, when listed (before Opus, as a browser sends it).
    let red_payload_type = match rtp
        .codecs
        .iter()
        .find(|c| is_red_format(&c.mime_type, c.clock_rate, c.channels))
    {
        None => None,
        Some(red) if red.payload_type > 127 || red.payload_type == codec.payload_type => {
            return Err(format!(
                "rtpParameters.codecs: audio/red payloadType {} is not 0-127 or is Opus' own",
                red.payload_type
            ))
        }
        Some(red) => Some(red.payload_type),
    };
    let mut extensions = Vec::new();
    let mut mid_extension_id = None;
    for (i, ext) in rtp.header_extensions.iter().enumerate() {
        if ext.id == 0 || ext.id > 14 {
            // Chromium and Firefox use the one-byte form; ids 15+ would need the two-byte form.
            return Err(format!(
                "rtpParameters.headerExtensions[{i}].id {} is not 1-14",
                ext.id
            ));
        }
        if extensions.iter().any(|&(from, _)| from == ext.id) {
            return Err(format!(
                "rtpParameters.headerExtensions[{i}].id {} is used twice",
                ext.id
            ));
        }
        if let Some(router_id) = router_extension_id(&ext.uri) {
            extensions.push((ext.id, router_id));
            if ext.uri == EXT_MID {
                mid_extension_id = Some(ext.id);
            }
        }
    }
    let ssrc = rtp.encodings.first().and_then(|e| e.ssrc);
    let mid = rtp.mid.clone().filter(|m| !m.is_empty());
    if ssrc.is_none() && (mid.is_none() || mid_extension_id.is_none()) {
        return Err("rtpParameters.encodings[0].ssrc is required (or a mid with the sdes:mid header extension)".into());
    }
    Ok(ProducerRtp {
        payload_type: codec.payload_type,
        extensions,
        mid_extension_id,
        ssrc,
        mid,
        cname: rtp
            .rtcp
            .cname
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "choir".into()),
        codec_parameters: codec.parameters.clone(),
        nack: has_nack(&codec.rtcp_feedback),
        red_payload_type,
    })
}

/// A consumer's negotiated parameters: the reply's `rtpParameters` plus the router extension
/// ids the consumer keeps (all others are stripped from its packets), whether it negotiated
/// generic NACK (then choir answers its NACKs) and RED (then its packets carry earlier frames).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerRtp {
    pub parameters: RtpParameters,
    pub extension_ids: Vec<u8>,
    pub nack: bool,
    pub red: bool,
}

/// Computes a consumer's parameters for a client with `caps`, or says why it cannot consume.
pub fn consumer_parameters(
    producer: &ProducerRtp,
    caps: &RtpCapabilities,
    ssrc: u32,
    mid: String,
) -> Result<ConsumerRtp, String> {
    let Some(opus) = caps.codecs.iter().find(|c| {
        c.kind.as_deref().is_none_or(|k| k == "audio")
            && is_opus(&c.mime_type, c.clock_rate, c.channels)
    }) else {
        return Err("rtpCapabilities has no audio/opus codec with clockRate 48000 and channels 2: the client cannot consume".into());
    };
    // RED for a client that lists it (choir's own client does; the router does not advertise
    // it, so mediasoup-client's devices do not). Its packets carry earlier frames and cannot
    // be rebuilt byte for byte later, so such a consumer gets no NACK (as in LiveKit).
    let red = caps.codecs.iter().any(is_red);
    // The router's feedback that the client also has.
    let nack = has_nack(&opus.rtcp_feedback) && !red;
    let mut header_extensions = Vec::new();
    let mut extension_ids = Vec::new();
    for &(uri, id) in &ROUTER_EXTENSIONS {
        let client_has = caps.header_extensions.iter().any(|e| {
            e.uri == uri
                && e.preferred_id == id
                && e.kind.as_deref().is_none_or(|k| k == "audio")
                && e.direction
                    .as_deref()
                    .is_none_or(|d| d == "sendrecv" || d == "recvonly")
        });
        // Only extensions the producer sends are worth announcing.
        let producer_sends = producer.extensions.iter().any(|&(_, to)| to == id);
        if client_has && producer_sends {
            header_extensions.push(RtpHeaderExtensionParameters {
                uri: uri.into(),
                id,
                encrypt: false,
                parameters: Map::new(),
            });
            extension_ids.push(id);
        }
    }
    let opus = RtpCodecParameters {
        mime_type: "audio/opus".into(),
        payload_type: OPUS_PAYLOAD_TYPE,
        clock_rate: OPUS_CLOCK_RATE,
        channels: Some(OPUS_CHANNELS),
        parameters: producer.codec_parameters.clone(),
        rtcp_feedback: if nack {
            vec![nack_feedback()]
        } else {
            Vec::new()
        },
    };
    let codecs = if red {
        let mut parameters = Map::new();
        // The `fmtp` RFC 2198 §5 asks for (`100/100`), for clients that write it.
        parameters.insert(
            format!("{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"),
            "".into(),
        );
        let red = RtpCodecParameters {
            mime_type: "audio/red".into(),
            payload_type: RED_PAYLOAD_TYPE,
            clock_rate: OPUS_CLOCK_RATE,
            channels: Some(OPUS_CHANNELS),
            parameters,
            rtcp_feedback: Vec::new(),
        };
        vec![red, opus]
    } else {
        vec![opus]
    };
    Ok(ConsumerRtp {
        parameters: RtpParameters {
            mid: Some(mid),
            codecs,
            header_extensions,
            encodings: vec![RtpEncodingParameters {
                ssrc: Some(ssrc),
                dtx: None,
            }],
            rtcp: RtcpParameters {
                cname: Some(producer.cname.clone()),
                reduced_size: Some(true),
            },
        },
        extension_ids,
        nack,
        red,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chrome_produce() -> RtpParameters {
        serde_json::from_value(json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,
          "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc","parameter":""}]}],
         "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}},
           {"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1,"encrypt":false,"parameters":{}},
           {"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","id":3,"encrypt":false,"parameters":{}}],
         "encodings":[{"ssrc":4108792723u32,"dtx":false}],"rtcp":{"cname":"UvVHyckjW26uo8T8","reducedSize":true},"msid":"- abc"}))
        .unwrap()
    }

    fn client_caps(with_mid: bool) -> RtpCapabilities {
        let mut caps = router_capabilities();
        if !with_mid {
            caps.header_extensions.retain(|e| e.uri != EXT_MID);
        }
        caps
    }

    #[test]
    fn router_capabilities_have_the_contract_shape() {
        let v = serde_json::to_value(router_capabilities()).unwrap();
        assert_eq!(
            v,
            json!({"codecs":[{"kind":"audio","mimeType":"audio/opus","preferredPayloadType":100,"clockRate":48000,
              "channels":2,"parameters":{"useinbandfec":1,"usedtx":1},"rtcpFeedback":[{"type":"nack","parameter":""}]}],
             "headerExtensions":[
              {"kind":"audio","uri":EXT_MID,"preferredId":1,"preferredEncrypt":false,"direction":"sendrecv"},
              {"kind":"audio","uri":EXT_ABS_SEND_TIME,"preferredId":4,"preferredEncrypt":false,"direction":"sendrecv"},
              {"kind":"audio","uri":EXT_AUDIO_LEVEL,"preferredId":10,"preferredEncrypt":false,"direction":"sendrecv"}]})
        );
    }

    #[test]
    fn chrome_producer_maps_to_router_ids() {
        let p = validate_producer("audio", &chrome_produce()).unwrap();
        assert_eq!(p.payload_type, 111);
        assert_eq!(p.extensions, vec![(4, 1), (1, 10)]);
        assert_eq!(p.mid_extension_id, Some(4));
        assert_eq!(p.ssrc, Some(4108792723));
        assert_eq!(p.cname, "UvVHyckjW26uo8T8");
    }

    #[test]
    fn a_producer_listing_red_has_its_payload_type() {
        assert_eq!(
            validate_producer("audio", &chrome_produce())
                .unwrap()
                .red_payload_type,
            None
        );
        let mut p = chrome_produce();
        let mut red = p.codecs[0].clone();
        (red.mime_type, red.payload_type) = ("audio/red".into(), 63);
        p.codecs.insert(0, red);
        let got = validate_producer("audio", &p).unwrap();
        assert_eq!((got.payload_type, got.red_payload_type), (111, Some(63)));
        p.codecs[0].payload_type = 111;
        assert!(validate_producer("audio", &p)
            .unwrap_err()
            .contains("audio/red"));
    }

    #[test]
    fn producer_errors_name_the_field() {
        assert!(validate_producer("video", &chrome_produce())
            .unwrap_err()
            .contains("kind"));
        let mut p = chrome_produce();
        p.codecs[0].mime_type = "audio/PCMU".into();
        assert!(validate_producer("audio", &p)
            .unwrap_err()
            .contains("rtpParameters.codecs"));
        let mut p = chrome_produce();
        p.encodings.clear();
        assert!(
            validate_producer("audio", &p).is_ok(),
            "mid + mid extension identify the stream"
        );
        p.mid = None;
        assert!(validate_producer("audio", &p)
            .unwrap_err()
            .contains("encodings[0].ssrc"));
        let mut p = chrome_produce();
        p.header_extensions[1].id = 4;
        assert!(validate_producer("audio", &p)
            .unwrap_err()
            .contains("used twice"));
    }

    #[test]
    fn consumer_uses_router_pt_and_shared_extensions() {
        let p = validate_producer("audio", &chrome_produce()).unwrap();
        let c = consumer_parameters(&p, &client_caps(false), 1234, "3".into()).unwrap();
        assert_eq!(c.extension_ids, vec![10]);
        let v = serde_json::to_value(&c.parameters).unwrap();
        assert_eq!(
            v,
            json!({"mid":"3","codecs":[{"mimeType":"audio/opus","payloadType":100,"clockRate":48000,"channels":2,
              "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"nack","parameter":""}]}],
              "headerExtensions":[{"uri":EXT_AUDIO_LEVEL,"id":10,"encrypt":false,"parameters":{}}],
              "encodings":[{"ssrc":1234}],"rtcp":{"cname":"UvVHyckjW26uo8T8","reducedSize":true}})
        );
        assert!(c.nack);
        let c = consumer_parameters(&p, &client_caps(true), 1, "0".into()).unwrap();
        assert_eq!(c.extension_ids, vec![1, 10]);
    }

    #[test]
    fn nack_is_negotiated_only_when_both_sides_have_it() {
        let p = validate_producer("audio", &chrome_produce()).unwrap();
        assert!(!p.nack, "Chrome's producer offers only transport-cc");
        let mut caps = client_caps(true);
        caps.codecs[0].rtcp_feedback = vec![RtcpFeedback {
            kind: "nack".into(),
            parameter: "pli".into(),
        }];
        let c = consumer_parameters(&p, &caps, 1, "0".into()).unwrap();
        assert!(!c.nack, "`nack pli` is not generic NACK");
        assert_eq!(c.parameters.codecs[0].rtcp_feedback, vec![]);
        caps.codecs[0].rtcp_feedback.clear();
        assert!(!consumer_parameters(&p, &caps, 1, "0".into()).unwrap().nack);

        let mut produce = chrome_produce();
        produce.codecs[0].rtcp_feedback.push(nack_feedback());
        assert!(validate_producer("audio", &produce).unwrap().nack);
    }

    #[test]
    fn a_client_that_lists_red_gets_red_first_and_no_nack() {
        let p = validate_producer("audio", &chrome_produce()).unwrap();
        let mut caps = client_caps(true);
        caps.codecs.push(RtpCodecCapability {
            kind: Some("audio".into()),
            mime_type: "audio/red".into(),
            preferred_payload_type: Some(63),
            clock_rate: OPUS_CLOCK_RATE,
            channels: Some(OPUS_CHANNELS),
            parameters: Map::new(),
            rtcp_feedback: Vec::new(),
        });
        let c = consumer_parameters(&p, &caps, 1, "0".into()).unwrap();
        assert!(c.red && !c.nack);
        let v = serde_json::to_value(&c.parameters.codecs).unwrap();
        assert_eq!(
            v,
            json!([{"mimeType":"audio/red","payloadType":101,"clockRate":48000,"channels":2,"parameters":{"100/100":""},"rtcpFeedback":[]},
                   {"mimeType":"audio/opus","payloadType":100,"clockRate":48000,"channels":2,
                    "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[]}])
        );
        // Not for another clock or channel count.
        caps.codecs[1].channels = Some(1);
        assert!(!consumer_parameters(&p, &caps, 1, "0".into()).unwrap().red);
    }

    #[test]
    fn client_without_opus_cannot_consume() {
        let p = validate_producer("audio", &chrome_produce()).unwrap();
        let mut caps = client_caps(true);
        caps.codecs[0].channels = Some(1);
        assert!(consumer_parameters(&p, &caps, 1, "0".into())
            .unwrap_err()
            .contains("cannot consume"));
    }
}
