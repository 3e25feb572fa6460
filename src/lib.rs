//! choir: a voice SFU.

pub mod srtp;
