//! The load generator's output: a table on stdout, a CSV and an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One measured step.
#[derive(Clone, Debug)]
pub struct Row {
    pub target: String,
    pub rooms: usize,
    pub participants: usize,
    pub streams: usize,
    pub offered_pps: f64,
    pub forwarded_pps: f64,
    pub loss_pct: f64,
    /// Latency percentiles p50, p90, p99, p99.9, max, in µs (kernel receive stamps).
    pub latency_us: [f64; 5],
    /// p99 measured at the generator's `recvmmsg` return, µs.
    pub app_p99_us: f64,
    pub server_cpu_pct: f64,
    /// Hypervisor steal on the server's and the generator's CPUs, % of their time.
    pub server_steal_pct: f64,
    pub gen_steal_pct: f64,
    pub server_rss_mib: f64,
    pub gen_cpu_pct: f64,
    pub gen_lag_p99_us: f64,
    pub server_rx_drops: u64,
    pub gen_rx_drops: u64,
    pub server_send_failed: u64,
    pub good: bool,
    /// The server's open file descriptors after the step (soak: must not grow).
    pub server_fds: u64,
}

pub const HEADER: &str = "target,rooms,participants,streams,offered_pps,forwarded_pps,loss_pct,\
p50_us,p90_us,p99_us,p999_us,max_us,app_p99_us,server_cpu_pct,server_steal_pct,gen_steal_pct,server_rss_mib,\
gen_cpu_pct,gen_lag_p99_us,server_rx_drops,gen_rx_drops,server_send_failed,good,server_fds";

pub fn csv_line(r: &Row) -> String {
    let l = r.latency_us;
    format!(
        "{},{},{},{},{:.0},{:.0},{:.6},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{}",
        r.target,
        r.rooms,
        r.participants,
        r.streams,
        r.offered_pps,
        r.forwarded_pps,
        r.loss_pct,
        l[0],
        l[1],
        l[2],
        l[3],
        l[4],
        r.app_p99_us,
        r.server_cpu_pct,
        r.server_steal_pct,
        r.gen_steal_pct,
        r.server_rss_mib,
        r.gen_cpu_pct,
        r.gen_lag_p99_us,
        r.server_rx_drops,
        r.gen_rx_drops,
        r.server_send_failed,
        r.good,
        r.server_fds
    )
}

pub fn table_header() -> String {
    format!(
        "{:<12} {:>7} {:>10} {:>10} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6} {:>7} {:>5} {:>9}",
        "target",
        "streams",
        "offer/s",
        "fwd/s",
        "loss%",
        "p50µs",
        "p90µs",
        "p99µs",
        "p999µs",
        "maxµs",
        "appp99",
        "cpu%",
        "steal%",
        "rssMiB",
        "gen%",
        "drops s/g"
    )
}

pub fn table_line(r: &Row) -> String {
    let l = r.latency_us;
    format!(
        "{:<12} {:>7} {:>10.0} {:>10.0} {:>8.4} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>8.0} {:>6.1} {:>6} {:>7.1} {:>5.1} {:>9}{}",
        r.target,
        r.streams,
        r.offered_pps,
        r.forwarded_pps,
        r.loss_pct,
        l[0],
        l[1],
        l[2],
        l[3],
        l[4],
        r.app_p99_us,
        r.server_cpu_pct,
        format!("{:.0}/{:.0}", r.server_steal_pct, r.gen_steal_pct),
        r.server_rss_mib,
        r.gen_cpu_pct,
        format!("{}/{}", r.server_rx_drops + r.server_send_failed, r.gen_rx_drops),
        if r.good { "" } else { "  ✗" }
    )
}

/// Reads rows back from a CSV written by [`write_csv`] (for `--plot`).
pub fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| {
            f.get(i)
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let int = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        rows.push(Row {
            target: f.first().unwrap_or(&"?").to_string(),
            rooms: int(1) as usize,
            participants: int(2) as usize,
            streams: int(3) as usize,
            offered_pps: num(4),
            forwarded_pps: num(5),
            loss_pct: num(6),
            latency_us: [num(7), num(8), num(9), num(10), num(11)],
            app_p99_us: num(12),
            server_cpu_pct: num(13),
            server_steal_pct: num(14),
            gen_steal_pct: num(15),
            server_rss_mib: num(16),
            gen_cpu_pct: num(17),
            gen_lag_p99_us: num(18),
            server_rx_drops: int(19),
            gen_rx_drops: int(20),
            server_send_failed: int(21),
            good: f.get(22) == Some(&"true"),
            server_fds: int(23),
        });
    }
    Ok(rows)
}

