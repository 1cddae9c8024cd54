//! `pipe-bench-plot FIGURES OUT.png`: FIGURES has one line per run, `engine rows wall_seconds peak_rss_mib`; draws
//! wall time and peak RSS against rows (both axes logarithmic), one line per engine.

use std::collections::BTreeMap;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

type Series = BTreeMap<String, Vec<(f64, f64, f64)>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, figures, out] = args.as_slice() else {
        return Err("usage: pipe-bench-plot FIGURES OUT.png".into());
    };
    let font = std::env::var("PLOT_FONT").unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    let bytes: &'static [u8] = Box::leak(std::fs::read(&font)?.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{font}: not a font"))?;
    let mut series = Series::new();
    for line in std::fs::read_to_string(figures)?.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [engine, rows, wall, rss] = parts.as_slice() else { return Err(format!("bad line: {line}").into()) };
        series.entry(engine.to_string()).or_default().push((rows.parse()?, wall.parse()?, rss.parse()?));
    }
    let root = BitMapBackend::new(out, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let all: Vec<&(f64, f64, f64)> = series.values().flatten().collect();
    let rows = (all.iter().map(|p| p.0).fold(f64::MAX, f64::min) / 2.0, all.iter().map(|p| p.0).fold(0.0, f64::max) * 2.0);
    let wall = (all.iter().map(|p| p.1).fold(f64::MAX, f64::min) / 2.0, all.iter().map(|p| p.1).fold(0.0, f64::max) * 2.0);
    let rss = (all.iter().map(|p| p.2).fold(f64::MAX, f64::min) / 2.0, all.iter().map(|p| p.2).fold(0.0, f64::max) * 2.0);
    for (area, title, unit, range, pick) in [
        (&left, "Wall time", "seconds", wall, 1usize),
        (&right, "Peak RSS", "MiB", rss, 2usize),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title} vs events"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((rows.0..rows.1).log_scale(), (range.0..range.1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("events")
            .y_desc(unit)
            .x_labels(4)
            .y_labels(6)
            .x_label_formatter(&|v| match *v >= 1e6 {
                true => format!("{:.0}M", v / 1e6),
                false => format!("{:.0}k", v / 1e3),
            })
            .y_label_formatter(&|v| format!("{v:.1}"))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, (engine, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let line: Vec<(f64, f64)> =
                points.iter().map(|p| (p.0, if pick == 1 { p.1 } else { p.2 })).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
                .label(engine.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}
