//! Plan files: a test suite written in TOML, expanded on the client into one job of tasks.
//!
//! `testfleet run plan.toml` reads the file with [`load`], which turns it into a [`Plan`]: a
//! job name and a list of [`PlannedTask`]s with every default filled in. The CLI then gives
//! each task an id with [`Plan::into_specs`] and submits the job. Nothing here touches the
//! cluster; expansion is pure apart from reading the plan and its items files.
//!
//! # FORMAT
//!
//! ```toml
//! name = "my-suite"                # the job's name; the file's stem when left out
//! [defaults]                       # any task field, for every entry below
//! timeout = "300s"
//! cwd = "/srv/checkout"            # on the worker
//! [[task]]                         # one task
//! name = "lint"
//! command = ["cargo", "clippy"]
//! [[matrix]]                       # one task per item
//! name = "unit-{item}"
//! command = ["python3", "-m", "pytest", "{item}"]
//! items = ["tests/test_a.py", "tests/test_b.py"]   # or items_file = "list.txt"
//! requires = { labels = { os = "linux" } }
//! ```
//!
//! Task fields, allowed in `[defaults]`, `[[task]]` and `[[matrix]]`: `name`, `command` (an
//! array of strings whose first element, the program, is not empty), `env` (a table of
//! strings), `cwd`, `junit` (the JUnit XML file the command writes, relative to `cwd`: the
//! worker reports each test in it, and the command finds the path in `TESTFLEET_JUNIT_XML`),
//! `timeout` (a duration string, see [`parse_duration`], or a whole number
//! of seconds), `priority`, `max_retries`, `timeout_retries`, `flaky_retries` and `requires =
//! { labels = {..}, capabilities = [..] }`. The meaning of each is documented on
//! [`TaskSpec`]. `requires` also takes the typed requirements `webgpu`, `webnn`, `gpu_type`,
//! `browser`, `min_memory_gb` and `min_gpu_buffer_mb`, which become capability expressions
//! (`requires.rs` has the table). An entry's own value replaces the default, except for the
//! tables `env` and `requires.labels`, which are merged key by key (the entry wins), and
//! `requires.capabilities`, which is the union of both lists. What neither gives comes from
//! the built-in defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_PRIORITY`], [`DEFAULT_MAX_RETRIES`],
//! [`DEFAULT_TIMEOUT_RETRIES`] and [`DEFAULT_FLAKY_RETRIES`].
//!
//! # MATRIX
//!
//! A `[[matrix]]` entry has exactly one of `items` (an array of strings) or `items_file` (a
//! path relative to the plan file's directory: one item per line, surrounding whitespace
//! trimmed, blank lines and lines starting with `#` skipped). It expands to one task per item,
//! in order; `{item}` and `{index}` (counting from 0) are replaced in the name, the command's
//! elements, the env values and the cwd, including values taken from `[defaults]`. Outside a
//! matrix, braces are plain text.
//!
//! Tasks keep the order of their entries in the file, `[[task]]` and `[[matrix]]` alike; task
//! names must be unique after expansion, and a plan without tasks is an error.
//!
//! # ERRORS
//!
//! Every problem is a [`PlanError`] that names the file, line and column, in the form
//! compilers use, so editors can jump to it:
//!
//! ```text
//! plan.toml:12:11: bad duration "5 minutes": use a number with a unit, like "300s", "5m" or "1h30m"
//! ```
//!
//! Syntax and type errors come from `toml` with a byte span, converted here to line:column.
//! The checks that follow parsing keep their positions by reading the fields they validate
//! as [`toml::Spanned`]. Unknown keys are errors everywhere (`deny_unknown_fields`), so a
//! misspelled `timout` cannot silently fall back to a default.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use toml::Spanned;

use crate::state::command::{TaskId, TaskSpec};
use crate::state::limits;

mod raw;
mod requires;
pub mod shard;
#[cfg(test)]
mod tests;

use raw::{RawCommand, RawEntry, RawPlan, RawTimeout, WholeNumber};
use requires::Needs;
pub use requires::{BROWSERS, GPU_TYPES};

/// How long a task may run when neither it nor `[defaults]` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Queue priority when none is given; higher runs first.
pub const DEFAULT_PRIORITY: i32 = 0;
/// Infrastructure retries when none are given (ARCHITECTURE.md § Outcomes).
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Extra runs after a timeout when none are given (ARCHITECTURE.md § Outcomes).
pub const DEFAULT_TIMEOUT_RETRIES: u32 = 1;
/// Extra runs after a failure when none are given: a failure is final.
pub const DEFAULT_FLAKY_RETRIES: u32 = 0;

