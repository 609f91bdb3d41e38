//! Charts for the console's dashboards, rendered on the server as SVG (no script, no
//! dependency, no network): a line chart, horizontal bars and the HTML table that goes
//! with every chart. Each SVG is an image with a title (`role="img"`, `<title>`), its
//! axes are labelled, and every text it contains is escaped. Colours are attributes
//! (the console's CSP allows no inline styles).

use std::fmt::Write;

use volley_flow::markdown::escape_html as esc;

/// One line of a [`line_chart`]: its name (in the legend) and its (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Line colours, in order (distinguishable with the common colour-vision deficiencies).
const PALETTE: [&str; 6] = [
    "#0b6bcb", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 52.0;
/// About this many intervals between ticks.
const TICKS: f64 = 5.0;

/// A number as a tick or value label: integers without decimals, others with at most
/// two (trailing zeros dropped).
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if (v - v.round()).abs() < 1e-9 {
        return format!("{}", v.round() as i64);
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A "nice" step (1, 2, 2.5 or 5 × 10ⁿ) that cuts `range` into about [`TICKS`] parts.
fn nice_step(range: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let rough = range / TICKS;
    let magnitude = 10f64.powf(rough.log10().floor());
    let f = rough / magnitude;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Tick values covering `min..=max`: multiples of a nice step, from at or below `min`
/// to at or above `max`. An empty range gets one step above it.
pub fn ticks(min: f64, max: f64) -> Vec<f64> {
    let (min, max) = if min.is_finite() && max.is_finite() && min <= max {
        (min, max)
    } else {
        (0.0, 1.0)
    };
    let max = if max == min { min + 1.0 } else { max };
    let step = nice_step(max - min);
    // A hair of slack: 3 / 0.2 is 14.999… in floating point.
    let first = (min / step + 1e-9).floor() as i64;
    let last = (max / step - 1e-9).ceil() as i64;
    (first..=last)
        .map(|i| {
            // Rounded to the step's precision: 0.1 + 0.2 stays 0.3.
            let v = i as f64 * step;
            (v * 1e9).round() / 1e9
        })
        .collect()
}

fn open_svg(h: &mut String, title: &str, height: f64) {
    let _ = write!(
        h,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" \
         viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"system-ui, sans-serif\" font-size=\"12\">\
         <title>{t}</title>\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\" font-weight=\"600\" fill=\"#222\">{t}</text>",
        t = esc(title),
    );
}

fn no_data(h: &mut String, height: f64) {
    let _ = write!(
        h,
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" fill=\"#666\">No data</text></svg>",
        x = WIDTH / 2.0,
        y = height / 2.0,
    );
}

/// A line chart of `series` with labelled x and y axes (about five ticks each, at
/// nice round values).
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut h = String::with_capacity(4096);
    open_svg(&mut h, title, HEIGHT);
    let points = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0f64, f64::MIN);
    let mut any = false;
    for &(x, y) in points {
        any = true;
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !any {
        no_data(&mut h, HEIGHT);
        return h;
    }
    let xt = ticks(x0, x1);
    let yt = ticks(y0, y1);
    let (xmin, xmax) = (xt[0], xt[xt.len() - 1]);
    let (ymin, ymax) = (yt[0], yt[yt.len() - 1]);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - xmin) / (xmax - xmin) * pw;
    let sy = |y: f64| TOP + ph - (y - ymin) / (ymax - ymin) * ph;
    // Grid and ticks.
    for &y in &yt {
        let py = sy(y);
        let _ = write!(
            h,
            "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"#444\">{v}</text>",
            x2 = LEFT + pw,
            tx = LEFT - 6.0,
            ty = py + 4.0,
            v = number(y),
        );
    }
    for &x in &xt {
        let px = sx(x);
        let _ = write!(
            h,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{y1}\" y2=\"{y2}\" stroke=\"#444\"/>\
             <text x=\"{px:.1}\" y=\"{ty}\" text-anchor=\"middle\" fill=\"#444\">{v}</text>",
            y1 = TOP + ph,
            y2 = TOP + ph + 5.0,
            ty = TOP + ph + 18.0,
            v = number(x),
        );
    }
    // Axes and their labels.
    let _ = write!(
        h,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{yb}\" stroke=\"#444\"/>\
         <line x1=\"{LEFT}\" x2=\"{xr}\" y1=\"{yb}\" y2=\"{yb}\" stroke=\"#444\"/>\
         <text class=\"x-label\" x=\"{xm}\" y=\"{xly}\" text-anchor=\"middle\" fill=\"#222\">{xl}</text>\
         <text class=\"y-label\" transform=\"translate(14 {ym}) rotate(-90)\" text-anchor=\"middle\" fill=\"#222\">{yl}</text>",
        yb = TOP + ph,
        xr = LEFT + pw,
        xm = LEFT + pw / 2.0,
        xly = HEIGHT - 10.0,
        ym = TOP + ph / 2.0,
        xl = esc(x_label),
        yl = esc(y_label),
    );
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(h, "<g><title>{}</title>", esc(&s.label));
        if path.len() == 1 {
            let (x, y) = path[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                h,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
            );
        } else if !path.is_empty() {
            let _ = write!(
                h,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        h.push_str("</g>");
        // The legend, when there is more than one line.
        if series.len() > 1 {
            let lx = LEFT + pw - 150.0;
            let ly = TOP + 4.0 + i as f64 * 16.0;
            let _ = write!(
                h,
                "<rect x=\"{lx}\" y=\"{ry}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
                 <text x=\"{tx}\" y=\"{ly}\" fill=\"#222\">{l}</text>",
                ry = ly - 9.0,
                tx = lx + 14.0,
                l = esc(&s.label),
            );
        }
    }
    h.push_str("</svg>");
    h
}

/// Horizontal bars, one per `(label, value)`, each with its label on the left and its
/// value at its end; the scale (labelled `unit`) starts at 0.
pub fn bar_chart(title: &str, bars: &[(String, f64)], unit: &str) -> String {
    const ROW: f64 = 26.0;
    const LABELS: f64 = 170.0;
    let height = TOP + ROW * bars.len().max(2) as f64 + 36.0;
    let mut h = String::with_capacity(2048);
    open_svg(&mut h, title, height);
    let values: Vec<f64> = bars
        .iter()
        .map(|(_, v)| if v.is_finite() { v.max(0.0) } else { 0.0 })
        .collect();
    if bars.is_empty() {
        no_data(&mut h, height);
        return h;
    }
    let max = values.iter().copied().fold(0.0, f64::max);
    let xt = ticks(0.0, max);
    let top_tick = xt[xt.len() - 1].max(f64::MIN_POSITIVE);
    let pw = WIDTH - LABELS - RIGHT - 60.0;
    let base = TOP + ROW * bars.len() as f64;
    for &x in &xt {
        let px = LABELS + x / top_tick * pw;
        let _ = write!(
            h,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{base}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{px:.1}\" y=\"{ty}\" text-anchor=\"middle\" fill=\"#444\">{v}</text>",
            ty = base + 16.0,
            v = number(x),
        );
    }
    for (i, ((label, _), v)) in bars.iter().zip(&values).enumerate() {
        let y = TOP + i as f64 * ROW;
        let w = v / top_tick * pw;
        let _ = write!(
            h,
            "<g><text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"#222\">{l}</text>\
             <rect x=\"{LABELS}\" y=\"{ry:.1}\" width=\"{w:.1}\" height=\"{bh}\" fill=\"{c}\"/>\
             <text x=\"{vx:.1}\" y=\"{ty:.1}\" fill=\"#222\">{val}</text></g>",
            lx = LABELS - 8.0,
            ty = y + ROW / 2.0 + 4.0,
            l = esc(label),
            ry = y + 4.0,
            bh = ROW - 8.0,
            c = PALETTE[0],
            vx = LABELS + w + 6.0,
            val = number(*v),
        );
    }
    let _ = write!(
        h,
        "<line x1=\"{LABELS}\" x2=\"{LABELS}\" y1=\"{TOP}\" y2=\"{base}\" stroke=\"#444\"/>\
         <text class=\"x-label\" x=\"{xm}\" y=\"{ly}\" text-anchor=\"middle\" fill=\"#222\">{u}</text></svg>",
        xm = LABELS + pw / 2.0,
        ly = base + 32.0,
        u = esc(unit),
    );
    h
}

/// An HTML table with a header row; every cell is escaped.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut h = String::with_capacity(256 + rows.len() * 64);
    h.push_str("<table class=\"figures\">\n<thead><tr>");
    for c in headers {
        let _ = write!(h, "<th scope=\"col\">{}</th>", esc(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        h.push_str("<tr>");
        for c in r {
            let _ = write!(h, "<td>{}</td>", esc(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 9.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 12.0), [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]);
        assert_eq!(ticks(3.0, 3.0), [3.0, 3.2, 3.4, 3.6, 3.8, 4.0]);
        assert_eq!(ticks(-5.0, 5.0), [-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0]);
        assert_eq!(ticks(0.0, 0.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(f64::NAN, 1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        for (lo, hi) in [(0.0, 7.0), (1.0, 1234.0), (0.0, 0.037), (17.0, 93.0)] {
            let t = ticks(lo, hi);
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            assert!((4..=8).contains(&t.len()), "{lo}..{hi}: {t:?}");
        }
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.1 + 0.2), "0.3");
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let evil = "<script>alert('x')</script> & \"q\"";
        let line = line_chart(
            evil,
            evil,
            evil,
            &[Series {
                label: evil.into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        );
        let bars = bar_chart(evil, &[(evil.into(), 3.0)], evil);
        let t = table(&[evil], &[vec![evil.into()]]);
        for out in [&line, &bars, &t] {
            assert!(!out.contains("<script>"), "{out}");
            assert!(!out.contains("'x'"), "{out}");
            assert!(
                out.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;")
            );
        }
    }

    #[test]
    fn charts_are_labelled_images() {
        let s = line_chart(
            "Viewers",
            "Minute",
            "Viewers",
            &[Series {
                label: "Concurrency".into(),
                points: vec![(0.0, 2.0), (1.0, 3.0), (2.0, 1.0)],
            }],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("role=\"img\"") && s.contains("<title>Viewers</title>"));
        assert!(s.contains("class=\"x-label\"") && s.contains(">Minute</text>"));
        assert!(s.contains("class=\"y-label\""));
        assert!(s.contains("<polyline"));
        // The y ticks (0..3 → 0, 1, 2, 3) and the x ticks (0, 0.5, …, 2) are written.
        assert!(s.contains(">3</text>") && s.contains(">1.5</text>"), "{s}");
        let b = bar_chart("Votes", &[("A".into(), 2.0), ("B".into(), 1.0)], "votes");
        assert!(b.contains("role=\"img\"") && b.contains(">A</text>"));
        assert!(
            b.contains(">2</text>") && b.contains(">votes</text>"),
            "{b}"
        );
    }

    #[test]
    fn empty_data_says_so() {
        let s = line_chart("Nothing", "x", "y", &[]);
        assert!(s.contains("No data") && s.ends_with("</svg>"));
        let s = line_chart(
            "Nothing",
            "x",
            "y",
            &[Series {
                label: "l".into(),
                points: vec![],
            }],
        );
        assert!(s.contains("No data"));
        let b = bar_chart("Nothing", &[], "");
        assert!(b.contains("No data") && b.ends_with("</svg>"));
        // All zeros: bars of no width, no division by zero.
        let b = bar_chart("Zeros", &[("a".into(), 0.0)], "");
        assert!(!b.contains("NaN") && !b.contains("inf"), "{b}");
        let t = table(&["a", "b"], &[]);
        assert!(t.contains("<th scope=\"col\">a</th>") && t.contains("<tbody>\n</tbody>"));
        // A single point is drawn as a dot.
        let s = line_chart(
            "One",
            "x",
            "y",
            &[Series {
                label: "l".into(),
                points: vec![(1.0, 1.0)],
            }],
        );
        assert!(s.contains("<circle") && !s.contains("NaN"));
    }
}
