//! Finding a job or a task from what a person types: a full id, a unique prefix of one, or (for
//! jobs) a job's name. Anything else is an error that says what matched, so a mistyped id never
//! reads as "no rows".

use super::{CliError, Remote, query_rows};

/// What a lookup is about.
#[derive(Clone, Copy)]
enum Kind {
    Job,
    Task,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Task => "task",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Task => "tasks",
        }
    }
}

/// The id of the one job whose id is `text`, starts with `text`, or whose name is `text`
/// (an exact id wins over everything else).
pub async fn job(remote: &Remote, text: &str) -> Result<String, CliError> {
    resolve(remote, Kind::Job, text).await
}

/// The id of the one task whose id is `text` or starts with it.
pub async fn task(remote: &Remote, text: &str) -> Result<String, CliError> {
    resolve(remote, Kind::Task, text).await
}

/// `text` as a SQL string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` as a LIKE prefix pattern (its own `%`, `_` and `\` taken literally).
fn prefix_pattern(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    literal(&format!("{escaped}%"))
}

async fn resolve(remote: &Remote, kind: Kind, text: &str) -> Result<String, CliError> {
    let noun = kind.noun();
    if text.is_empty() {
        return Err(CliError::Usage(format!("give a {noun} id")));
    }
    let by_name = match kind {
        Kind::Job => format!(" OR name = {}", literal(text)),
        Kind::Task => String::new(),
    };
    // Read through the leader: a job submitted a moment ago is found.
    let sql = format!(
        "SELECT id, name, id = {exact} AS exact FROM {table} \
         WHERE id LIKE {prefix} ESCAPE '\\'{by_name} ORDER BY id LIMIT 11",
        exact = literal(text),
        table = kind.table(),
        prefix = prefix_pattern(text),
    );
    let rows = query_rows(remote, &sql, true).await?;
    let found: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_string(),
                r[1].as_str().unwrap_or_default().to_string(),
                r[2].as_bool().unwrap_or(false),
            )
        })
        .collect();
    if let Some((id, _, _)) = found.iter().find(|(_, _, exact)| *exact) {
        return Ok(id.clone());
    }
    match found.as_slice() {
        [] => Err(CliError::Usage(format!(
            "no {noun} has the id{} {text:?}: list them with `testfleet {}`",
            if matches!(kind, Kind::Job) {
                " or name"
            } else {
                ""
            },
            kind.table()
        ))),
        [(id, _, _)] => Ok(id.clone()),
        many => {
            let shown: Vec<String> = many
                .iter()
                .take(10)
                .map(|(id, name, _)| format!("{id} ({name})"))
                .collect();
            Err(CliError::Usage(format!(
                "{text:?} matches {} {noun}s: {}; give more of the id",
                if many.len() > 10 {
                    "more than 10".to_string()
                } else {
                    many.len().to_string()
                },
                shown.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_are_quoted_as_sql_text() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(prefix_pattern("a_b%"), r"'a\_b\%%'");
        assert_eq!(prefix_pattern("x'; DROP"), "'x''; DROP%'");
    }
}
