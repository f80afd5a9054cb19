//! `--plot FILE.svg`: throughput against rule count, one panel per
//! scenario, one line per data plane (both axes logarithmic), written by
//! hand so the benchmark needs no plotting library.

use std::fmt::Write as _;

use super::{
    planes::{Plane, Scenario},
    traffic::TrafficReport,
};

const WIDTH: f64 = 860.0;
const PANEL_HEIGHT: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 270.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;

fn color(plane: Plane) -> &'static str {
    match plane {
        Plane::Floor => "#7f7f7f",
        Plane::RedirectFloor => "#c7c7c7",
        Plane::Kernel => "#bcbd22",
        Plane::Netbeast => "#d62728",
        Plane::IptablesRaw => "#9467bd",
        Plane::Iptables => "#1f77b4",
        Plane::NftPrerouting => "#8c564b",
        Plane::Nft => "#2ca02c",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Axis label of 10^d packets per second.
fn decade(d: i32) -> String {
    match d {
        d if d >= 6 => format!("{} Mpps", 10u64.pow((d - 6) as u32)),
        d if d >= 3 => format!("{} kpps", 10u64.pow((d - 3) as u32)),
        d => format!("{} pps", 10u64.pow(d.max(0) as u32)),
    }
}

/// The SVG document for `report`.
pub fn svg(report: &TrafficReport) -> String {
    let mut scenarios: Vec<Scenario> = report.rows.iter().map(|r| r.scenario).collect();
    scenarios.dedup();
    let measured: Vec<&_> = report.rows.iter().filter(|r| r.pps.is_some()).collect();
    let max_rules = report
        .options
        .rules
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let x_decades = max_rules.log10().ceil();
    let pps_all = measured
        .iter()
        .flat_map(|r| [r.pps_min, r.pps_max, r.pps])
        .flatten();
    let (lo, hi) = pps_all.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_lo, y_hi) = if hi > 0.0 {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (3.0, 7.0)
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL_HEIGHT - TOP - BOTTOM;
    let height = PANEL_HEIGHT * scenarios.len().max(1) as f64 + 44.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let o = &report.options;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="13">netbeast bench, {}: {}-byte UDP, {} flow(s), one core, median of {} round(s); bars: min-max; dashed: no rules</text>"#,
        escape(&report.date),
        o.size,
        o.flows,
        o.rounds
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="34" font-size="11" fill="#555">{}, {} CPU(s), {}</text>"##,
        escape(&report.machine.cpu_model),
        report.machine.cpus,
        escape(&report.machine.kernel)
    );
    for (p, scenario) in scenarios.iter().enumerate() {
        let top = 44.0 + p as f64 * PANEL_HEIGHT;
        let x = |rules: f64| LEFT + rules.log10() / x_decades * plot_w;
        let y = |pps: f64| top + TOP + (y_hi - pps.log10()) / (y_hi - y_lo) * plot_h;
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            top + TOP - 10.0,
            scenario.name()
        );
        // Grid and axes.
        for d in 0..=(x_decades as i32) {
            let gx = x(10f64.powi(d));
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + TOP,
                top + TOP + plot_h,
                top + TOP + plot_h + 16.0,
                10u64.pow(d as u32)
            );
        }
        for d in (y_lo as i32)..=(y_hi as i32) {
            let gy = y(10f64.powi(d));
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                gy + 4.0,
                decade(d)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">rules in the chain, the last one matching (log scale)</text>"#,
            LEFT + plot_w / 2.0,
            top + TOP + plot_h + 32.0
        );
        let mut planes: Vec<Plane> = report
            .rows
            .iter()
            .filter(|r| r.scenario == *scenario)
            .map(|r| r.plane)
            .collect();
        planes.sort();
        planes.dedup();
        let mut legend_y = top + TOP + 8.0;
        for plane in planes {
            let rows: Vec<_> = measured
                .iter()
                .filter(|r| r.scenario == *scenario && r.plane == plane)
                .collect();
            let label = plane.label(*scenario);
            let c = color(plane);
            let unavailable = report
                .rows
                .iter()
                .any(|r| r.scenario == *scenario && r.plane == plane && r.unavailable.is_some());
            let legend = if unavailable && rows.is_empty() {
                format!("{}: not available yet", plane.id())
            } else {
                label
            };
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{c}" stroke-width="2"{}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                LEFT + plot_w + 12.0,
                LEFT + plot_w + 34.0,
                if plane.has_rules() {
                    ""
                } else {
                    r#" stroke-dasharray="5,4""#
                },
                LEFT + plot_w + 40.0,
                legend_y + 4.0,
                escape(&legend)
            );
            legend_y += 18.0;
            if !plane.has_rules() {
                // A reference without rules: a level across the panel.
                if let Some(pps) = rows.first().and_then(|r| r.pps) {
                    let ly = y(pps);
                    let _ = writeln!(
                        s,
                        r#"<line x1="{LEFT}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="5,4"/>"#,
                        LEFT + plot_w
                    );
                }
                continue;
            }
            let mut points: Vec<(f64, f64, f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    Some((
                        r.rules? as f64,
                        r.pps?,
                        r.pps_min.unwrap_or(r.pps?),
                        r.pps_max.unwrap_or(r.pps?),
                    ))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = points
                .iter()
                .map(|(n, pps, _, _)| format!("{:.1},{:.1}", x(*n), y(*pps)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for (n, pps, min, max) in points {
                let px = x(n);
                let _ = writeln!(
                    s,
                    r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{c}"/><circle cx="{px:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    y(min),
                    y(max),
                    y(pps)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
