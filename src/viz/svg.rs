//! What the hand-written SVG pictures share: the document frame, escaping, the colours of
//! roles and statuses, and a UTC time axis.

use std::fmt::Write as _;

/// The font family every picture names; the rasteriser maps it to the embedded DejaVu Sans
/// (`viz/raster.rs`), a browser to its own sans-serif font.
pub const FONT: &str = "sans-serif";

/// Text colour, grid colour, background.
pub const INK: &str = "#222222";
pub const MUTED: &str = "#777777";
pub const GRID: &str = "#dddddd";
pub const PAPER: &str = "#ffffff";

/// `text` with the five XML specials escaped, for element text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot hold at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A whole SVG document: a white background, a heading, a sub-heading, then `body`.
pub fn document(width: u32, height: u32, heading: &str, sub: &str, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"{FONT}\">\n\
         <title>{title}</title>\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"{PAPER}\"/>\n\
         <text class=\"heading\" x=\"20\" y=\"30\" font-size=\"20\" fill=\"{INK}\">{title}</text>\n\
         <text x=\"20\" y=\"50\" font-size=\"12\" fill=\"{MUTED}\">{sub}</text>\n\
         {body}</svg>\n",
        title = escape(heading),
        sub = escape(sub),
    )
}

/// `<text>` at (x, y) in `size` px, anchored `start`, `middle` or `end`.
pub fn text(x: f64, y: f64, size: u32, anchor: &str, fill: &str, content: &str) -> String {
    format!(
        "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size}\" text-anchor=\"{anchor}\" \
         fill=\"{fill}\">{}</text>\n",
        escape(content)
    )
}

/// The colour of a coordinator's role.
pub fn role_colour(role: &str) -> &'static str {
    match role {
        "leader" => "#d4a017",
        "follower" => "#4a90d9",
        "candidate" => "#e67e22",
        "learner" => "#95a5a6",
        _ => "#c0392b",
    }
}

/// The colour of a worker status (`WorkerStatus`'s names).
pub fn status_colour(status: &str) -> &'static str {
    match status {
        "healthy" => "#2e9d4f",
        "suspect" => "#e0a800",
        "failed" => "#d9534f",
        "recovering" => "#17a2b8",
        "quarantined" => "#8e44ad",
        "permanently_failed" => "#7f1d1d",
        "draining" => "#f0ad4e",
        "left" => "#999999",
        _ => "#555555",
    }
}

/// The colour of the i-th series (a coordinator, a recovery type): ten distinct ones, then
/// again from the first.
pub fn series_colour(i: usize) -> &'static str {
    const COLOURS: [&str; 10] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    COLOURS[i % COLOURS.len()]
}

/// A horizontal time axis: microseconds since the epoch onto x pixels.
#[derive(Clone, Copy, Debug)]
pub struct TimeAxis {
    pub start_us: i64,
    pub end_us: i64,
    pub x0: f64,
    pub x1: f64,
}

impl TimeAxis {
    /// An axis over `[start, end]`, widened to at least a second and padded by 3 % each side
    /// so marks at the ends are not cut.
    pub fn new(start_us: i64, end_us: i64, x0: f64, x1: f64) -> TimeAxis {
        let (start, end) = (start_us.min(end_us), start_us.max(end_us).max(start_us + 1));
        let span = (end - start).max(1_000_000);
        let pad = span / 33;
        TimeAxis {
            start_us: start - pad,
            end_us: start + span + pad,
            x0,
            x1,
        }
    }

    /// The x of a time.
    pub fn x(&self, us: i64) -> f64 {
        let t = (us - self.start_us) as f64 / (self.end_us - self.start_us) as f64;
        self.x0 + t.clamp(0.0, 1.0) * (self.x1 - self.x0)
    }

    /// Tick times and their labels: round UTC times, at most 8 of them.
    pub fn ticks(&self) -> Vec<(i64, String)> {
        const STEPS_S: [i64; 17] = [
            1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400,
        ];
        let span_s = ((self.end_us - self.start_us) / 1_000_000).max(1);
        let step = STEPS_S
            .iter()
            .copied()
            .find(|s| span_s / s <= 8)
            .unwrap_or_else(|| (span_s / 8 / 86400 + 1) * 86400);
        let step_us = step * 1_000_000;
        let mut t = self.start_us.div_euclid(step_us) * step_us;
        if t < self.start_us {
            t += step_us;
        }
        let mut ticks = Vec::new();
        while t <= self.end_us {
            let full = super::utc(t);
            // 2026-05-12T10:15:00.000Z: the time of day, or the day and the time for a span
            // of days.
            let label = if span_s < 86400 {
                full.get(11..19).unwrap_or(&full).to_string()
            } else {
                full.get(5..16).unwrap_or(&full).replace('T', " ")
            };
            ticks.push((t, label));
            t += step_us;
        }
        ticks
    }

    /// The axis line at `y`, its ticks and labels, and grid lines up to `grid_top`.
    pub fn draw(&self, y: f64, grid_top: f64) -> String {
        let mut out = format!(
            "<g class=\"time-axis\"><line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
             stroke=\"{INK}\"/>\n",
            self.x0, self.x1
        );
        for (t, label) in self.ticks() {
            let x = self.x(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{grid_top:.1}\" x2=\"{x:.1}\" y2=\"{y:.1}\" \
                 stroke=\"{GRID}\"/><line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" \
                 y2=\"{:.1}\" stroke=\"{INK}\"/>",
                y + 5.0
            );
            out.push_str(&text(x, y + 18.0, 11, "middle", INK, &label));
        }
        out.push_str(&text(self.x1, y + 34.0, 11, "end", MUTED, "time (UTC)"));
        out.push_str("</g>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_xml_specials() {
        assert_eq!(
            escape("a<b & 'c' \"d\">"),
            "a&lt;b &amp; &apos;c&apos; &quot;d&quot;&gt;"
        );
        assert_eq!(escape("nul\u{0}"), "nul?");
    }

    #[test]
    fn ticks_are_round_and_few() {
        // 10:00:07 to 10:04:51 UTC on 2026-05-12.
        let base = 1_778_580_000_000_000;
        let axis = TimeAxis::new(base + 7_000_000, base + 291_000_000, 0.0, 800.0);
        let ticks = axis.ticks();
        assert!(ticks.len() >= 2 && ticks.len() <= 9, "{ticks:?}");
        assert!(ticks.iter().all(|(t, _)| t % 60_000_000 == 0), "{ticks:?}");
        assert!(ticks.windows(2).all(|w| axis.x(w[0].0) < axis.x(w[1].0)));
        assert_eq!(ticks[0].1.len(), 8, "HH:MM:SS: {ticks:?}");
    }

    #[test]
    fn a_single_instant_still_has_an_axis() {
        let axis = TimeAxis::new(5_000_000, 5_000_000, 10.0, 110.0);
        let x = axis.x(5_000_000);
        assert!(x > 10.0 && x < 110.0);
        assert!(!axis.ticks().is_empty());
    }
}