pub fn write_csv(rows: &[Row], path: &Path) -> std::io::Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADER}");
    for r in rows {
        let _ = writeln!(s, "{}", csv_line(r));
    }
    std::fs::write(path, s)
}

/// Dash pattern (dash, gap in pixels) of each plotted percentile: p50 solid, p99 dashed,
/// p99.9 dotted.
const PERCENTILES: [(usize, &str, (u32, u32)); 3] = [
    (0, "p50", (0, 0)),
    (2, "p99", (10, 5)),
    (3, "p99.9", (2, 4)),
];

/// A line in `style`, solid or dashed.
fn draw_line<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, LogCoord<f64>>>,
    points: &[(f64, f64)],
    dash: (u32, u32),
    style: ShapeStyle,
) -> Result<(), String> {
    if dash.0 == 0 {
        chart
            .draw_series(LineSeries::new(points.to_vec(), style))
            .map_err(|e| e.to_string())?;
    } else {
        chart
            .draw_series(DashedLineSeries::new(
                points.to_vec(),
                dash.0,
                dash.1,
                style,
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Latency percentiles (top, log scale) and loss (bottom) against offered forwarded packets/s
/// on the same x axis: one colour per target (both panels), one dash style per percentile.
pub fn plot(rows: &[Row], path: &Path, title: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (1100, 850)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(560);
    let x_max = rows.iter().map(|r| r.offered_pps).fold(1.0, f64::max) * 1.05 / 1000.0;
    let y_max = rows
        .iter()
        .map(|r| r.latency_us[3] / 1000.0)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (0.005..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("offered forwarded packets/s (thousands)")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(|e| e.to_string())?;
    // In order of first appearance (a CSV may list a target's rows apart).
    let mut targets: Vec<String> = Vec::new();
    for r in rows {
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    // Distinct on white and for the common colour-blindnesses (Okabe–Ito).
    let palette = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(230, 159, 0),
        RGBColor(0, 0, 0),
    ];
    let colour = |i: usize| palette[i % palette.len()];
    for (ti, target) in targets.iter().enumerate() {
        let c = colour(ti);
        let series: Vec<&Row> = rows.iter().filter(|r| &r.target == target).collect();
        for (pi, _, dash) in PERCENTILES {
            let points: Vec<(f64, f64)> = series
                .iter()
                .map(|r| {
                    (
                        r.offered_pps / 1000.0,
                        (r.latency_us[pi] / 1000.0).max(0.005),
                    )
                })
                .collect();
            draw_line(&mut chart, &points, dash, c.stroke_width(2))?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        // The legend: one entry per target in its colour...
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(|e| e.to_string())?
            .label(target.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
    }
    // ... and one per percentile in its dash style.
    for (_, name, dash) in PERCENTILES {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                // Three segments: contiguous for a solid line, else the dash pattern.
                let style = BLACK.stroke_width(2);
                let (d, g) = if dash.0 == 0 {
                    (8, 0)
                } else {
                    (dash.0 as i32, dash.1 as i32)
                };
                let seg = |k: i32| {
                    let a = (k * (d + g)).min(24);
                    PathElement::new(vec![(a, 0), ((a + d).min(24), 0)], style)
                };
                EmptyElement::at((x, y)) + seg(0) + seg(1) + seg(2)
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;

    let loss_max = rows
        .iter()
        .map(|r| r.loss_pct)
        .filter(|v| v.is_finite())
        .fold(0.2, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..loss_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("offered forwarded packets/s (thousands)")
        .y_desc("loss, %")
        .draw()
        .map_err(|e| e.to_string())?;
    for (ti, target) in targets.iter().enumerate() {
        let c = colour(ti);
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.target == target)
            .map(|r| (r.offered_pps / 1000.0, r.loss_pct))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{target} loss"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
