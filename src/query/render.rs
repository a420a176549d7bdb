//! Query results for people (an aligned table) and for scripts (a JSON document).

use serde_json::Value as Json;

use super::QueryResult;

/// An aligned text table in the style of `psql`: a header, a separator, one line per row and
/// a row count. Numbers are right-aligned, everything else left-aligned; NULL is an empty
/// cell; strings appear without quotes, with newlines and tabs escaped so every row stays on
/// one line; nested values appear as compact JSON.
pub fn render_table(result: &QueryResult) -> String {
    let cells: Vec<Vec<(String, bool)>> = result
        .rows
        .iter()
        .map(|row| {
            (0..result.columns.len())
                .map(|i| cell(row.get(i).unwrap_or(&Json::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            cells
                .iter()
                .map(|row| width(&row[i].0))
                .chain([width(name)])
                .max()
                .unwrap_or(0)
        })
        .collect();

    let mut out = String::new();
    let header: Vec<String> = result
        .columns
        .iter()
        .zip(&widths)
        .map(|(name, &w)| center(name, w))
        .collect();
    push_line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in &cells {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|((text, numeric), &w)| pad(text, w, *numeric))
            .collect();
        push_line(&mut out, &padded);
    }
    let n = result.rows.len();
    out.push_str(&format!("({n} {})\n", if n == 1 { "row" } else { "rows" }));
    out
}

/// A JSON array with one object per row, keys in column order. Repeated column names get a
/// suffix (`a`, `a_1`, ...) so no value is lost to a duplicate key.
pub fn render_json(result: &QueryResult) -> String {
    let keys: Vec<String> = unique_names(&result.columns)
        .iter()
        .map(|name| Json::String(name.clone()).to_string())
        .collect();
    if result.rows.is_empty() {
        return "[]\n".to_owned();
    }
    let mut out = String::from("[\n");
    for (r, row) in result.rows.iter().enumerate() {
        out.push_str("  {");
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push(':');
            out.push_str(&row.get(i).unwrap_or(&Json::Null).to_string());
        }
        out.push('}');
        if r + 1 < result.rows.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str("]\n");
    out
}

/// Column names with repeats made unique the way DuckDB does for tables: `a`, `a_1`, `a_2`.
fn unique_names(columns: &[String]) -> Vec<String> {
    let mut taken: Vec<String> = Vec::with_capacity(columns.len());
    for name in columns {
        let mut candidate = name.clone();
        let mut n = 1;
        while taken.contains(&candidate) {
            candidate = format!("{name}_{n}");
            n += 1;
        }
        taken.push(candidate);
    }
    taken
}

/// A value's text in a table cell, and whether it is a number (right-aligned).
fn cell(value: &Json) -> (String, bool) {
    match value {
        Json::Null => (String::new(), false),
        Json::Number(n) => (n.to_string(), true),
        Json::String(s) => (escape_controls(s), false),
        other => (escape_controls(&other.to_string()), false),
    }
}

/// Keeps a cell on one line.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Display width in characters (wide CJK glyphs count as one; good enough for a table).
fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(text: &str, w: usize, right: bool) -> String {
    let fill = " ".repeat(w.saturating_sub(width(text)));
    if right {
        format!("{fill}{text}")
    } else {
        format!("{text}{fill}")
    }
}

fn center(text: &str, w: usize) -> String {
    let space = w.saturating_sub(width(text));
    let left = space / 2;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(space - left))
}

/// ` a | b | c` with trailing spaces trimmed, as psql prints.
fn push_line(out: &mut String, cells: &[String]) {
    let line: Vec<String> = cells.iter().map(|c| format!(" {c} ")).collect();
    out.push_str(line.join("|").trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> QueryResult {
        QueryResult {
            columns: vec!["id".into(), "name".into(), "details".into()],
            column_types: vec!["BIGINT".into(), "VARCHAR".into(), "JSON".into()],
            rows: vec![
                vec![json!(1), json!("alice"), json!({"k": [1, 2]})],
                vec![json!(20), Json::Null, json!("two\nlines")],
            ],
        }
    }

    #[test]
    fn table_is_aligned_like_psql() {
        let expected = concat!(
            " id | name  |   details\n",
            "----+-------+-------------\n",
            "  1 | alice | {\"k\":[1,2]}\n",
            " 20 |       | two\\nlines\n",
            "(2 rows)\n",
        );
        assert_eq!(render_table(&sample()), expected);
    }

    #[test]
    fn empty_table_keeps_its_header() {
        let result = QueryResult {
            columns: vec!["x".into()],
            column_types: vec!["INTEGER".into()],
            rows: vec![],
        };
        assert_eq!(render_table(&result), " x\n---\n(0 rows)\n");
    }

    #[test]
    fn json_keeps_column_order() {
        let mut result = sample();
        result.columns = vec!["z".into(), "a".into(), "z".into()];
        let text = render_json(&result);
        assert_eq!(
            text,
            "[\n  {\"z\":1,\"a\":\"alice\",\"z_1\":{\"k\":[1,2]}},\n  {\"z\":20,\"a\":null,\"z_1\":\"two\\nlines\"}\n]\n"
        );
        let parsed: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[1]["z_1"], json!("two\nlines"));
    }

    #[test]
    fn empty_json_is_an_empty_array() {
        let result = QueryResult {
            columns: vec!["x".into()],
            column_types: vec!["INTEGER".into()],
            rows: vec![],
        };
        assert_eq!(render_json(&result), "[]\n");
    }
}