/// What [`parse_duration`] tells a user who wrote something else.
const DURATION_HINT: &str = r#"use a number with a unit, like "300s", "5m" or "1h30m""#;

/// The environment variable naming a task's JUnit XML file (a plan's `junit`), relative to
/// its working directory: the worker reads it after the command (`crate::worker::junit`).
pub const JUNIT_ENV: &str = "TESTFLEET_JUNIT_XML";

/// A plan file, expanded: the job's name and its tasks in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The job's name: the plan's `name`, or the plan file's stem.
    pub name: String,
    /// Never empty; names are unique.
    pub tasks: Vec<PlannedTask>,
}

/// One task of a plan with every default applied: a [`TaskSpec`] still waiting for its id.
/// The fields mean what they mean there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTask {
    pub name: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub timeout_ms: u64,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub max_retries: u32,
    pub timeout_retries: u32,
    pub flaky_retries: u32,
}

impl Plan {
    /// The tasks as submitted, in order, each with an id from `new_id` (the CLI passes a
    /// UUID v4 generator; tests pass a counter).
    pub fn into_specs(self, mut new_id: impl FnMut() -> String) -> Vec<TaskSpec> {
        self.tasks
            .into_iter()
            .map(|task| task.into_spec(new_id()))
            .collect()
    }
}

impl PlannedTask {
    /// This task as submitted under `id`.
    pub fn into_spec(self, id: TaskId) -> TaskSpec {
        TaskSpec {
            id,
            name: self.name,
            command: self.command,
            env: self.env,
            cwd: self.cwd,
            timeout_ms: self.timeout_ms,
            priority: self.priority,
            labels: self.labels,
            capabilities: self.capabilities,
            max_retries: self.max_retries,
            timeout_retries: self.timeout_retries,
            flaky_retries: self.flaky_retries,
        }
    }
}

/// A plan that cannot be used, and where the problem is.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The plan file itself could not be read. The I/O error is part of the message, so it
    /// is deliberately not also a `source` (chains would print it twice).
    #[error("{}: cannot read plan file: {}", .file.display(), os_message(.error))]
    Read { file: PathBuf, error: io::Error },
    /// The file is not valid TOML, does not have the plan's shape, or describes tasks that
    /// cannot run (including an items file that cannot be read).
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
}

impl PlanError {
    /// The line (from 1) the problem is on, when it is on one.
    pub fn line(&self) -> Option<usize> {
        match self {
            PlanError::Read { .. } => None,
            PlanError::Invalid { at, .. } => at.position.map(|p| p.line),
        }
    }

    /// The problem without its location.
    pub fn message(&self) -> String {
        match self {
            PlanError::Read { error, .. } => {
                format!("cannot read plan file: {}", os_message(error))
            }
            PlanError::Invalid { message, .. } => message.clone(),
        }
    }
}

/// A place in a plan file: `plan.toml:12:11`, or just `plan.toml` for a problem with the file
/// as a whole (no tasks at all) or one toml could not place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub position: Option<Position>,
}

/// A line and column, both counted from 1; columns count characters, not bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(Position { line, column }) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// Reads and expands the plan at `path`; `items_file`s are found next to it.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|error| PlanError::Read {
        file: path.to_path_buf(),
        error,
    })?;
    parse(&text, path)
}

/// Expands the plan `text`. `origin` is the file it came from: errors name it, the job is
/// named after its stem when the plan gives no name, and `items_file`s are resolved against
/// its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Plan, PlanError> {
    let source = Source { text, origin };
    let raw: RawPlan = toml::from_str(text).map_err(|e| {
        let mut message = e.message().trim_end().to_string();
        let key = e.span().and_then(|span| text.get(span)).unwrap_or("");
        if message == "duplicate key" && !key.is_empty() && !key.contains('\n') {
            message = format!("duplicate key `{key}`");
        }
        match e.span() {
            Some(span) => source.error(span, message),
            None => source.error_in_file(message),
        }
    })?;
    source.expand(raw)
}

