//! The PNG chart: plotters' bitmap backend, text drawn with the DejaVu Sans font embedded in the
//! binary (the `dejavu` crate), so no system font is needed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::conn::Result;
use crate::report::CaseResult;
use crate::servers::ServerKind;

const FONT: &str = "sans-serif";

fn color(kind: ServerKind) -> RGBColor {
    match kind {
        ServerKind::Ceiling => RGBColor(150, 150, 150),
        ServerKind::Ours => RGBColor(31, 119, 180),
        ServerKind::Peer => RGBColor(255, 127, 14),
        ServerKind::AspNetCore => RGBColor(104, 33, 122),
    }
}

/// One bar group per case: its label and one value per server.
struct Bars {
    title: String,
    labels: Vec<(String, String)>,
    values: Vec<Vec<(ServerKind, f64)>>,
}

/// Bars of `figure` for every case of `scenarios`; `figure` "" takes each scenario's headline
/// figure and labels the bars with scenario (and the case's second label line) and figure
/// instead of the case parameters.
fn bars(results: &[CaseResult], scenarios: &[&str], figure: &str, title: &str) -> Bars {
    let mut out = Bars {
        title: title.to_owned(),
        labels: Vec::new(),
        values: Vec::new(),
    };
    for case in results.iter().filter(|c| scenarios.contains(&c.scenario)) {
        let mixed = figure.is_empty();
        let figure = if mixed {
            crate::report::headline(case.scenario)
        } else {
            figure
        };
        let values: Vec<(ServerKind, f64)> = case
            .results
            .iter()
            .filter_map(|(kind, outcome)| {
                let outcome = outcome.as_ref().ok()?;
                let summary = crate::report::figure(outcome, figure)?;
                (summary.median > 0.0).then_some((*kind, summary.median))
            })
            .collect();
        if values.is_empty() {
            continue;
        }
        out.labels.push(if mixed {
            match case.scenario {
                "idle density" => (format!("idle {}", case.label.1), figure.to_owned()),
                scenario if HTTP_SCENARIOS.contains(&scenario) => {
                    (scenario.to_owned(), case.label.0.clone())
                }
                scenario => (scenario.to_owned(), figure.to_owned()),
            }
        } else {
            case.short_label()
        });
        out.values.push(values);
    }
    out
}

fn draw_bars(area: &DrawingArea<BitMapBackend<'_>, Shift>, data: &Bars) -> Result<()> {
    let all: Vec<f64> = data.values.iter().flatten().map(|&(_, v)| v).collect();
    if all.is_empty() {
        area.titled(&format!("{}: no data", data.title), (FONT, 18))?;
        return Ok(());
    }
    let max = all.iter().copied().fold(f64::MIN, f64::max);
    let min = all.iter().copied().fold(f64::MAX, f64::min);
    let (low, high) = (min / 3.0, max * 3.0);
    let n = data.labels.len();
    let mut chart = ChartBuilder::on(area)
        .caption(&data.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| crate::report::short_number(*v))
        .label_style((FONT, 12))
        .draw()?;
    let kinds: Vec<ServerKind> = ServerKind::ALL
        .into_iter()
        .filter(|k| data.values.iter().flatten().any(|(kind, _)| kind == k))
        .collect();
    let width = 0.8 / kinds.len() as f64;
    for &kind in &kinds {
        let slot = kinds.iter().position(|&k| k == kind).unwrap_or(0) as f64;
        let rects = data
            .values
            .iter()
            .enumerate()
            .filter_map(move |(i, values)| {
                let (_, v) = values.iter().find(|(k, _)| *k == kind)?;
                let x0 = i as f64 + 0.1 + slot * width;
                Some(Rectangle::new(
                    [(x0, low), (x0 + width * 0.92, *v)],
                    color(kind).filled(),
                ))
            });
        chart
            .draw_series(rects)?
            .label(kind.name())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color(kind).filled())
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    // Category labels under the bars, in two short lines.
    let base = area.get_base_pixel();
    let style = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, (first, second)) in data.labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, low));
        let (x, y) = (x - base.0, y - base.1);
        area.draw(&Text::new(first.clone(), (x, y + 6), style.clone()))?;
        area.draw(&Text::new(second.clone(), (x, y + 21), style.clone()))?;
    }
    Ok(())
}

fn draw_rss(area: &DrawingArea<BitMapBackend<'_>, Shift>, results: &[CaseResult]) -> Result<()> {
    let series: Vec<(ServerKind, &Vec<(f64, f64)>)> = results
        .iter()
        .filter(|c| c.scenario == "slow consumer")
        .flat_map(|c| c.results.iter())
        .filter_map(|(kind, outcome)| {
            let outcome = outcome.as_ref().ok()?;
            (!outcome.series.is_empty()).then_some((*kind, &outcome.series))
        })
        .collect();
    let title = "slow consumer: server RSS (MiB) over time (s)";
    if series.is_empty() {
        area.titled(&format!("{title}: no data"), (FONT, 18))?;
        return Ok(());
    }
    let tmax = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tmax, 0f64..ymax * 1.15)?;
    chart.configure_mesh().label_style((FONT, 12)).draw()?;
    for (kind, points) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color(kind).stroke_width(2),
            ))?
            .label(kind.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color(kind).stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The SSE and long-polling scenarios.
const HTTP_SCENARIOS: [&str; 4] = [
    "SSE echo",
    "long-polling echo",
    "SSE broadcast",
    "long-polling broadcast",
];

/// Draws eight panels (echo and stateful echo throughput and p99, broadcast deliveries and
/// p99, the other scenarios' headline figures, slow-consumer RSS over time, SSE and
/// long-polling rates and p99) into `path`.
pub fn draw(path: &Path, results: &[CaseResult]) -> Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded font did not load")?;
    let root = BitMapBackend::new(path, (1600, 2000)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((4, 2));
    draw_bars(
        &panels[0],
        &bars(
            results,
            &["echo", crate::report::STATEFUL_ECHO],
            "invocations/s",
            "echo and stateful echo: invocations/s (log scale, higher is better)",
        ),
    )?;
    draw_bars(
        &panels[1],
        &bars(
            results,
            &["echo", crate::report::STATEFUL_ECHO],
            "p99 latency (µs)",
            "echo and stateful echo: p99 latency µs (log scale, lower is better)",
        ),
    )?;
    draw_bars(
        &panels[2],
        &bars(
            results,
            &["broadcast", "group"],
            "deliveries/s",
            "broadcast and group: deliveries/s (log scale, higher is better)",
        ),
    )?;
    draw_bars(
        &panels[3],
        &bars(
            results,
            &["broadcast", "group"],
            "p99 latency (µs)",
            "broadcast and group: p99 delivery latency µs (log, lower is better)",
        ),
    )?;
    draw_bars(
        &panels[4],
        &bars(
            results,
            &["fixed rate", "idle density", "connect storm"],
            "",
            "headline figure of the other scenarios (log scale)",
        ),
    )?;
    draw_rss(&panels[5], results)?;
    draw_bars(
        &panels[6],
        &bars(
            results,
            &HTTP_SCENARIOS,
            "",
            "SSE and long polling: invocations/s, deliveries/s (log, higher is better)",
        ),
    )?;
    draw_bars(
        &panels[7],
        &bars(
            results,
            &HTTP_SCENARIOS,
            "p99 latency (µs)",
            "SSE and long polling: p99 latency µs (log, lower is better)",
        ),
    )?;
    root.present()?;
    Ok(())
}
