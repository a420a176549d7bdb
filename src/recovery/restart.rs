//! The restart command: a template from the configuration, filled in with a failed worker's
//! name and host and run by the leader with `sh -c`.
//!
//! # Substitution is shell-quoted
//!
//! `{worker}`, `{host}` and `{address}` come from the worker's `Hello`, which nothing
//! authenticates: a host is free text. So every value is substituted as one single-quoted shell
//! word (`'` inside it written `'\''`), and the shell sees it as exactly one argument whatever
//! it holds — `$(...)`, backticks, `;`, quotes, newlines are all literal text. For that to hold
//! the placeholder must stand where the shell reads a plain word, so [`render`] refuses a
//! template that puts one inside `'...'` or `"..."` (quote the value yourself and it would end
//! the template's quote), right after `$` (`${host}` in bash), or in a here-document (whose
//! text expands `$(...)` in spite of the quotes); [`check_template`] runs the same checks when
//! the configuration is read. A value that begins with `-` is refused when the command is run:
//! a program such as `ssh` would take it for an option (`-oProxyCommand=...`).
//!
//! What a command does with its arguments is up to it: one that hands them to another shell
//! (the remote command of `ssh host cmd ...` is one string for the remote shell) must quote them
//! again. Worker names are limited to letters, digits, `.`, `_` and `-`, so `{worker}` needs
//! nothing more; `{host}` does.
//!
//! This file is pure text work; the leader's recovery loop runs the result
//! (`coordinator::recovery_loop::restart`).

/// The placeholders a template may hold.
pub const PLACEHOLDERS: [&str; 3] = ["worker", "host", "address"];

/// Why a template, or a value for it, was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder inside a quoted part of the template.
    #[error(
        "{{{placeholder}}} is inside {quote} quotes; write it bare (`ssh {{host}} ...`): its value \
         is quoted for the shell already"
    )]
    Quoted {
        placeholder: &'static str,
        quote: &'static str,
    },
    /// A placeholder right after `$`.
    #[error(
        "${{{placeholder}}} reads like a shell variable; write {{{placeholder}}} without the `$`"
    )]
    Dollar { placeholder: &'static str },
    /// A here-document in a template with placeholders.
    #[error("here-documents (`<<`) cannot hold placeholders safely; pass values as arguments")]
    HereDocument,
    /// A quote that never closes.
    #[error("the template has an unterminated {quote} quote")]
    Unterminated { quote: &'static str },
    /// A value that a command would read as an option.
    #[error(
        "the worker's {placeholder} {value:?} begins with '-', which a command would take for an \
         option; not run"
    )]
    OptionLike {
        placeholder: &'static str,
        value: String,
    },
}

/// Quotes `value` as one POSIX shell word: `'...'`, each `'` written `'\''`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Refuses a template whose placeholders could not be substituted safely (see the module docs).
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    render(template, |_| "value".to_string()).map(drop)
}

/// Fills in `template`: each placeholder outside quotes becomes its value, shell-quoted.
/// `value` gives the value of a placeholder name (one of [`PLACEHOLDERS`]).
pub fn render(
    template: &str,
    value: impl Fn(&'static str) -> String,
) -> Result<String, TemplateError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
    }
    let mut out = String::with_capacity(template.len());
    let mut state = State::Plain;
    let mut rest = template;
    let mut has_placeholder = false;
    let mut has_heredoc = false;
    while let Some(c) = rest.chars().next() {
        if c == '{'
            && let Some(name) = PLACEHOLDERS
                .into_iter()
                .find(|name| rest[1..].starts_with(name) && rest[1 + name.len()..].starts_with('}'))
        {
            has_placeholder = true;
            match state {
                State::Single => {
                    return Err(TemplateError::Quoted {
                        placeholder: name,
                        quote: "single",
                    });
                }
                State::Double => {
                    return Err(TemplateError::Quoted {
                        placeholder: name,
                        quote: "double",
                    });
                }
                State::Plain => {}
            }
            if out.ends_with('$') {
                return Err(TemplateError::Dollar { placeholder: name });
            }
            let v = value(name);
            if v.starts_with('-') {
                return Err(TemplateError::OptionLike {
                    placeholder: name,
                    value: v,
                });
            }
            out.push_str(&quote(&v));
            rest = &rest[name.len() + 2..];
            continue;
        }
        let mut taken = c.len_utf8();
        match (state, c) {
            // A backslash outside single quotes takes the next character literally.
            (State::Plain | State::Double, '\\') => {
                taken += rest[1..].chars().next().map_or(0, char::len_utf8);
            }
            (State::Plain, '\'') => state = State::Single,
            (State::Plain, '"') => state = State::Double,
            (State::Single, '\'') | (State::Double, '"') => state = State::Plain,
            (State::Plain, '<') if rest[1..].starts_with('<') => has_heredoc = true,
            _ => {}
        }
        out.push_str(&rest[..taken]);
        rest = &rest[taken..];
    }
    match state {
        State::Single => Err(TemplateError::Unterminated { quote: "single" }),
        State::Double => Err(TemplateError::Unterminated { quote: "double" }),
        State::Plain if has_heredoc && has_placeholder => Err(TemplateError::HereDocument),
        State::Plain => Ok(out),
    }
}

#[cfg(test)]
mod tests;
