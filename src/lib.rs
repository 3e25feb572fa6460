//! choir: a voice SFU.
pub mod dtls;
