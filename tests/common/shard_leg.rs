//! A shard driven in-process by the tests (tests/cascade_shell.rs, tests/shard_loop_alloc.rs):
//! its commands and the client legs that talk to it.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Instant;

use choir::client::{ClientTransport, ServerParams};
use choir::sfu::api::{
    ConnectTransportRequest, CreateTransportRequest, Direction, DtlsParameters, DtlsRole,
    Fingerprint,
};
use choir::shard::{Command, Reply, ShardHandle};
use choir::wire::dtls::{self, DtlsIdentity};
use futures_lite::future::block_on;

/// A client transport of a test peer and its socket.
pub struct Leg {
    pub client: ClientTransport,
    pub socket: UdpSocket,
}

/// A command to `shard`, its reply awaited.
pub fn call(shard: &ShardHandle, command: Command) -> Reply {
    block_on(shard.call(command)).expect("the shard answers")
}

/// A transport of `user` in the room "room" of `shard`, connected from a `choir::client`
/// transport on a fresh loopback socket (ICE and DTLS still to run: see the tests' pumps).
pub fn leg(
    shard: &ShardHandle,
    user: &str,
    direction: Direction,
    config: &std::sync::Arc<dimpl::Config>,
) -> Leg {
    let req = CreateTransportRequest {
        channel_id: "room".into(),
        user_id: user.into(),
        direction,
    };
    let Reply::Transport(t) = call(shard, Command::CreateTransport(req)) else {
        panic!("create-transport");
    };
    let candidate = t
        .ice_candidates
        .iter()
        .find(|c| c.protocol == "udp")
        .unwrap();
    let server = ServerParams {
        address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), candidate.port),
        ufrag: t.ice_parameters.username_fragment.clone(),
        password: t.ice_parameters.password.clone(),
        fingerprint: t.dtls_parameters.fingerprints[0].value.clone(),
    };
    let client = ClientTransport::new(
        server,
        dtls::DtlsRole::Client,
        config.clone(),
        DtlsIdentity::generate().unwrap(),
        Instant::now(),
    );
    let connect = ConnectTransportRequest {
        channel_id: "room".into(),
        user_id: user.into(),
        transport_id: t.id.clone(),
        dtls_parameters: DtlsParameters {
            role: Some(DtlsRole::Client),
            fingerprints: vec![Fingerprint {
                algorithm: "sha-256".into(),
                value: client.fingerprint().into(),
            }],
        },
    };
    call(shard, Command::ConnectTransport(connect));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    Leg { client, socket }
}
