//! What the terminal renderings share: sparklines, a character timeline, and cutting text to
//! a width. Everything here fits [`WIDTH`] columns.

/// The widest line a text rendering prints.
pub const WIDTH: usize = 100;

/// `values` as a line of block characters `▁`…`█`, scaled between their minimum and maximum,
/// resampled to at most `width` characters (each the mean of its share of the values).
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let n = values.len().min(width);
    let buckets: Vec<f64> = (0..n)
        .map(|i| {
            let from = i * values.len() / n;
            let to = ((i + 1) * values.len() / n).max(from + 1);
            let part = &values[from..to];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect();
    let min = buckets.iter().copied().fold(f64::INFINITY, f64::min);
    let max = buckets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    buckets
        .iter()
        .map(|v| {
            if max - min <= f64::EPSILON * max.abs().max(1.0) {
                BARS[0]
            } else {
                let i = ((v - min) / (max - min) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

/// A line of `width` cells over `[start, end]` microseconds with `marks` (time, character)
/// placed on it: a later mark in the same cell wins, except that any mark beats `·`.
pub fn timeline(start_us: i64, end_us: i64, width: usize, marks: &[(i64, char)]) -> String {
    let mut cells = vec!['─'; width];
    let span = (end_us - start_us).max(1) as f64;
    for &(t, c) in marks {
        let i = (((t - start_us) as f64 / span) * (width.saturating_sub(1)) as f64).round();
        let i = (i.max(0.0) as usize).min(width.saturating_sub(1));
        if let Some(cell) = cells.get_mut(i)
            && (c != '·' || *cell == '─')
        {
            *cell = c;
        }
    }
    cells.into_iter().collect()
}

/// `text` cut to `width` characters, with `…` when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Words joined by `, ` and wrapped at [`WIDTH`], to be printed after a prefix `indent`
/// columns wide: every line after the first is indented by `indent` spaces.
pub fn wrap(words: &[String], indent: usize) -> String {
    let mut out = String::new();
    let mut line = indent;
    for (i, word) in words.iter().enumerate() {
        let piece = if i + 1 < words.len() {
            format!("{word},")
        } else {
            word.clone()
        };
        let len = piece.chars().count();
        if line > indent && line + 1 + len > WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = indent;
        } else if i > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(&piece);
        line += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_and_resamples() {
        assert_eq!(
            sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8),
            "▁▂▃▄▅▆▇█"
        );
        assert_eq!(sparkline(&[3.0, 3.0, 3.0], 10), "▁▁▁");
        let long: Vec<f64> = (0..1000).map(f64::from).collect();
        let line = sparkline(&long, 50);
        assert_eq!(line.chars().count(), 50);
        assert!(line.starts_with('▁') && line.ends_with('█'));
        assert_eq!(sparkline(&[], 10), "");
    }

    #[test]
    fn timeline_places_marks() {
        let line = timeline(0, 100, 11, &[(0, '1'), (50, '2'), (100, '3'), (100, '·')]);
        assert_eq!(line, "1────2────3");
    }

    #[test]
    fn wrap_stays_within_the_width() {
        let words: Vec<String> = (0..60).map(|i| format!("worker-{i}")).collect();
        let text = format!("    {}", wrap(&words, 4));
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(text.lines().count() > 3);
        assert!(text.lines().skip(1).all(|l| l.starts_with("    ")));
        assert_eq!(text.matches("worker-").count(), 60);
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
