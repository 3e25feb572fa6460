//! The speaking indicator settings (`CHOIR_SPEAKING_*`).

use std::time::Duration;

use super::{parse_duration, Bad, Cli, ConfigError};
use crate::sfu::SpeakingSettings;

/// Shortest window: the shard's timer runs every 20 ms.
const MIN_INTERVAL: Duration = Duration::from_millis(20);
const MAX_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn parse(cli: &Cli, bad: Bad<'_>) -> Result<SpeakingSettings, ConfigError> {
    let zero_or = |v: &str| match v.trim() {
        "0" | "0s" | "0ms" => Some(Duration::ZERO),
        v => parse_duration(v),
    };
    let interval = zero_or(&cli.speaking_interval)
        .filter(|d| d.is_zero() || (MIN_INTERVAL..=MAX_INTERVAL).contains(d))
        .ok_or_else(|| {
            bad(
                "speaking_interval",
                &cli.speaking_interval,
                "not a window between 20ms and 10s (0 = off)",
            )
        })?;
    let threshold_dbov = cli
        .speaking_threshold
        .trim()
        .parse::<i8>()
        .ok()
        .filter(|t| (-127..=0).contains(t))
        .ok_or_else(|| {
            bad(
                "speaking_threshold",
                &cli.speaking_threshold,
                "not a level in dBov (-127 to 0, e.g. -40)",
            )
        })?;
    let ratio_permille = parse_share(&cli.speaking_ratio).ok_or_else(|| {
        bad(
            "speaking_ratio",
            &cli.speaking_ratio,
            "not a share above 0 and at most 1 (e.g. 0.4 or 40%)",
        )
    })?;
    let hang = zero_or(&cli.speaking_hang).ok_or_else(|| {
        bad(
            "speaking_hang",
            &cli.speaking_hang,
            "not a duration (e.g. 600ms)",
        )
    })?;
    Ok(SpeakingSettings {
        interval,
        threshold_dbov,
        ratio_permille,
        hang,
    })
}

/// "0.4" or "40%" → 400 (thousandths), in (0, 1].
fn parse_share(v: &str) -> Option<u16> {
    let v = v.trim();
    let share = match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => v.parse::<f64>().ok()?,
    };
    let permille = (share * 1000.0).round();
    (share > 0.0 && share <= 1.0 && permille >= 1.0).then_some(permille as u16)
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn shares() {
        assert_eq!(parse_share("0.4"), Some(400));
        assert_eq!(parse_share(" 40% "), Some(400));
        assert_eq!(parse_share("1"), Some(1000));
        for bad in ["0", "1.5", "-0.2", "x", "", "0.0001", "NaN", "inf"] {
            assert_eq!(parse_share(bad), None, "{bad}");
        }
    }
}
