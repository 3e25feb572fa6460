use serde_json::json;

use super::*;

#[test]
fn both_ends_derive_one_key_per_direction_and_a_fresh_link_id_a_fresh_key() {
    let s = Secret::new(&[7u8; 32]).unwrap();
    let (a_send, a_receive) = keys(&s, ("node-1", "i1", 11), ("node-2", "i2", 22), "room");
    let (b_send, b_receive) = keys(&s, ("node-2", "i2", 22), ("node-1", "i1", 11), "room");
    assert_eq!(a_send, b_receive);
    assert_eq!(b_send, a_receive);
    assert_ne!(a_send, a_receive);
    let (again, _) = keys(&s, ("node-1", "i1", 11), ("node-2", "i2", 23), "room");
    assert_ne!(again, a_send, "a new receive id gives a new key");
    let (other_room, _) = keys(&s, ("node-1", "i1", 11), ("node-2", "i2", 22), "room2");
    assert_ne!(other_room, a_send);
}

#[test]
fn announcements_keep_their_wire_form() {
    let m = EventMessage {
        channel: "c".into(),
        node: "n".into(),
        incarnation: "i".into(),
        event: Announce::Paused {
            producer_id: "p".into(),
            paused: true,
        },
        nonce: 9,
    };
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        v,
        json!({"channel": "c", "node": "n", "incarnation": "i", "nonce": 9,
               "event": {"type": "paused", "producerId": "p", "paused": true}})
    );
    let back: EventMessage = serde_json::from_value(v).unwrap();
    assert!(matches!(back.event, Announce::Paused { paused: true, .. }));
    let left: Announce = serde_json::from_value(
        json!({"type": "participantLeft", "userId": "u", "reason": "leave"}),
    )
    .unwrap();
    assert!(matches!(left, Announce::ParticipantLeft { .. }));
    assert_ne!(nonce(), nonce(), "equal announcements get distinct bodies");
}

#[test]
fn a_link_port_behind_a_forward_is_announced_at_the_forward() {
    let config = crate::cluster::config::ClusterConfig {
        redis_url: None,
        node_id: Some("n".into()),
        node_url: None,
        region: String::new(),
        drain_timeout: std::time::Duration::from_secs(1),
        secret: None,
        cluster_secret: "none",
        link_port: Some(39000),
        link_announce: Some("198.51.100.7:52000".parse().unwrap()),
    };
    let ip: std::net::IpAddr = "203.0.113.5".parse().unwrap();
    let api: SocketAddr = "0.0.0.0:3001".parse().unwrap();
    let id = crate::cluster::Identity::new(&config, api, ip);
    assert_eq!(
        id.link_addr(39001),
        "198.51.100.7:52001".parse::<SocketAddr>().unwrap()
    );
    let plain = crate::cluster::config::ClusterConfig {
        link_port: None,
        link_announce: None,
        ..config
    };
    let id = crate::cluster::Identity::new(&plain, api, ip);
    assert_eq!(
        id.link_addr(41234),
        "203.0.113.5:41234".parse::<SocketAddr>().unwrap()
    );
}
