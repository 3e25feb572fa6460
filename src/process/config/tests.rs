//! Configuration tests: flags, values, slices.

use super::values::*;
use super::*;

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut v = vec!["choir"];
    v.extend_from_slice(args);
    Config::from_args(v)
}

#[test]
fn defaults_validate() {
    let c = parse(&["--announced-ip", "203.0.113.5", "--shards", "2"]).unwrap();
    assert_eq!(c.rtc_min_port, 40000);
    assert_eq!(c.rtc_max_port, 49999);
    assert_eq!(c.listen, "0.0.0.0:3001".parse::<SocketAddr>().unwrap());
    assert_eq!(c.consent_timeout, Duration::from_secs(30));
    assert_eq!(c.port_slice(0), (40000, 44999));
    assert_eq!(c.port_slice(1), (45000, 49999));
}

#[test]
fn slices_cover_the_range_without_overlap() {
    let c = parse(&[
        "--rtc-min-port",
        "1000",
        "--rtc-max-port",
        "1006",
        "--shards",
        "3",
    ])
    .unwrap();
    let slices: Vec<_> = (0..3).map(|i| c.port_slice(i)).collect();
    assert_eq!(slices, vec![(1000, 1001), (1002, 1003), (1004, 1006)]);
}

#[test]
fn invalid_values_name_the_flag() {
    let e = parse(&["--rtc-min-port", "abc"]).unwrap_err();
    assert_eq!(
        e.0,
        "invalid --rtc-min-port \"abc\": not a port number (1-65535)"
    );
    let e = parse(&["--rtc-min-port", "5000", "--rtc-max-port", "5000"]).unwrap_err();
    assert!(
        e.0.contains("--rtc-min-port 5000: must be below --rtc-max-port 5000"),
        "{e}"
    );
    let e = parse(&["--announced-ip", "1.2.3"]).unwrap_err();
    assert!(e.0.starts_with("invalid --announced-ip \"1.2.3\""), "{e}");
    let e = parse(&["--announced-ip", "0.0.0.0"]).unwrap_err();
    assert!(e.0.contains("unspecified"), "{e}");
    let e = parse(&[
        "--rtc-min-port",
        "1000",
        "--rtc-max-port",
        "1002",
        "--shards",
        "4",
    ])
    .unwrap_err();
    assert!(e.0.contains("3 ports cannot be split over 4 shards"), "{e}");
    assert!(parse(&["--shards", "0"])
        .unwrap_err()
        .0
        .contains("--shards"));
    assert!(parse(&["--listen", "nope"])
        .unwrap_err()
        .0
        .contains("--listen"));
    assert!(parse(&["--consent-timeout", "3x"])
        .unwrap_err()
        .0
        .contains("--consent-timeout"));
    assert!(parse(&["--pin", "maybe"]).unwrap_err().0.contains("--pin"));
}

#[test]
fn listen_ip_lists() {
    let d: IpAddr = "203.0.113.5".parse().unwrap();
    let l = parse_listen_ips("0.0.0.0, ::1, 10.0.0.5=198.51.100.1, ::=2001:db8::5", d);
    assert!(l.is_err(), "0.0.0.0 and 10.0.0.5 overlap");
    let l = parse_listen_ips("0.0.0.0, ::1", d).unwrap();
    assert_eq!(
        l[0],
        ListenIp {
            ip: "0.0.0.0".parse().unwrap(),
            announced: d
        }
    );
    assert_eq!(l[1].announced, "::1".parse::<IpAddr>().unwrap());
    let l = parse_listen_ips("10.0.0.5=198.51.100.1,::=2001:db8::5", d).unwrap();
    assert_eq!(l[0].announced, "198.51.100.1".parse::<IpAddr>().unwrap());
    assert_eq!(l[1].announced, "2001:db8::5".parse::<IpAddr>().unwrap());
    assert!(parse_listen_ips("::", d)
        .unwrap_err()
        .contains("needs an announced"));
    assert!(parse_listen_ips("x", d).unwrap_err().contains("not an IP"));
    assert!(parse_listen_ips("::1,::1", d)
        .unwrap_err()
        .contains("twice"));
    assert!(parse_listen_ips("", d).is_err());
    let e = parse(&["--listen-ips", "nope"]).unwrap_err();
    assert!(e.0.starts_with("invalid --listen-ips \"nope\""), "{e}");
    let e = parse(&["--port-mode", "many"]).unwrap_err();
    assert!(e.0.contains("--port-mode"), "{e}");
    let e = parse(&["--enable-udp", "false", "--enable-tcp", "false"]).unwrap_err();
    assert!(e.0.contains("need UDP or TCP"), "{e}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("0s"), None);
    assert_eq!(parse_duration("-1s"), None);
    assert_eq!(parse_duration("s"), None);
}

#[test]
fn link_port_and_announce() {
    let c = parse(&[
        "--link-port",
        "39000",
        "--link-announce",
        "198.51.100.7:52000",
        "--shards",
        "2",
    ])
    .unwrap();
    assert_eq!(c.cluster.link_port, Some(39000));
    assert_eq!(
        c.cluster.link_announce,
        Some("198.51.100.7:52000".parse().unwrap())
    );
    let e = parse(&["--link-announce", "198.51.100.7:52000"]).unwrap_err();
    assert!(e.0.contains("needs --link-port"), "{e}");
    let e = parse(&["--link-port", "49999", "--shards", "2"]).unwrap_err();
    assert!(e.0.contains("outside the RTC range 40000-49999"), "{e}");
    let e = parse(&["--link-port", "65535", "--shards", "2"]).unwrap_err();
    assert!(e.0.contains("--link-port \"65535\""), "{e}");
    let e = parse(&["--link-port", "39000", "--link-announce", "0.0.0.0:1"]).unwrap_err();
    assert!(e.0.contains("specific IP"), "{e}");
}
