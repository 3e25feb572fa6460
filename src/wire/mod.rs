//! The wire protocols of a WebRTC audio transport, each a sans-IO module: parsers, writers and
//! state machines fed bytes and an explicit `now`, returning what to send.
//!
//! In a datagram's order: [`demux`] (RFC 7983) tells STUN, DTLS and SRTP/SRTCP apart; [`stun`]
//! (RFC 8489) and [`ice`] (ICE-lite, RFC 8445) answer connectivity checks and keep consent
//! (RFC 7675); [`dtls`] (DTLS 1.2 over dimpl, RFC 5764 keying) makes the SRTP keys; [`srtp`]
//! (RFC 3711, AES-GCM RFC 7714) protects packets; [`rtp`] (RFC 3550, header extensions RFC 8285,
//! audio levels RFC 6464) parses and rewrites them; [`rtcp`] (RFC 3550, 4585) reports.
//!
//! Between nodes of a cascade, [`relay`] seals the node-to-node link's datagrams (AES-256-GCM,
//! an RFC 4303 style replay window, a first octet RFC 7983 leaves unassigned).

pub mod demux;
pub mod dtls;
pub mod ice;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod stun;
