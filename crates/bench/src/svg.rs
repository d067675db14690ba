//! Small hand-written SVG line plots: TTFT CDFs per policy, latency against offered load.
//! Enough for a results page (axes with ticks, a legend, several series); no dependency.

use std::fmt::Write;

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A plot: title, axis labels, series.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// Shown above the plot.
    pub title: String,
    /// Horizontal axis label (with its unit).
    pub x_label: String,
    /// Vertical axis label (with its unit).
    pub y_label: String,
    /// Plot the horizontal axis on a log10 scale (latencies spanning decades).
    pub log_x: bool,
    /// Plot the vertical axis on a log10 scale (paths whose latencies differ by decades).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// About five round tick values covering `lo..=hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 12 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        format!("{}", (v * 10_000.0).round() / 10_000.0)
    }
}

impl Plot {
    /// Renders the plot as a standalone SVG document.
    pub fn render(&self) -> String {
        let tx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let ty = |y: f64| if self.log_y { y.max(1e-9).log10() } else { y };
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| p.0.is_finite() && p.1.is_finite())
        };
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, f64::MIN);
        let mut y0 = if self.log_y { f64::MAX } else { 0.0f64 };
        for &(x, y) in pts() {
            x0 = x0.min(tx(x));
            x1 = x1.max(tx(x));
            y0 = y0.min(ty(y));
            y1 = y1.max(ty(y));
        }
        if self.log_y && y0 <= y1 {
            // Whole decades, so the ticks land on the edges.
            (y0, y1) = (y0.floor(), y1.ceil());
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-12 {
            y1 = y0 + 1.0;
        }
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (ty(y) - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let xt: Vec<f64> = if self.log_x {
            (x0.floor() as i32..=x1.ceil() as i32)
                .map(f64::from)
                .filter(|e| (x0..=x1).contains(e))
                .collect()
        } else {
            ticks(x0, x1)
        };
        for t in xt {
            let px = LEFT + (t - x0) / (x1 - x0) * pw;
            let label = fmt_tick(if self.log_x { 10f64.powf(t) } else { t });
            let _ = write!(
                s,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" text-anchor="middle">{label}</text>"##,
                TOP + ph,
                TOP + ph + 16.0
            );
        }
        let yt: Vec<(f64, f64)> = if self.log_y {
            (y0 as i32..=y1 as i32)
                .map(|e| (f64::from(e), 10f64.powi(e)))
                .collect()
        } else {
            ticks(y0, y1).into_iter().map(|t| (t, t)).collect()
        };
        for (t, label) in yt {
            let py = TOP + ph - (t - y0) / (y1 - y0) * ph;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                py + 4.0,
                fmt_tick(label)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 12.0,
            escape(&self.x_label),
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if !path.is_empty() {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                    path.join(" ")
                );
            }
            let ly = TOP + 10.0 + i as f64 * 18.0;
            let lx = LEFT + pw + 12.0;
            let _ = write!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                escape(&series.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_escaped_labels() {
        let p = Plot {
            title: "TTFT <cdf>".into(),
            x_label: "s".into(),
            y_label: "share".into(),
            log_x: true,
            log_y: false,
            series: vec![
                Series {
                    label: "a&b".into(),
                    points: vec![(0.01, 0.1), (1.0, 1.0)],
                },
                Series {
                    label: "empty".into(),
                    points: vec![],
                },
            ],
        };
        let svg = p.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("a&amp;b") && svg.contains("TTFT &lt;cdf&gt;"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn log_y_axes_label_whole_decades() {
        let p = Plot {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            log_y: true,
            series: vec![Series {
                label: "s".into(),
                points: vec![(1.0, 0.5), (2.0, 5000.0)],
            }],
        };
        let svg = p.render();
        for label in [">0.1<", ">1<", ">10<", ">100<", ">1000<", ">10000<"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(0.0, 2000.0);
        assert_eq!((t[0], *t.last().unwrap()), (0.0, 2000.0));
    }
}
