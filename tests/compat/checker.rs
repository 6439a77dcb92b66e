//! doctest's comparison of an example's output with the wanted one (CPython 3.11's
//! `doctest.OutputChecker.check_output` and the exception rules of `DocTestRunner`), so the
//! guest's own doctest module plays no part in judging it. Pure functions over strings.

/// The option flags an example may carry, by their doctest names.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags {
    dont_accept_true_for_1: bool,
    dont_accept_blankline: bool,
    normalize_whitespace: bool,
    ellipsis: bool,
    ignore_exception_detail: bool,
}

impl Flags {
    /// Flags from doctest's names; an unknown name is an error in the recorded data.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut flags = Flags::default();
        for name in names {
            let flag = match name {
                "DONT_ACCEPT_TRUE_FOR_1" => &mut flags.dont_accept_true_for_1,
                "DONT_ACCEPT_BLANKLINE" => &mut flags.dont_accept_blankline,
                "NORMALIZE_WHITESPACE" => &mut flags.normalize_whitespace,
                "ELLIPSIS" => &mut flags.ellipsis,
                "IGNORE_EXCEPTION_DETAIL" => &mut flags.ignore_exception_detail,
                other => return Err(format!("unknown doctest flag {other}")),
            };
            *flag = true;
        }
        Ok(flags)
    }
}

/// What an example did: what it printed, and the last line of its exception, if it raised.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    pub out: String,
    pub exc: Option<String>,
}

/// doctest's verdict: when an exception is wanted only the exception line is compared (what
/// was printed before it is not), otherwise only what was printed.
pub fn example_passes(want: &Output, got: &Output, flags: Flags) -> bool {
    match (&want.exc, &got.exc) {
        (None, None) => check_output(&want.out, &got.out, flags),
        (Some(wanted), Some(raised)) => {
            check_output(wanted, raised, flags)
                || (flags.ignore_exception_detail
                    && check_output(
                        strip_exception_details(wanted),
                        strip_exception_details(raised),
                        flags,
                    ))
        }
        _ => false,
    }
}

/// `OutputChecker.check_output`.
fn check_output(want: &str, got: &str, flags: Flags) -> bool {
    if got == want {
        return true;
    }
    if !flags.dont_accept_true_for_1
        && matches!((got, want), ("True\n", "1\n") | ("False\n", "0\n"))
    {
        return true;
    }
    let (want, got) = if flags.dont_accept_blankline {
        (want.to_owned(), got.to_owned())
    } else {
        let want = map_lines(want, |line| {
            line.strip_prefix("<BLANKLINE>")
                .is_some_and(is_blank)
                .then_some("")
        });
        let got = map_lines(got, |line| {
            (!line.is_empty() && is_blank(line)).then_some("")
        });
        if got == want {
            return true;
        }
        (want, got)
    };
    if flags.normalize_whitespace {
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        if words(&got) == words(&want) {
            return true;
        }
    }
    flags.ellipsis && ellipsis_match(&want, &got)
}

/// Python's `str.isspace` for the rest of a line (which never holds a newline).
fn is_blank(text: &str) -> bool {
    text.chars().all(char::is_whitespace)
}