/// Parses a duration: numbers with units, largest unit first, each unit at most once, no
/// spaces: `"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"2h0m15s"`. Units are `h`, `m`, `s` and
/// `ms`. Zero is allowed here; callers that need a positive duration check for it. The error
/// is a whole sentence, ready to show.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("bad duration {text:?}: {why}");
    if text.is_empty() {
        return Err(bad(DURATION_HINT));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut last_rank = None;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if digits.is_empty() || unit.is_empty() {
            return Err(bad(DURATION_HINT));
        }
        let (rank, unit_ms) = match unit {
            "h" => (0, 3_600_000),
            "m" => (1, 60_000),
            "s" => (2, 1_000),
            "ms" => (3, 1),
            other => return Err(bad(&format!("unknown unit {other:?}; use h, m, s or ms"))),
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(bad(r#"give each unit once, largest first, like "1h30m""#));
        }
        last_rank = Some(rank);
        total_ms = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| bad("too long"))?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A task timeout as `submit --timeout` and a plan's `timeout` take it: a duration string
/// (`"90s"`, `"1h30m"`, see [`parse_duration`]) or a whole number of seconds (`"300"`); more
/// than zero and at most the store's limit. One parser, so the CLI and plans agree.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = text
            .parse()
            .map_err(|_| format!("bad timeout {text:?}: too long"))?;
        Duration::from_secs(seconds)
    } else {
        parse_duration(text)?
    };
    if duration.is_zero() {
        return Err(format!("timeout must be more than zero, not {text:?}"));
    }
    if duration.as_millis() > u128::from(limits::MAX_TIMEOUT_MS) {
        return Err(format!(
            "timeout is too long (at most {} days), not {text:?}",
            limits::MAX_TIMEOUT_MS / (24 * 3600 * 1000)
        ));
    }
    Ok(duration)
}

/// An I/O error as a person reads it: "No such file or directory", without "(os error 2)".
fn os_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(end) if error.raw_os_error().is_some() => text[..end].to_string(),
        _ => text,
    }
}

/// Which kind of entry a [`RawEntry`] is, for messages and for the matrix-only keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Defaults,
    Task,
    Matrix,
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Defaults => "[defaults]",
            EntryKind::Task => "[[task]]",
            EntryKind::Matrix => "[[matrix]]",
        })
    }
}

/// The task fields of one entry, checked; `None` and empty mean "not given here".
#[derive(Clone, Default)]
struct Fields {
    name: Option<Spanned<String>>,
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    priority: Option<i32>,
    max_retries: Option<u32>,
    timeout_retries: Option<u32>,
    flaky_retries: Option<u32>,
    labels: BTreeMap<String, String>,
    capabilities: Vec<String>,
    needs: Needs,
}

