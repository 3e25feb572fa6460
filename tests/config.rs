//! Configuration through the real binary: env vars, flags (which win), and every invalid value.

#[path = "common/print_config.rs"]
mod print_config;

use print_config::{choir, effective};

#[test]
fn env_is_read_and_flags_win() {
    let env = [
        ("SFU_ANNOUNCED_IP", "203.0.113.5"),
        ("RTC_MIN_PORT", "41000"),
        ("RTC_MAX_PORT", "41999"),
        ("CHOIR_SHARDS", "3"),
        ("CHOIR_LISTEN", "127.0.0.1:4000"),
    ];
    let c = effective(&[], &env);
    assert_eq!(c["announcedIp"], "203.0.113.5");
    assert_eq!(
        (c["rtcMinPort"].as_u64(), c["rtcMaxPort"].as_u64()),
        (Some(41000), Some(41999))
    );
    assert_eq!(c["shards"], 3);
    assert_eq!(c["listen"], "127.0.0.1:4000");
    let c = effective(
        &[
            "--announced-ip",
            "198.51.100.7",
            "--rtc-min-port",
            "41500",
            "--shards",
            "2",
        ],
        &env,
    );
    assert_eq!(c["announcedIp"], "198.51.100.7");
    assert_eq!(c["rtcMinPort"], 41500);
    assert_eq!(
        c["rtcMaxPort"], 41999,
        "env still applies where no flag is given"
    );
    assert_eq!(c["shards"], 2);
}

#[test]
fn defaults_follow_the_plan() {
    let c = effective(&[], &[]);
    assert_eq!(
        (c["rtcMinPort"].as_u64(), c["rtcMaxPort"].as_u64()),
        (Some(40000), Some(49999))
    );
    assert_eq!(c["listen"], "0.0.0.0:3001");
    assert!(c["shards"].as_u64().unwrap() >= 1);
    assert!(c["announcedIp"]
        .as_str()
        .unwrap()
        .parse::<std::net::Ipv4Addr>()
        .is_ok());
}

/// Each invalid value: exit status 2 and one line naming it.
#[test]
fn invalid_values_exit_2_with_one_line() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&[], &[("RTC_MIN_PORT", "abc")], "RTC_MIN_PORT \"abc\""),
        (
            &["--rtc-max-port", "70000"],
            &[],
            "--rtc-max-port \"70000\"",
        ),
        (
            &[],
            &[("RTC_MIN_PORT", "5000"), ("RTC_MAX_PORT", "4000")],
            "RTC_MIN_PORT 5000: must be below RTC_MAX_PORT 4000",
        ),
        (
            &[
                "--rtc-min-port",
                "5000",
                "--rtc-max-port",
                "5001",
                "--shards",
                "3",
            ],
            &[],
            "2 ports cannot be split over 3 shards",
        ),
        (
            &[],
            &[("SFU_ANNOUNCED_IP", "not-an-ip")],
            "SFU_ANNOUNCED_IP \"not-an-ip\"",
        ),
        (&["--listen", "localhost"], &[], "--listen \"localhost\""),
        (&[], &[("CHOIR_SHARDS", "zero")], "CHOIR_SHARDS \"zero\""),
        (
            &["--consent-timeout", "forever"],
            &[],
            "--consent-timeout \"forever\"",
        ),
    ];
    for (args, env, expected) in cases {
        let out = choir(args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.starts_with("choir: invalid "), "{stderr:?}");
        assert!(
            stderr.contains(expected),
            "{stderr:?} should name {expected:?}"
        );
    }
}

#[test]
fn help_documents_every_setting() {
    let out = choir(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "SFU_ANNOUNCED_IP",
        "RTC_MIN_PORT",
        "RTC_MAX_PORT",
        "CHOIR_LISTEN",
        "CHOIR_SHARDS",
        "CHOIR_CORS_ORIGIN",
        "CHOIR_CONSENT_TIMEOUT",
    ] {
        assert!(help.contains(needle), "--help mentions {needle}");
    }
}
