//! Reading the cells of query rows (`QueryResult` rows: JSON values) into the pictures' types,
//! with an error that names the table and the column when a cell is not what the query asks
//! for.

use serde_json::Value as Json;

use super::VizError;

/// One row of `table`.
pub struct Row<'a> {
    pub table: &'static str,
    pub cells: &'a [Json],
}

impl<'a> Row<'a> {
    pub fn new(table: &'static str, cells: &'a [Json]) -> Row<'a> {
        Row { table, cells }
    }

    fn cell(&self, i: usize, column: &str) -> Result<&'a Json, VizError> {
        self.cells.get(i).ok_or_else(|| VizError::Row {
            table: self.table,
            why: format!("no column {i} ({column})"),
        })
    }

    fn wrong(&self, column: &str, what: &str, value: &Json) -> VizError {
        VizError::Row {
            table: self.table,
            why: format!("{column} is {value}, not {what}"),
        }
    }

    pub fn i64(&self, i: usize, column: &str) -> Result<i64, VizError> {
        let v = self.cell(i, column)?;
        v.as_i64()
            .ok_or_else(|| self.wrong(column, "an integer", v))
    }

    pub fn opt_i64(&self, i: usize, column: &str) -> Result<Option<i64>, VizError> {
        match self.cell(i, column)? {
            Json::Null => Ok(None),
            _ => self.i64(i, column).map(Some),
        }
    }

    pub fn f64(&self, i: usize, column: &str) -> Result<f64, VizError> {
        let v = self.cell(i, column)?;
        // `Query` writes NaN and the infinities as strings; a chart has no place for them.
        Ok(v.as_f64().unwrap_or(0.0))
    }

    pub fn text(&self, i: usize, column: &str) -> Result<String, VizError> {
        match self.cell(i, column)? {
            Json::Null => Ok(String::new()),
            Json::String(s) => Ok(s.clone()),
            other => Ok(other.to_string()),
        }
    }

    pub fn bool(&self, i: usize, column: &str) -> Result<bool, VizError> {
        let v = self.cell(i, column)?;
        match v {
            Json::Null => Ok(false),
            _ => v
                .as_bool()
                .ok_or_else(|| self.wrong(column, "a boolean", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_read_or_named_in_the_error() {
        let cells = vec![json!(7), json!(null), json!("x"), json!(true), json!(1.5)];
        let row = Row::new("workers", &cells);
        assert_eq!(row.i64(0, "a").unwrap(), 7);
        assert_eq!(row.opt_i64(1, "b").unwrap(), None);
        assert_eq!(row.text(2, "c").unwrap(), "x");
        assert!(row.bool(3, "d").unwrap());
        assert_eq!(row.f64(4, "e").unwrap(), 1.5);
        let e = row.i64(2, "c").unwrap_err().to_string();
        assert!(e.contains("workers") && e.contains("c is \"x\""), "{e}");
        assert!(
            row.i64(9, "z")
                .unwrap_err()
                .to_string()
                .contains("no column 9")
        );
    }
}
