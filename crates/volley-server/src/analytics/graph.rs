//! The flow graph as walked, drawn as SVG: the steps in the flow's order as a column of
//! boxes (each with a bar for the share of conversations that reached it and the number
//! that stopped there), and the transitions between them as arcs whose width follows
//! how many conversations took them. Everything shown is also in the report's tables.

use std::collections::HashMap;
use std::fmt::Write;

use volley_flow::markdown::escape_html as esc;

use super::flows::FlowReport;
use crate::stats::{END_NODE, START_NODE};

const ROW: f64 = 46.0;
const BOX_W: f64 = 420.0;
const BOX_H: f64 = 34.0;
const LEFT: f64 = 10.0;
const TOP: f64 = 10.0;
/// Room on the right for the arcs of edges that skip steps.
const ARCS: f64 = 330.0;

/// The SVG of a flow report's graph.
pub fn svg(r: &FlowReport) -> String {
    let mut nodes: Vec<&str> = vec![START_NODE];
    nodes.extend(r.steps.iter().map(|s| s.step.as_str()));
    nodes.push(END_NODE);
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let height = TOP * 2.0 + ROW * nodes.len() as f64;
    let width = LEFT + BOX_W + ARCS;
    let most = r.edges.iter().map(|e| e.count).max().unwrap_or(0).max(1) as f64;
    let y_of = |i: usize| TOP + ROW * i as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart flow-graph" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="system-ui, sans-serif" font-size="12"><title>Flow graph of {flow}: steps with conversations reached and stopped, transitions by count</title>"##,
        flow = esc(&r.flow)
    );
    // Edges first, under the boxes.
    let mut lane = 0.0;
    for e in &r.edges {
        let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) else {
            continue;
        };
        let w = 1.0 + 9.0 * (e.count as f64 / most);
        let label = format!("{} → {}: {}", e.from, e.to, e.count);
        if b == a + 1 {
            let x = LEFT + BOX_W / 2.0;
            let (y1, y2) = (y_of(a) + BOX_H, y_of(b));
            let _ = write!(
                out,
                r##"<line x1="{x}" y1="{y1}" x2="{x}" y2="{y2}" stroke="#7a8fb8" stroke-width="{w:.1}"><title>{t}</title></line><text x="{tx}" y="{ty}" fill="#456">{n}</text>"##,
                t = esc(&label),
                tx = x + 8.0,
                ty = (y1 + y2) / 2.0 + 4.0,
                n = e.count
            );
        } else {
            // An arc on the right; lanes spread arcs so they do not overlap exactly.
            lane = (lane + 24.0) % (ARCS - 60.0);
            let x0 = LEFT + BOX_W;
            let (y1, y2) = (y_of(a) + BOX_H / 2.0, y_of(b) + BOX_H / 2.0);
            let reach = 30.0 + lane + (b.abs_diff(a) as f64 * 4.0).min(60.0);
            let back = b < a;
            let colour = if back { "#c48a2c" } else { "#7a8fb8" };
            let _ = write!(
                out,
                r##"<path d="M{x0},{y1} C{cx},{y1} {cx},{y2} {x0},{y2}" fill="none" stroke="{colour}" stroke-opacity="0.8" stroke-width="{w:.1}"><title>{t}</title></path><text x="{tx}" y="{ty}" fill="#456">{n}</text>"##,
                cx = x0 + reach,
                t = esc(&label),
                tx = x0 + reach * 0.75 + 4.0,
                ty = (y1 + y2) / 2.0 + 4.0,
                n = e.count
            );
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let y = y_of(i);
        let step = r.steps.iter().find(|s| s.step == *node);
        let (reached, stopped) = match step {
            Some(s) => (s.reached, s.stopped_here),
            None if *node == START_NODE => (r.started, 0),
            None => (r.outcomes.iter().map(|o| o.count).sum(), 0),
        };
        let share = if r.started > 0 {
            (reached as f64 / r.started as f64).min(1.0)
        } else {
            0.0
        };
        let text = match step {
            Some(_) if stopped > 0 => {
                format!("{node} · {reached} reached · {stopped} stopped here")
            }
            Some(_) => format!("{node} · {reached} reached"),
            None if *node == START_NODE => format!("start · {reached} started"),
            None => format!("end · {reached} ended"),
        };
        let _ = write!(
            out,
            r##"<g><rect x="{LEFT}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#f4f6fa" stroke="#b8c2d6"/><rect x="{LEFT}" y="{y}" width="{bar:.1}" height="{BOX_H}" rx="6" fill="#cfe0ff"/><text x="{tx}" y="{ty}" fill="{fill}">{label}</text></g>"##,
            bar = BOX_W * share,
            tx = LEFT + 10.0,
            ty = y + BOX_H / 2.0 + 4.0,
            fill = if stopped > 0 { "#8a1f11" } else { "#1d2433" },
            label = esc(&text)
        );
    }
    out.push_str("</svg>");
    out
}
