//! The explorer's charts: SVG drawn on the server (readable without
//! scripts), each an image with a title and a description for screen
//! readers, its figures also given as a table beside it. Labels are
//! escaped by maud like every other string.

use maud::{html, Markup};

use super::page::{num, pct};

/// A label cut to `n` characters (whole characters, an ellipsis after).
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// One bar: label, value, link.
pub struct Bar {
    pub label: String,
    pub value: i64,
    pub href: Option<String>,
}

/// Horizontal bars, largest value full width; `id` names its title.
pub fn bars(id: &str, title: &str, bars: &[Bar], total: Option<i64>) -> Markup {
    let (w, label_w, row) = (480.0, 170.0, 24.0);
    let h = row * bars.len().max(1) as f64 + 8.0;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1) as f64;
    let bar_w = w - label_w - 100.0;
    html! {
        // with links inside it is a group of them, not one image (whose
        // children a screen reader would not reach)
        svg class="chart bars" viewBox={ "0 0 " (w) " " (h) }
            role=(if bars.iter().any(|b| b.href.is_some()) { "group" } else { "img" }) aria-labelledby={ (id) "-t" } {
            title id={ (id) "-t" } { (title) }
            @for (i, b) in bars.iter().enumerate() {
                @let y = 4.0 + i as f64 * row;
                @let len = (b.value.max(0) as f64 / max * bar_w).max(1.0);
                g {
                    title { (b.label) ": " (num(b.value)) @if let Some(t) = total { " (" (pct(b.value as f64 / t.max(1) as f64)) ")" } }
                    @if let Some(href) = &b.href {
                        a href=(href) {
                            text x=(label_w - 8.0) y=(y + 16.0) text-anchor="end" class="label link" { (cut(&b.label, 24)) }
                        }
                    } @else {
                        text x=(label_w - 8.0) y=(y + 16.0) text-anchor="end" class="label" { (cut(&b.label, 24)) }
                    }
                    rect class="bar" x=(label_w) y=(y + 3.0) width=(format!("{len:.1}")) height=(row - 7.0) rx="2" {}
                    text x=(format!("{:.1}", label_w + len + 6.0)) y=(y + 16.0) class="value" {
                        (num(b.value))
                        @if let Some(t) = total { " · " (pct(b.value as f64 / t.max(1) as f64)) }
                    }
                }
            }
        }
    }
}

/// The Lorenz curve (`[share of groups, share of accounts]`, smallest
/// groups first) against the line of equality.
pub fn lorenz(id: &str, points: &[[f64; 2]], gini: f64) -> Markup {
    let (s, pad) = (300.0, 44.0);
    let at = |p: &[f64; 2]| format!("{:.1},{:.1}", pad + p[0] * s, pad + s - p[1] * s);
    let line: Vec<String> = points.iter().map(at).collect();
    html! {
        svg class="chart lorenz" viewBox={ "0 0 " (s + pad * 2.0) " " (s + pad * 2.0) } role="img"
            aria-labelledby={ (id) "-t" } aria-describedby={ (id) "-d" } {
            title id={ (id) "-t" } { "Lorenz curve of accounts over instances" }
            desc id={ (id) "-d" } {
                "The curve's distance below the diagonal shows inequality; Gini coefficient " (format!("{gini:.3}")) ". "
                @for p in points.iter().filter(|p| ((p[0] * 20.0).round() as i64) % 5 == 0) {
                    "The smallest " (pct(p[0])) " of instances hold " (pct(p[1])) " of accounts. "
                }
            }
            rect class="frame" x=(pad) y=(pad) width=(s) height=(s) {}
            line class="equality" x1=(pad) y1=(pad + s) x2=(pad + s) y2=(pad) {}
            polyline class="curve" points=(line.join(" ")) {}
            text x=(pad + s / 2.0) y=(pad + s + 30.0) text-anchor="middle" class="axis" { "share of instances, smallest first" }
            text x="14" y=(pad + s / 2.0) text-anchor="middle" class="axis" transform={ "rotate(-90 14 " (pad + s / 2.0) ")" } { "share of accounts" }
            text x=(pad) y=(pad + s + 14.0) text-anchor="middle" class="tick" { "0" }
            text x=(pad + s) y=(pad + s + 14.0) text-anchor="middle" class="tick" { "100%" }
            text x=(pad - 6.0) y=(pad + 4.0) text-anchor="end" class="tick" { "100%" }
            text x=(pad + 10.0) y=(pad + 18.0) class="note" { "Gini " (format!("{gini:.3}")) }
        }
    }
}

