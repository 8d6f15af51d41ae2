//! The herd simulation's PNG: write calls and completion time against the number of clients
//! for each strategy, and the quota scenario's wasted 429s.
//!
//! Text is drawn with an embedded font (Hack, from `epaint_default_fonts`, MIT and Bitstream
//! Vera licences) through plotters' `ab_glyph` feature: plotters' default `ttf` feature
//! asks fontconfig for system fonts, which a CI machine or a container may not have.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::sim::{OccTable, QuotaRow, STRATEGIES};

/// The plot's size in pixels.
pub const SIZE: (u32, u32) = (1400, 1000);

/// One colour per strategy of `STRATEGIES`: none grey, additive red, then blues and green
/// for the AWS jitters, so the two that herd stand apart from the three that spread.
const COLOURS: [RGBColor; STRATEGIES.len()] = [
    RGBColor(120, 120, 120),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];

const FONT: &str = "sans-serif";

/// Makes the embedded font the one plotters draws every label in.
fn register_embedded_font() -> Result<(), Box<dyn Error>> {
    register_font(FONT, FontStyle::Normal, epaint_default_fonts::HACK_REGULAR)
        .map_err(|_| "the embedded Hack font did not parse".into())
}

/// Draws the plot to `path` (a `.png`).
pub fn draw(path: &Path, occ: &OccTable, quota: &[QuotaRow]) -> Result<(), Box<dyn Error>> {
    register_embedded_font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Clients that conflict: the AWS optimistic-concurrency experiment, and a per-minute quota",
        (FONT, 24),
    )?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 55 / 100);
    let halves = top.split_evenly((1, 2));
    line_panel(&halves[0], occ, "Write calls (mean)", "calls", |o| o.calls)?;
    line_panel(
        &halves[1],
        occ,
        "Time until the last client is done (mean)",
        "time (ms)",
        |o| o.time,
    )?;
    quota_panel(&bottom, quota)?;
    root.present()?;
    Ok(())
}

fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    occ: &OccTable,
    caption: &str,
    y_desc: &str,
    value: impl Fn(&crate::sim::Outcome) -> f64,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let x_max = occ.clients.iter().copied().max().unwrap_or(1) as f64;
    let y_max = occ
        .outcomes
        .iter()
        .flat_map(|row| row.iter().map(&value))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0f64..x_max * 1.02, 0f64..y_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .draw()?;
    for (s, jitter) in STRATEGIES.iter().enumerate() {
        let colour = COLOURS[s];
        let points = occ
            .clients
            .iter()
            .zip(&occ.outcomes)
            .map(|(&n, row)| (n as f64, value(&row[s])));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(3)))?
            .label(jitter.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Bars of wasted 429s per configuration, each labelled with its completion time.
fn quota_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    quota: &[QuotaRow],
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let y_max = quota
        .iter()
        .map(|row| row.outcome.rejected)
        .fold(1.0f64, f64::max);
    let bars = quota.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Per-minute quota: wasted 429s (bars) and seconds until the last request is accepted",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(20)
        .y_label_area_size(75)
        .build_cartesian_2d(0f64..bars, 0f64..y_max * 1.3)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("429 answers")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .draw()?;
    for (i, row) in quota.iter().enumerate() {
        let x = i as f64;
        let s = STRATEGIES
            .iter()
            .position(|&j| j == row.jitter)
            .unwrap_or(0);
        let colour = COLOURS[s];
        let fill = if row.honour {
            colour.filled()
        } else {
            colour.mix(0.35).filled()
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, row.outcome.rejected)],
            fill,
        )))?;
        let hint = if row.honour {
            "honours the hint"
        } else {
            "ignores the hint"
        };
        let label = format!("{}, {hint}", row.jitter.name());
        let figures = format!(
            "{:.0} x 429, done at {:.0} s",
            row.outcome.rejected, row.outcome.seconds
        );
        let given_up = format!(
            "{:.0} clients past 5 attempts",
            row.outcome.past_default_attempts
        );
        // Text hangs from its anchor, so the first line sits highest.
        let top = row.outcome.rejected + y_max * 0.03;
        chart.draw_series([
            Text::new(label, (x + 0.15, top + y_max * 0.14), (FONT, 16)),
            Text::new(figures, (x + 0.15, top + y_max * 0.09), (FONT, 16)),
            Text::new(given_up, (x + 0.15, top + y_max * 0.04), (FONT, 16)),
        ])?;
    }
    Ok(())
}