impl Fields {
    /// `entry` on top of `self` (the defaults), following the merge rules in the module doc.
    fn overlay(&self, entry: Fields) -> Fields {
        let mut env = self.env.clone();
        env.extend(entry.env);
        let mut labels = self.labels.clone();
        labels.extend(entry.labels);
        let mut capabilities = self.capabilities.clone();
        for capability in entry.capabilities {
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
        Fields {
            name: entry.name.or_else(|| self.name.clone()),
            command: entry.command.or_else(|| self.command.clone()),
            env,
            cwd: entry.cwd.or_else(|| self.cwd.clone()),
            timeout_ms: entry.timeout_ms.or(self.timeout_ms),
            priority: entry.priority.or(self.priority),
            max_retries: entry.max_retries.or(self.max_retries),
            timeout_retries: entry.timeout_retries.or(self.timeout_retries),
            flaky_retries: entry.flaky_retries.or(self.flaky_retries),
            labels,
            capabilities,
            needs: self.needs.overlay(&entry.needs),
        }
    }

    /// Replaces `{item}` and `{index}` in the name, command, env values and cwd.
    fn substitute(&self, item: &str, index: usize) -> Fields {
        let index = index.to_string();
        let fill = |text: &str| text.replace("{item}", item).replace("{index}", &index);
        let mut out = self.clone();
        out.name = self
            .name
            .as_ref()
            .map(|name| Spanned::new(name.span(), fill(name.get_ref())));
        out.command = self
            .command
            .as_ref()
            .map(|args| args.iter().map(|arg| fill(arg)).collect());
        out.env = self.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
        out.cwd = self.cwd.as_deref().map(fill);
        out
    }
}

/// The plan text and where it came from: everything an error needs to say where it is.
struct Source<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Source<'_> {
    /// An error at the start of the byte range `span`.
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            at: Location {
                file: self.origin.to_path_buf(),
                position: Some(position(self.text, span.start)),
            },
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    fn error_in_file(&self, message: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            at: Location {
                file: self.origin.to_path_buf(),
                position: None,
            },
            message: message.into(),
        }
    }

    fn expand(&self, raw: RawPlan) -> Result<Plan, PlanError> {
        let name = match raw.name {
            Some(name) if name.get_ref().trim().is_empty() => {
                return Err(self.error(name.span(), "the plan's name is empty"));
            }
            Some(name) => name.into_inner(),
            None => self
                .origin
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .filter(|stem| !stem.is_empty())
                .unwrap_or_else(|| "plan".to_string()),
        };
        let defaults = match raw.defaults {
            Some(entry) => self.fields(EntryKind::Defaults, &entry)?,
            None => Fields::default(),
        };

        // [[task]] and [[matrix]] arrive in two lists; their spans restore the file's order.
        let mut entries: Vec<(EntryKind, Spanned<RawEntry>)> = raw
            .task
            .into_iter()
            .map(|entry| (EntryKind::Task, entry))
            .chain(raw.matrix.into_iter().map(|e| (EntryKind::Matrix, e)))
            .collect();
        entries.sort_by_key(|(_, entry)| entry.span().start);

        let mut tasks = Vec::new();
        let mut first_use: HashMap<String, usize> = HashMap::new();
        for (kind, entry) in &entries {
            let fields = defaults.overlay(self.fields(*kind, entry.get_ref())?);
            let expanded = match kind {
                EntryKind::Matrix => self
                    .items(entry)?
                    .iter()
                    .enumerate()
                    .map(|(index, item)| fields.substitute(item, index))
                    .collect(),
                _ => vec![fields.clone()],
            };
            for task_fields in expanded {
                let task = self.finish(*kind, entry, task_fields, &mut first_use, &fields)?;
                tasks.push(task);
            }
        }
        if tasks.is_empty() {
            return Err(
                self.error_in_file("the plan has no tasks: add a [[task]] or a [[matrix]] entry")
            );
        }
        Ok(Plan { name, tasks })
    }

    /// Checks the task fields one entry gives.
    fn fields(&self, kind: EntryKind, entry: &RawEntry) -> Result<Fields, PlanError> {
        if kind != EntryKind::Matrix {
            let misplaced = [
                ("items", entry.items.as_ref().map(Spanned::span)),
                ("items_file", entry.items_file.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = misplaced.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(
                    span,
                    format!("{key} belongs in a [[matrix]] entry, not in {kind}"),
                ));
            }
        }
        let mut fields = Fields {
            name: entry.name.clone(),
            ..Fields::default()
        };
        if let Some(name) = &entry.name {
            self.check_text(name, "name")?;
        }
        if let Some(command) = &entry.command {
            fields.command = Some(self.command(command)?);
        }
        if let Some(env) = &entry.env {
            for (key, value) in env.get_ref() {
                if key.is_empty() || key.contains(['=', '\0']) {
                    return Err(self.error(
                        env.span(),
                        format!(
                            "bad env variable name {key:?}: \
                             it must be non-empty, without '=' or NUL"
                        ),
                    ));
                }
                if value.contains('\0') {
                    return Err(self.error(env.span(), format!("env value of {key} contains NUL")));
                }
            }
            fields.env = env.get_ref().clone();
        }
        if let Some(junit) = &entry.junit {
            self.check_text(junit, "junit")?;
            if junit.get_ref().trim().is_empty() {
                return Err(self.error(
                    junit.span(),
                    "junit is empty: name the JUnit XML file the command writes, e.g. \
                     \"report.xml\""
                        .to_string(),
                ));
            }
            // The worker reads the file after the command; the command sees where, too.
            fields
                .env
                .insert(JUNIT_ENV.to_string(), junit.get_ref().clone());
        }
        if let Some(cwd) = &entry.cwd {
            self.check_text(cwd, "cwd")?;
            fields.cwd = Some(cwd.get_ref().clone());
        }
        if let Some(timeout) = &entry.timeout {
            fields.timeout_ms = Some(self.timeout(timeout)?);
        }
        if let Some(priority) = &entry.priority {
            let value = i32::try_from(priority.get_ref().0).map_err(|_| {
                self.error(
                    priority.span(),
                    format!(
                        "priority {} is out of range ({} to {})",
                        priority.get_ref().0,
                        i32::MIN,
                        i32::MAX
                    ),
                )
            })?;
            fields.priority = Some(value);
        }
        fields.max_retries = self.count("max_retries", entry.max_retries.as_ref())?;
        fields.timeout_retries = self.count("timeout_retries", entry.timeout_retries.as_ref())?;
        fields.flaky_retries = self.count("flaky_retries", entry.flaky_retries.as_ref())?;
        if let Some(requires) = &entry.requires {
            fields.labels = requires.labels.clone();
            for capability in &requires.capabilities {
                let text = capability.get_ref();
                if text.is_empty() || text.contains(char::is_whitespace) {
                    return Err(self.error(
                        capability.span(),
                        format!(
                            "bad capability {text:?}: write a name or name=value without spaces, \
                             like \"webgpu\" or \"gpu=discrete\""
                        ),
                    ));
                }
                if !fields.capabilities.contains(text) {
                    fields.capabilities.push(text.clone());
                }
            }
            fields.needs =
                Needs::parse(requires).map_err(|(span, message)| self.error(span, message))?;
        }
        Ok(fields)
    }

    fn command(&self, command: &Spanned<RawCommand>) -> Result<Vec<String>, PlanError> {
        let args = &command.get_ref().0;
        let Some(program) = args.first() else {
            return Err(self.error(
                command.span(),
                r#"command is empty: give at least the program, like ["cargo", "test"]"#,
            ));
        };
        if program.get_ref().trim().is_empty() {
            return Err(self.error(
                program.span(),
                "the program (the first element of command) is empty",
            ));
        }
        for arg in args {
            self.check_text(arg, "command argument")?;
        }
        Ok(args.iter().map(|arg| arg.get_ref().clone()).collect())
    }

    fn timeout(&self, timeout: &Spanned<RawTimeout>) -> Result<u64, PlanError> {
        let span = timeout.span();
        let ms = match timeout.get_ref() {
            RawTimeout::Text(text) => {
                let duration = parse_timeout(text).map_err(|e| self.error(span.clone(), e))?;
                u64::try_from(duration.as_millis())
                    .map_err(|_| self.error(span.clone(), "timeout is too long"))?
            }
            RawTimeout::Seconds(seconds) => {
                let seconds = u64::try_from(*seconds).map_err(|_| {
                    self.error(
                        span.clone(),
                        format!("timeout must be a positive number of seconds, not {seconds}"),
                    )
                })?;
                seconds
                    .checked_mul(1_000)
                    .ok_or_else(|| self.error(span.clone(), "timeout is too long"))?
            }
        };
        if ms == 0 {
            return Err(self.error(span, "timeout must be more than zero"));
        }
        if ms > limits::MAX_TIMEOUT_MS {
            return Err(self.error(
                span,
                format!(
                    "timeout is too long (at most {} days)",
                    limits::MAX_TIMEOUT_MS / (24 * 3600 * 1000)
                ),
            ));
        }
        Ok(ms)
    }

    /// A retry count: a whole number from 0 to [`limits::MAX_RETRIES`].
    fn count(
        &self,
        key: &str,
        value: Option<&Spanned<WholeNumber>>,
    ) -> Result<Option<u32>, PlanError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let n = value.get_ref().0;
        match u32::try_from(n) {
            Ok(count) if count <= limits::MAX_RETRIES => Ok(Some(count)),
            _ if n < 0 => {
                Err(self.error(value.span(), format!("{key} must be 0 or more, not {n}")))
            }
            _ => Err(self.error(
                value.span(),
                format!("{key} {n} is too large (at most {})", limits::MAX_RETRIES),
            )),
        }
    }

    /// Text that ends up in a process's argv, environment or cwd cannot hold NUL.
    fn check_text(&self, text: &Spanned<String>, what: &str) -> Result<(), PlanError> {
        if text.get_ref().contains('\0') {
            return Err(self.error(text.span(), format!("{what} contains a NUL character")));
        }
        Ok(())
    }

    /// A matrix entry's items, from `items` or from `items_file`.
    fn items(&self, entry: &Spanned<RawEntry>) -> Result<Vec<String>, PlanError> {
        let raw = entry.get_ref();
        match (&raw.items, &raw.items_file) {
            (Some(_), Some(file)) => Err(self.error(
                file.span(),
                "a [[matrix]] takes either items or items_file, not both",
            )),
            (None, None) => Err(self.error(
                entry.span(),
                r#"a [[matrix]] needs items = ["..."] or items_file = "...""#,
            )),
            (Some(items), None) => {
                if items.get_ref().is_empty() {
                    return Err(self.error(items.span(), "items is empty: list at least one"));
                }
                for item in items.get_ref() {
                    if item.get_ref().is_empty() {
                        return Err(self.error(item.span(), "an item is empty"));
                    }
                    self.check_text(item, "item")?;
                }
                Ok(items
                    .get_ref()
                    .iter()
                    .map(|i| i.get_ref().clone())
                    .collect())
            }
            (None, Some(file)) => self.items_file(file),
        }
    }

    fn items_file(&self, file: &Spanned<String>) -> Result<Vec<String>, PlanError> {
        let written = file.get_ref();
        let base = self.origin.parent().unwrap_or(Path::new(""));
        let resolved = base.join(written);
        let shown = std::path::absolute(&resolved).unwrap_or_else(|_| resolved.clone());
        let text = std::fs::read_to_string(&resolved).map_err(|e| {
            self.error(
                file.span(),
                format!(
                    "cannot read items file {written} (resolved to {}): {}",
                    shown.display(),
                    os_message(&e)
                ),
            )
        })?;
        let items: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_string)
            .collect();
        if items.is_empty() {
            return Err(self.error(
                file.span(),
                format!(
                    "items file {written} (resolved to {}) lists no items",
                    shown.display()
                ),
            ));
        }
        if items.iter().any(|item| item.contains('\0')) {
            return Err(self.error(file.span(), format!("items file {written} contains NUL")));
        }
        Ok(items)
    }

    /// Turns merged, substituted fields into a task; `template` is the entry before
    /// substitution, for the duplicate-name hint.
    fn finish(
        &self,
        kind: EntryKind,
        entry: &Spanned<RawEntry>,
        fields: Fields,
        first_use: &mut HashMap<String, usize>,
        template: &Fields,
    ) -> Result<PlannedTask, PlanError> {
        let Some(name) = fields.name else {
            return Err(self.error(
                entry.span(),
                format!("{kind} entry has no name: add name = \"...\""),
            ));
        };
        let span = name.span();
        let name = name.into_inner();
        if name.trim().is_empty() {
            return Err(self.error(span, "task name is empty"));
        }
        let Some(command) = fields.command else {
            return Err(self.error(
                entry.span(),
                format!("task {name:?} has no command: add command = [\"program\", \"arg\", ...]"),
            ));
        };
        let line = position(self.text, span.start).line;
        if let Some(first) = first_use.get(&name) {
            let mut message = format!("duplicate task name {name:?} (first used on line {first})");
            let names_vary = template
                .name
                .as_ref()
                .is_some_and(|n| n.get_ref().contains("{item}") || n.get_ref().contains("{index}"));
            if kind == EntryKind::Matrix && !names_vary {
                message.push_str("; put {item} or {index} in a [[matrix]] name");
            }
            return Err(self.error(span, message));
        }
        first_use.insert(name.clone(), line);
        Ok(PlannedTask {
            name,
            command,
            env: fields.env,
            cwd: fields.cwd,
            timeout_ms: fields
                .timeout_ms
                .unwrap_or(u64::try_from(DEFAULT_TIMEOUT.as_millis()).unwrap_or(u64::MAX)),
            priority: fields.priority.unwrap_or(DEFAULT_PRIORITY),
            labels: fields.labels,
            capabilities: with_needs(fields.capabilities, &fields.needs),
            max_retries: fields.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            timeout_retries: fields.timeout_retries.unwrap_or(DEFAULT_TIMEOUT_RETRIES),
            flaky_retries: fields.flaky_retries.unwrap_or(DEFAULT_FLAKY_RETRIES),
        })
    }
}

/// The capability expressions written by hand, then those the typed requirements stand for,
/// without repeats.
fn with_needs(mut capabilities: Vec<String>, needs: &Needs) -> Vec<String> {
    for expression in needs.expressions() {
        if !capabilities.contains(&expression) {
            capabilities.push(expression);
        }
    }
    capabilities
}

/// The line and column of byte `offset` in `text`. An offset past the end, or inside a
/// character, is moved back to the nearest character start rather than trusted.
fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}