/// A line of `(day, total)` points, one circle a point, x proportional to
/// time.
pub fn growth(id: &str, title: &str, days: &[(String, i64)]) -> Markup {
    let (w, h, pad_l, pad_r, pad_t, pad_b) = (640.0, 240.0, 64.0, 16.0, 12.0, 36.0);
    let ms: Vec<i64> = days.iter().map(|(d, _)| crate::clock::parse_day_or_time(d).unwrap_or(0)).collect();
    let (t0, t1) = (ms.first().copied().unwrap_or(0), ms.last().copied().unwrap_or(0));
    let span = (t1 - t0).max(1) as f64;
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1) as f64;
    let min = days.iter().map(|d| d.1).min().unwrap_or(0).min(0) as f64;
    let x = |t: i64| {
        if days.len() == 1 {
            pad_l + (w - pad_l - pad_r) / 2.0
        } else {
            pad_l + (t - t0) as f64 / span * (w - pad_l - pad_r)
        }
    };
    let y = |v: i64| pad_t + (max - v as f64) / (max - min).max(1.0) * (h - pad_t - pad_b);
    let line: Vec<String> = ms.iter().zip(days).map(|(t, d)| format!("{:.1},{:.1}", x(*t), y(d.1))).collect();
    html! {
        svg class="chart growth" viewBox={ "0 0 " (w) " " (h) } role="img" aria-labelledby={ (id) "-t" }
            data-points=(days.len()) {
            title id={ (id) "-t" } { (title) }
            line class="axisline" x1=(pad_l) y1=(h - pad_b) x2=(w - pad_r) y2=(h - pad_b) {}
            line class="axisline" x1=(pad_l) y1=(pad_t) x2=(pad_l) y2=(h - pad_b) {}
            text x=(pad_l - 6.0) y=(pad_t + 10.0) text-anchor="end" class="tick" { (num(max as i64)) }
            text x=(pad_l - 6.0) y=(h - pad_b) text-anchor="end" class="tick" { (num(min as i64)) }
            @if let (Some(f), Some(l)) = (days.first(), days.last()) {
                text x=(pad_l) y=(h - 12.0) class="tick" { (f.0) }
                text x=(w - pad_r) y=(h - 12.0) text-anchor="end" class="tick" { (l.0) }
            }
            polyline class="curve" points=(line.join(" ")) {}
            @for (t, d) in ms.iter().zip(days) {
                circle class="point" cx=(format!("{:.1}", x(*t))) cy=(format!("{:.1}", y(d.1))) r="3" {
                    title { (d.0) ": " (num(d.1)) }
                }
            }
        }
    }
}

/// Migrations between `names` as a matrix: rows are where accounts left,
/// columns where they went; darker is more (log scale).
pub fn heatmap(id: &str, names: &[String], matrix: &[Vec<i64>]) -> Markup {
    let n = names.len();
    let (cell, label_w, top) = (26.0, 230.0, 30.0);
    let w = label_w + cell * n as f64 + 8.0;
    let h = top + cell * n as f64 + 8.0;
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    html! {
        svg class="chart heatmap" viewBox={ "0 0 " (w) " " (h) } role="img" aria-labelledby={ (id) "-t" }
            width=(w) {
            title id={ (id) "-t" } { "Accounts moved from each instance (rows) to each instance (columns)" }
            @for j in 0..n {
                text x=(label_w + cell * j as f64 + cell / 2.0) y=(top - 10.0) text-anchor="middle" class="tick" { (j + 1) }
            }
            @for (i, row) in matrix.iter().enumerate() {
                @let y = top + cell * i as f64;
                text x=(label_w - 8.0) y=(y + 16.0) text-anchor="end" class="label" { (i + 1) ". " (cut(&names[i], 28)) }
                @for (j, v) in row.iter().enumerate() {
                    @let op = if *v > 0 { 0.15 + 0.85 * ((*v as f64).ln_1p() / max.ln_1p()) } else { 0.0 };
                    rect class=(if *v > 0 { "cell" } else { "cell empty" }) x=(label_w + cell * j as f64) y=(y)
                        width=(cell - 2.0) height=(cell - 2.0) fill-opacity=(format!("{op:.2}")) {
                        title { (names[i]) " → " (names.get(j).map_or("", String::as_str)) ": " (num(*v)) " accounts" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growth_chart_has_a_point_per_day() {
        let days: Vec<(String, i64)> = (1..=7).map(|d| (format!("2025-01-{d:02}"), d * 3)).collect();
        let svg = growth("g", "growth", &days).into_string();
        assert_eq!(svg.matches("<circle").count(), 7, "{svg}");
        assert!(svg.contains("data-points=\"7\""));
    }

    #[test]
    fn chart_labels_are_escaped() {
        let b = [Bar { label: "<img src=x onerror=alert(1)>".into(), value: 3, href: None }];
        let svg = bars("b", "t", &b, Some(3)).into_string();
        assert!(!svg.contains("<img"), "{svg}");
        let svg = heatmap("h", &["</text><script>x</script>".into()], &[vec![1]]).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
    }

    #[test]
    fn labels_are_cut_on_characters() {
        assert_eq!(cut("ééééé", 3), "éé…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
