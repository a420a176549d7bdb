//! The plan file as written: serde's view of it, before any checks.
//!
//! Every table denies unknown keys, and every value a later check needs to point at is a
//! [`Spanned`]. The hand-written `Deserialize` impls exist for their messages: they say what
//! a plan expects ("an array of strings, like [...]") where serde would name a Rust type.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

/// The top level of a plan file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) name: Option<Spanned<String>>,
    pub(super) defaults: Option<RawEntry>,
    #[serde(default)]
    pub(super) task: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    pub(super) matrix: Vec<Spanned<RawEntry>>,
}

/// `[defaults]`, a `[[task]]` or a `[[matrix]]` as written. One shape for all three (serde's
/// `flatten` would lose both `deny_unknown_fields` and the spans); `items` and `items_file`
/// are rejected outside a matrix when the entry is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    pub(super) name: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<RawCommand>>,
    pub(super) env: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) cwd: Option<Spanned<String>>,
    pub(super) junit: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<RawTimeout>>,
    pub(super) priority: Option<Spanned<WholeNumber>>,
    pub(super) max_retries: Option<Spanned<WholeNumber>>,
    pub(super) timeout_retries: Option<Spanned<WholeNumber>>,
    pub(super) flaky_retries: Option<Spanned<WholeNumber>>,
    pub(super) requires: Option<RawRequires>,
    pub(super) items: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) items_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequires {
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) capabilities: Vec<Spanned<String>>,
    // The typed requirements (`plan::requires`).
    pub(super) webgpu: Option<Spanned<bool>>,
    pub(super) webnn: Option<Spanned<bool>>,
    pub(super) gpu_type: Option<Spanned<String>>,
    pub(super) browser: Option<Spanned<String>>,
    pub(super) min_memory_gb: Option<Spanned<f64>>,
    pub(super) min_gpu_buffer_mb: Option<Spanned<WholeNumber>>,
}

/// `command`: an array of strings. A plain string is refused with a hint, because `command =
/// "cargo test"` is the mistake everyone makes once.
pub(super) struct RawCommand(pub(super) Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = RawCommand;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an array of strings, like ["cargo", "test"]"#)
            }

            fn visit_str<E: de::Error>(self, line: &str) -> Result<RawCommand, E> {
                let words: Vec<&str> = line.split_whitespace().collect();
                Err(E::custom(format!(
                    "command must be an array of strings, like {words:?}; \
                     to run it through a shell, use [\"sh\", \"-c\", {line:?}]"
                )))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element::<Spanned<String>>()? {
                    args.push(arg);
                }
                Ok(RawCommand(args))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// An integer field, read wide so that a value out of range gets a message naming the range
/// rather than serde's "expected u32".
pub(super) struct WholeNumber(pub(super) i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = WholeNumber;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number, without quotes")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(n))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(i64::try_from(n).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

/// `timeout`: a duration string or a whole number of seconds, checked after parsing.
pub(super) enum RawTimeout {
    Text(String),
    Seconds(i64),
}

impl<'de> Deserialize<'de> for RawTimeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeoutVisitor;
        impl Visitor<'_> for TimeoutVisitor {
            type Value = RawTimeout;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration like "300s" or "5m", or a whole number of seconds"#)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawTimeout, E> {
                Ok(RawTimeout::Text(text.to_string()))
            }

            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<RawTimeout, E> {
                Ok(RawTimeout::Seconds(seconds))
            }

            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<RawTimeout, E> {
                Ok(RawTimeout::Seconds(
                    i64::try_from(seconds).unwrap_or(i64::MAX),
                ))
            }
        }
        deserializer.deserialize_any(TimeoutVisitor)
    }
}
