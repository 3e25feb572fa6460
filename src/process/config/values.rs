//! Parsing of individual configuration values.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::ListenIp;

/// Parses "IP[=ANNOUNCED],...": a specific IP without "=" announces itself, an unspecified
/// IPv4 one announces `default_announced`; an unspecified IPv6 one must name its address.
pub(super) fn parse_listen_ips(
    list: &str,
    default_announced: IpAddr,
) -> Result<Vec<ListenIp>, String> {
    let mut out: Vec<ListenIp> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (ip, announced) = match item.split_once('=') {
            Some((ip, a)) => (ip.trim(), Some(a.trim())),
            None => (item, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let announced = match announced {
            Some(a) => a
                .parse::<IpAddr>()
                .map_err(|_| format!("{a:?} is not an IP address"))?,
            None if !ip.is_unspecified() => ip,
            None if ip.is_ipv4() => default_announced,
            None => return Err(format!("{ip} needs an announced address ({ip}=ANNOUNCED)")),
        };
        if announced.is_unspecified() {
            return Err(format!("{announced} cannot be announced"));
        }
        if out.iter().any(|l| l.ip == ip) {
            return Err(format!("{ip} is listed twice"));
        }
        let family_clash = out.iter().any(|l| {
            l.ip.is_ipv4() == ip.is_ipv4() && (l.ip.is_unspecified() || ip.is_unspecified())
        });
        if family_clash {
            return Err(format!(
                "{ip} overlaps an unspecified address of the same family"
            ));
        }
        out.push(ListenIp { ip, announced });
    }
    if out.is_empty() {
        return Err("no address listed".into());
    }
    Ok(out)
}

pub(super) fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses "30s", "500ms", "2m" or a bare number of seconds; must be positive and ≤ 1 day.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs > 0.0 && secs <= 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// The first IPv4 address of an up, non-loopback interface (as the plan's getLocalIp()).
pub(super) fn first_non_loopback_ipv4() -> Option<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        if !up || loopback || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of family sa_family.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_INET {
            // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() && !ip.is_unspecified() {
                found = Some(IpAddr::V4(ip));
                break;
            }
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    found
}
