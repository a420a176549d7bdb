//! Restart templates: quoting and refused templates (hostile values through a real `sh` are
//! tested where the command is run, `coordinator::recovery_loop::restart`).

use super::*;

#[test]
fn quote_makes_one_single_quoted_word() {
    assert_eq!(quote("w1"), "'w1'");
    assert_eq!(quote(""), "''");
    assert_eq!(quote("it's"), "'it'\\''s'");
    assert_eq!(quote("'"), "''\\'''");
}

#[test]
fn bare_placeholders_are_replaced_by_quoted_values() {
    let rendered = render(
        "ssh {host} systemctl restart testfleet-worker@{worker} # {address} {other}",
        |name| match name {
            "worker" => "w1".to_string(),
            "host" => "box 1".to_string(),
            _ => String::new(),
        },
    )
    .unwrap();
    assert_eq!(
        rendered,
        "ssh 'box 1' systemctl restart testfleet-worker@'w1' # '' {other}"
    );
    // An escaped brace is not a placeholder, and a quoted `'{'` is text.
    assert_eq!(
        render(r"echo \{host} '{'", |_| "h".to_string()).unwrap(),
        r"echo \{host} '{'"
    );
}

#[test]
fn templates_that_would_misread_a_value_are_refused() {
    let cases: &[(&str, TemplateError)] = &[
        (
            "ssh '{host}' true",
            TemplateError::Quoted {
                placeholder: "host",
                quote: "single",
            },
        ),
        (
            "echo \"worker {worker}\"",
            TemplateError::Quoted {
                placeholder: "worker",
                quote: "double",
            },
        ),
        (
            "echo \"a\\\"{host}\"",
            TemplateError::Quoted {
                placeholder: "host",
                quote: "double",
            },
        ),
        (
            "echo ${host}",
            TemplateError::Dollar {
                placeholder: "host",
            },
        ),
        ("cat <<EOF\n{host}\nEOF", TemplateError::HereDocument),
        (
            "echo 'open {worker}",
            TemplateError::Quoted {
                placeholder: "worker",
                quote: "single",
            },
        ),
        (
            "echo {worker} 'open",
            TemplateError::Unterminated { quote: "single" },
        ),
    ];
    for (template, expected) in cases {
        assert_eq!(
            check_template(template).as_ref(),
            Err(expected),
            "{template:?}"
        );
    }
    // The demo's template (a detached local worker) is fine.
    check_template(
        "setsid testfleet worker --name {worker} < /dev/null >> /tmp/d/{worker}.log 2>&1 & \
         echo $! > /tmp/d/{worker}.pid",
    )
    .unwrap();
}

#[test]
fn a_value_that_reads_as_an_option_is_refused() {
    let err = render("ssh {host} true", |_| "-oProxyCommand=touch x".to_string()).unwrap_err();
    assert_eq!(
        err,
        TemplateError::OptionLike {
            placeholder: "host",
            value: "-oProxyCommand=touch x".to_string(),
        }
    );
    assert!(err.to_string().contains("begins with '-'"), "{err}");
}
