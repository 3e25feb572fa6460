//! The join deadline in the sans-IO core, on an explicit clock: a participant with no connected
//! transport is removed once its last API call is older than the join timeout; one with a
//! connected send transport stays however long its recv transport waits for a consumer; a room
//! nobody joined goes too.

#[path = "common/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::time::Duration;

use choir::client::{ClientTransport, ServerParams};
use choir::sfu::api::{CreateTransportRequest, Direction, Event};
use choir::sfu::RoomLimits;
use choir::wire::dtls::{self, DtlsIdentity};
use loopback::Loopback;

const TIMEOUT: Duration = Duration::from_secs(2);

fn create(lb: &mut Loopback, user: &str, port: u16) {
    let req = CreateTransportRequest {
        channel_id: "room".into(),
        user_id: user.into(),
        direction: Direction::Send,
    };
    lb.sfu.create_transport(&req, port, lb.now).unwrap();
}

fn users(lb: &Loopback) -> u64 {
    lb.sfu.counts().participants
}

#[test]
fn participants_without_a_connected_transport_and_empty_rooms_expire() {
    let mut lb = Loopback::new();
    lb.sfu.set_limits(RoomLimits {
        join_timeout: TIMEOUT,
        ..RoomLimits::default()
    });
    let alice = lb.join("room", "alice", true);
    let bob = lb.join("room", "bob", true);
    lb.consume("room", bob, alice);
    // Dave produces; his recv transport waits for a first consumer (its browser does no ICE
    // on it yet): a client with wrong credentials stands for that.
    let dave = lb.join("room", "dave", true);
    lb.members[dave].recv.client = ClientTransport::new(
        ServerParams {
            address: SocketAddr::from(([127, 0, 0, 1], 9)),
            ufrag: "nobody".into(),
            password: "nothing-to-see-here-at-all".into(),
            fingerprint: String::new(),
        },
        dtls::DtlsRole::Client,
        dtls::dtls_config(),
        DtlsIdentity::generate().unwrap(),
        lb.now,
    );
    // Carol and Erin create a transport and never connect; a room is opened and never joined.
    create(&mut lb, "carol", 40_901);
    create(&mut lb, "erin", 40_902);
    lb.sfu.open_room("nobody-came");
    assert_eq!(lb.sfu.counts().rooms, 2);

    let connected = |lb: &Loopback| {
        let m = &lb.members;
        [alice, bob]
            .iter()
            .all(|&i| m[i].send.client.is_connected() && m[i].recv.client.is_connected())
            && m[dave].send.client.is_connected()
    };
    for _ in 0..500 {
        if connected(&lb) {
            break;
        }
        lb.step(Duration::from_millis(10));
    }
    assert!(
        connected(&lb),
        "alice, bob and dave's send transport connect"
    );
    assert!(!lb.members[dave].recv.client.is_connected());

    let start = lb.now;
    let mut touched = false;
    let mut left = Vec::new();
    let mut closed = Vec::new();
    while lb.now < start + TIMEOUT + Duration::from_millis(600) {
        lb.step(Duration::from_millis(10));
        // Erin keeps calling the API (e.g. `GET producers`) half-way: her deadline restarts.
        if !touched && lb.now >= start + TIMEOUT / 2 {
            lb.sfu.touch("room", Some("erin"), lb.now);
            touched = true;
        }
        for ev in lb.sfu.take_events() {
            if let Event::ParticipantLeft { user_id, reason } = ev.event {
                left.push((user_id, reason));
            }
        }
        closed.extend(lb.sfu.take_closed().into_iter().map(|(_, port)| port));
    }
    assert_eq!(left, [("carol".to_string(), "join timeout".to_string())]);
    assert_eq!(closed, [40_901], "carol's port is released");
    assert_eq!(users(&lb), 4, "alice, bob, dave and erin stay");
    assert_eq!(lb.sfu.counts().rooms, 1, "the room nobody joined is gone");
    assert_eq!(lb.sfu.counters().join_timeouts, 1);
    assert_eq!(lb.sfu.counters().rooms_expired, 1);

    // Erin's restarted deadline passes too; the others are connected and stay.
    while lb.now < start + TIMEOUT * 2 {
        lb.step(Duration::from_millis(10));
    }
    assert_eq!(users(&lb), 3);
    assert_eq!(lb.sfu.counters().join_timeouts, 2);
    assert!(lb.members.iter().all(|m| m.send.client.is_connected()));
}

#[test]
fn a_zero_join_timeout_removes_nothing() {
    let mut lb = Loopback::new();
    lb.sfu.open_room("room");
    create(&mut lb, "carol", 40_901);
    lb.sfu.open_room("nobody-came");
    for _ in 0..100 {
        lb.step(Duration::from_secs(60));
    }
    assert_eq!((lb.sfu.counts().rooms, users(&lb)), (2, 1));
}

/// A `create-transport` whose caller has gone before the reply: the shard closes the
/// transport again, and the participant that call made.
#[test]
fn an_abandoned_transport_is_closed_with_the_participant_it_made() {
    let mut lb = Loopback::new();
    lb.sfu.open_room("room");
    create(&mut lb, "keeper", 40_900);
    let req = CreateTransportRequest {
        channel_id: "room".into(),
        user_id: "gone".into(),
        direction: Direction::Recv,
    };
    let (_, options) = lb.sfu.create_transport(&req, 40_901, lb.now).unwrap();
    assert_eq!(users(&lb), 2);
    lb.sfu
        .abandon_transport("room", "gone", "no-such-transport");
    assert_eq!(users(&lb), 2, "an unknown id changes nothing");
    lb.sfu.abandon_transport("room", "gone", &options.id);
    assert_eq!(users(&lb), 1);
    let closed: Vec<u16> = lb.sfu.take_closed().into_iter().map(|(_, p)| p).collect();
    assert_eq!(closed, [40_901]);
    // A participant with another transport keeps it, and its place.
    let keeper_recv = CreateTransportRequest {
        channel_id: "room".into(),
        user_id: "keeper".into(),
        direction: Direction::Recv,
    };
    let (_, recv) = lb
        .sfu
        .create_transport(&keeper_recv, 40_903, lb.now)
        .unwrap();
    lb.sfu.abandon_transport("room", "keeper", &recv.id);
    assert_eq!(lb.sfu.counts().transports, 1, "keeper's send");
    assert_eq!(users(&lb), 1);
}
