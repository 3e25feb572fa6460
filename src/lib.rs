//! choir: a voice SFU.

pub mod rtcp;
pub mod rtp;