/// Replaces the lines for which `replace` answers `Some`, keeping the line breaks.
fn map_lines(text: &str, replace: impl Fn(&str) -> Option<&'static str>) -> String {
    text.split('\n')
        .map(|line| replace(line).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// doctest's `_ellipsis_match`: `...` in `want` matches any substring of `got`.
fn ellipsis_match(want: &str, got: &str) -> bool {
    let pieces: Vec<&str> = want.split("...").collect();
    let [first, middle @ .., last] = pieces.as_slice() else {
        return want == got;
    };
    // The suffix is taken from what the prefix left, so the two never overlap.
    let Some(mut rest) = got
        .strip_prefix(first)
        .and_then(|rest| rest.strip_suffix(last))
    else {
        return false;
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// doctest's `_strip_exception_details`: `pkg.mod.Error: detail` becomes `Error`.
fn strip_exception_details(message: &str) -> &str {
    let first_line = message.split('\n').next().unwrap_or_default();
    let name = first_line.split(':').next().unwrap_or_default();
    name.rsplit('.').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(names: &[&str]) -> Flags {
        Flags::from_names(names.iter().copied()).unwrap()
    }

    fn printed(out: &str) -> Output {
        Output {
            out: out.to_owned(),
            exc: None,
        }
    }

    fn raised(out: &str, exc: &str) -> Output {
        Output {
            out: out.to_owned(),
            exc: Some(exc.to_owned()),
        }
    }

    #[test]
    fn output_is_compared_exactly_without_flags() {
        assert!(example_passes(
            &printed("[1, 2]\n"),
            &printed("[1, 2]\n"),
            flags(&[])
        ));
        assert!(!example_passes(
            &printed("[1, 2]\n"),
            &printed("[1,2]\n"),
            flags(&[])
        ));
        assert!(!example_passes(
            &printed("{1, 2}\n"),
            &printed("{2, 1}\n"),
            flags(&[])
        ));
    }

    #[test]
    fn true_passes_for_1_unless_told_otherwise() {
        assert!(example_passes(
            &printed("1\n"),
            &printed("True\n"),
            flags(&[])
        ));
        let strict = flags(&["DONT_ACCEPT_TRUE_FOR_1"]);
        assert!(!example_passes(&printed("1\n"), &printed("True\n"), strict));
    }

    #[test]
    fn blankline_marks_an_empty_line() {
        let want = printed("a\n<BLANKLINE>\nb\n");
        assert!(example_passes(&want, &printed("a\n\nb\n"), flags(&[])));
        assert!(example_passes(&want, &printed("a\n   \nb\n"), flags(&[])));
        assert!(!example_passes(
            &want,
            &printed("a\n\nb\n"),
            flags(&["DONT_ACCEPT_BLANKLINE"])
        ));
    }

    #[test]
    fn normalize_whitespace_compares_words() {
        let want = printed("[1, 2,\n 3]\n");
        assert!(example_passes(
            &want,
            &printed("[1, 2, 3]\n"),
            flags(&["NORMALIZE_WHITESPACE"])
        ));
        assert!(!example_passes(&want, &printed("[1, 2, 3]\n"), flags(&[])));
    }

    #[test]
    fn ellipsis_matches_any_text_in_order() {
        let ellipsis = flags(&["ELLIPSIS"]);
        let want = printed("<Flag id=...>\n");
        assert!(example_passes(
            &want,
            &printed("<Flag id=140064808595472>\n"),
            ellipsis
        ));
        assert!(!example_passes(&want, &printed("<Flag id=1"), ellipsis));
        assert!(example_passes(
            &printed("a...b...c\n"),
            &printed("a1b2c\n"),
            ellipsis
        ));
        assert!(!example_passes(
            &printed("a...c...b\n"),
            &printed("a1b2c\n"),
            ellipsis
        ));
        // The prefix and the suffix may not overlap.
        assert!(!example_passes(
            &printed("aa...aa"),
            &printed("aaa"),
            ellipsis
        ));
    }

    #[test]
    fn an_exception_is_judged_by_its_line_alone() {
        let want = raised("", "ValueError: bad\n");
        assert!(example_passes(
            &want,
            &raised("printed first\n", "ValueError: bad\n"),
            flags(&[])
        ));
        assert!(!example_passes(
            &want,
            &raised("", "ValueError: worse\n"),
            flags(&[])
        ));
        assert!(!example_passes(
            &want,
            &printed("ValueError: bad\n"),
            flags(&[])
        ));
        assert!(!example_passes(
            &printed("1\n"),
            &raised("1\n", "ValueError: bad\n"),
            flags(&[])
        ));
    }

    #[test]
    fn ignore_exception_detail_compares_the_class_name() {
        let want = raised("", "decimal.InvalidOperation: [<class 'decimal.X'>]\n");
        let got = raised("", "InvalidOperation: quantize\n");
        assert!(example_passes(
            &want,
            &got,
            flags(&["IGNORE_EXCEPTION_DETAIL"])
        ));
        assert!(!example_passes(&want, &got, flags(&[])));
        let other = raised("", "ValueError: quantize\n");
        assert!(!example_passes(
            &want,
            &other,
            flags(&["IGNORE_EXCEPTION_DETAIL"])
        ));
    }
}
