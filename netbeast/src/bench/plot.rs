//! `--plot FILE.svg`: throughput against rule count, one panel per
//! scenario, one line per data plane (both axes logarithmic), drawn with
//! `plotters`' SVG backend. No font files are needed: plotters estimates
//! text sizes and the SVG viewer lays the text out.

use plotters::prelude::*;

use super::{
    planes::{Plane, Scenario},
    traffic::{Row, TrafficReport},
};

const WIDTH: u32 = 860;
const PANEL_HEIGHT: u32 = 300;
/// The two title lines above the panels.
const HEADER: u32 = 44;
const FONT: &str = "sans-serif";

fn color(plane: Plane) -> RGBColor {
    match plane {
        Plane::Floor => RGBColor(0x7f, 0x7f, 0x7f),
        Plane::RedirectFloor => RGBColor(0xc7, 0xc7, 0xc7),
        Plane::Kernel => RGBColor(0xbc, 0xbd, 0x22),
        Plane::Netbeast => RGBColor(0xd6, 0x27, 0x28),
        Plane::NetbeastStatistic => RGBColor(0xff, 0x7f, 0x0e),
        Plane::IptablesRaw => RGBColor(0x94, 0x67, 0xbd),
        Plane::Iptables => RGBColor(0x1f, 0x77, 0xb4),
        Plane::NftPrerouting => RGBColor(0x8c, 0x56, 0x4b),
        Plane::Nft => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// Axis label of a packet rate: "10 kpps", "2.5 Mpps".
fn rate_label(pps: f64) -> String {
    let (value, unit) = match pps {
        p if p >= 1e6 => (p / 1e6, "Mpps"),
        p if p >= 1e3 => (p / 1e3, "kpps"),
        p => (p, "pps"),
    };
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// The SVG document for `report`.
pub fn svg(report: &TrafficReport) -> Result<String, String> {
    let mut scenarios: Vec<Scenario> = report.rows.iter().map(|r| r.scenario).collect();
    scenarios.dedup();
    let measured: Vec<&Row> = report.rows.iter().filter(|r| r.pps.is_some()).collect();
    let max_rules = report
        .options
        .rules
        .iter()
        .chain(&report.options.backends)
        .copied()
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let x_max = 10f64.powf(max_rules.log10().ceil());
    let (lo, hi) = measured
        .iter()
        .flat_map(|r| [r.pps_min, r.pps_max, r.pps])
        .flatten()
        .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_lo, y_hi) = if hi > 0.0 {
        let lo = lo.log10().floor();
        (lo, hi.log10().ceil().max(lo + 1.0))
    } else {
        (3.0, 7.0)
    };
    let y_range = 10f64.powf(y_lo)..10f64.powf(y_hi);

    let height = PANEL_HEIGHT * scenarios.len().max(1) as u32 + HEADER;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| format!("drawing the plot: {e}");
        root.fill(&WHITE).map_err(e)?;
        let (header, body) = root.split_vertically(HEADER);
        let o = &report.options;
        header
            .draw(&Text::new(
                format!(
                    "netbeast bench, {}: {}-byte UDP, {} flow(s), one core, median of {} round(s); bars: min-max; dashed: no rules",
                    report.date, o.size, o.flows, o.rounds
                ),
                (10, 6),
                (FONT, 13),
            ))
            .map_err(e)?;
        header
            .draw(&Text::new(
                format!(
                    "{}, {} CPU(s), {}",
                    report.machine.cpu_model, report.machine.cpus, report.machine.kernel
                ),
                (10, 24),
                (FONT, 11).into_font().color(&RGBColor(0x55, 0x55, 0x55)),
            ))
            .map_err(e)?;
        for (panel, scenario) in body
            .split_evenly((scenarios.len().max(1), 1))
            .iter()
            .zip(&scenarios)
        {
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    scenario.name(),
                    (FONT, 14).into_font().style(FontStyle::Bold),
                )
                .margin(8)
                .margin_right(16)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d((1f64..x_max).log_scale(), y_range.clone().log_scale())
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc(if *scenario == Scenario::Lb {
                    "backends behind the VIP (log scale)"
                } else {
                    "rules in the chain, the last one matching (log scale)"
                })
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| rate_label(*v))
                .light_line_style(WHITE)
                .draw()
                .map_err(e)?;
            let mut planes: Vec<Plane> = report
                .rows
                .iter()
                .filter(|r| r.scenario == *scenario)
                .map(|r| r.plane)
                .collect();
            planes.sort();
            planes.dedup();
            for plane in planes {
                let c = color(plane);
                let rows: Vec<&&Row> = measured
                    .iter()
                    .filter(|r| r.scenario == *scenario && r.plane == plane)
                    .collect();
                let unavailable = report.rows.iter().any(|r| {
                    r.scenario == *scenario && r.plane == plane && r.unavailable.is_some()
                });
                let legend = if unavailable && rows.is_empty() {
                    format!("{}: not available yet", plane.id())
                } else {
                    plane.label(*scenario)
                };
                // A reference without rules is a dashed level across the
                // panel; a data plane with rules a line with its min-max bars.
                let line: Vec<(f64, f64)> = if plane.has_rules() {
                    let mut points: Vec<(f64, f64)> = rows
                        .iter()
                        .filter_map(|r| Some((r.rules? as f64, r.pps?)))
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    points
                } else {
                    rows.first()
                        .and_then(|r| r.pps)
                        .map(|pps| vec![(1.0, pps), (x_max, pps)])
                        .unwrap_or_default()
                };
                let legend_line = move |(x, y): (i32, i32)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                };
                if plane.has_rules() {
                    chart
                        .draw_series(LineSeries::new(line, c.stroke_width(2)))
                        .map_err(e)?
                        .label(legend)
                        .legend(legend_line);
                    chart
                        .draw_series(rows.iter().filter_map(|r| {
                            let (n, pps) = (r.rules? as f64, r.pps?);
                            Some(ErrorBar::new_vertical(
                                n,
                                r.pps_min.unwrap_or(pps),
                                pps,
                                r.pps_max.unwrap_or(pps),
                                c.filled(),
                                6,
                            ))
                        }))
                        .map_err(e)?;
                } else {
                    chart
                        .draw_series(DashedLineSeries::new(line, 5, 4, c.stroke_width(2)))
                        .map_err(e)?
                        .label(legend)
                        .legend(legend_line);
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(0xdd, 0xdd, 0xdd))
                .label_font((FONT, 11))
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::traffic::{Machine, Options, unavailable_row};

    fn row(plane: Plane, rules: Option<usize>, pps: f64) -> Row {
        let mut row = unavailable_row(Scenario::Drop, plane, rules, String::new());
        row.unavailable = None;
        (row.pps, row.pps_min, row.pps_max) = (Some(pps), Some(pps * 0.9), Some(pps * 1.1));
        row
    }

    /// Every data plane is in the legend, each plane with rules is a line
    /// through its points, each reference a dashed level, and a plane that
    /// could not run says so.
    #[test]
    fn the_plot_has_a_line_and_a_legend_entry_per_data_plane() {
        let report = TrafficReport {
            command: "netbeast bench".into(),
            date: "2026-12-05".into(),
            machine: Machine {
                kernel: "6.18".into(),
                cpu_model: "test cpu".into(),
                cpus: 2,
                iptables: String::new(),
                nft: String::new(),
            },
            options: Options {
                scenarios: vec![Scenario::Drop],
                families: Vec::new(),
                rules: vec![1, 1000],
                backends: Vec::new(),
                rounds: 3,
                seconds: 1.0,
                size: 64,
                flows: 1,
                stateful: false,
                cpu: 0,
                receiver_cpu: None,
                generator: Default::default(),
                batch: 64,
                quick: false,
                ip: Default::default(),
            },
            generator: "xdp",
            floor_pps: Some(5e6),
            redirect_floor_pps: None,
            rows: vec![
                row(Plane::Floor, None, 5e6),
                row(Plane::Netbeast, Some(1), 4e6),
                row(Plane::Netbeast, Some(1000), 3.9e6),
                row(Plane::Iptables, Some(1), 2e6),
                row(Plane::Iptables, Some(1000), 8e4),
                unavailable_row(Scenario::Drop, Plane::Nft, Some(1), "no nft".into()),
            ],
            generator_counted: 0,
            generator_asked: 0,
            targets: Vec::new(),
            seconds_total: 1.0,
        };
        let svg = svg(&report).expect("drawing");
        assert!(svg.starts_with("<svg"), "{svg}");
        for label in [
            Plane::Floor.label(Scenario::Drop),
            Plane::Netbeast.label(Scenario::Drop),
            Plane::Iptables.label(Scenario::Drop),
            format!("{}: not available yet", Plane::Nft.id()),
            "test cpu, 2 CPU(s), 6.18".to_string(),
            "1 Mpps".to_string(),
        ] {
            assert!(svg.contains(&label), "no {label:?} in the plot");
        }
        // netbeast's and iptables' lines, and the floor's dashed level
        // (drawn as dashes, each its own element, plus its legend line).
        for plane in [Plane::Netbeast, Plane::Iptables] {
            let RGBColor(r, g, b) = color(plane);
            let stroke = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
            assert!(svg.contains(&stroke), "no line of {plane:?} ({stroke})");
        }
        let RGBColor(r, g, b) = color(Plane::Floor);
        let dashes = svg.matches(&format!("#{r:02X}{g:02X}{b:02X}")).count();
        assert!(dashes > 10, "the floor's level has {dashes} dashes");
        assert_eq!(rate_label(2.5e6), "2.5 Mpps");
        assert_eq!(rate_label(1e4), "10 kpps");
    }
}
