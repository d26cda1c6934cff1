use proptest::prelude::*;

use super::*;
use crate::kernel::value::{Event, Kind, Value};

fn event() -> Event {
    let mut event = Event::default();
    for (name, value) in [
        ("ret", Value::Int(-2)),
        ("errno", Value::Str("ENOENT".into())),
        ("comm", Value::Str("nginx-worker".into())),
        ("pid", Value::UInt(4242)),
        ("addr", Value::Pointer(0xffff_0000)),
        ("zero", Value::UInt(0)),
        ("empty", Value::empty()),
    ] {
        event.push(&name.into(), value);
    }
    event
}

#[test]
fn valid_expressions_evaluate_as_written() {
    let table: &[(&str, bool)] = &[
        ("ret < 0", true),
        ("ret<0", true),
        ("ret >= 0", false),
        ("ret == -2", true),
        ("ret != -2", false),
        ("pid == 4242 && ret < 0", true),
        ("pid == 1 || ret < 0", true),
        ("pid == 1 || ret > 0", false),
        ("!(pid == 1)", true),
        ("! pid == 4242", false),
        ("!!(pid == 4242)", true),
        ("pid == 0x1092", true),
        ("pid > 4241 && pid <= 4242", true),
        ("comm == \"nginx-worker\"", true),
        ("comm == \"nginx\"", false),
        ("comm == \"nginx*\"", true),
        ("comm != \"nginx*\"", false),
        ("comm == \"*work?r\"", true),
        ("comm == \"[mn]ginx-*\"", true),
        ("comm == \"[!n]ginx-*\"", false),
        ("comm < \"z\"", true),
        ("errno == \"ENOENT\" && (comm == \"x\" || ret == -2)", true),
        ("pid == 1 || pid == 2 && ret < 0", false), // && binds tighter than ||
        ("(pid == 1 || pid == 4242) && ret < 0", true),
        ("pid", true),
        ("zero", false),
        ("empty", false),
        ("!empty && comm", true),
        ("addr == 0xffff0000", true),
        ("missing == 1", false),
        ("comm == \"a\\\"b\"", false),
        ("  ( ( ret < 0 ) )  ", true),
    ];
    let event = event();
    for (input, expected) in table {
        let expr = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(expr.matches(&event), *expected, "{input}");
    }
}

#[test]
fn syntax_errors_point_at_the_column() {
    // (input, 1-based column of the caret, part of the message)
    let table: &[(&str, usize, &str)] = &[
        ("", 1, "expected a field"),
        ("ret <", 6, "a number or a \"string\""),
        ("ret < ", 7, "a number or a \"string\""),
        ("ret < x", 7, "a number or a \"string\""),
        ("ret << 0", 6, "a number or a \"string\""),
        ("ret < 0 &&", 11, "expected a field"),
        ("ret < 0 && ", 12, "expected a field"),
        ("ret < 0 &", 9, "expected an operator"),
        ("ret < 0 || || pid", 12, "expected a field"),
        ("(ret < 0", 9, "`)`"),
        ("(ret < 0))", 10, "expected an operator"),
        ("ret < 0)", 8, "expected an operator"),
        ("comm == \"abc", 13, "closing `\"`"),
        ("comm == \"a\\qb\"", 12, "escape"),
        ("1 == ret", 1, "expected a field"),
        ("ret = 0", 5, "expected an operator"),
        ("pid == 0x", 10, "hex digits"),
        ("!", 2, "expected a field"),
        ("ret < 0 pid", 9, "expected an operator"),
        ("é == 1", 1, "expected a field"),
        ("ret < 0 && é", 12, "expected a field"),
    ];
    for (input, column, message) in table {
        let err = parse(input).expect_err(input);
        assert_eq!(err.column, *column, "{input}: {err}");
        assert!(err.message.contains(message), "{input}: {err}");
        let shown = err.to_string();
        let caret_line = shown.lines().last().unwrap_or_default();
        assert_eq!(caret_line.chars().count(), 2 + column, "{input}: caret under the column:\n{shown}");
    }
}

#[test]
fn checks_fields_and_types_before_any_event() {
    let fields = [("ret", Kind::Number), ("comm", Kind::Text), ("filename", Kind::Text)];
    let check_str = |input: &str| parse(input).and_then(|e| check(input, &e, &fields).map(|()| e));
    assert!(check_str("ret < 0 && comm == \"x\"").is_ok());
    let err = check_str("ret < 0 && coom == \"x\"").unwrap_err();
    assert_eq!(err.column, 12);
    assert!(err.message.contains("unknown field `coom` (did you mean comm?)"), "{err}");
    let err = check_str("comm < 3").unwrap_err();
    assert_eq!((err.column, err.message.contains("is text")), (1, true), "{err}");
    let err = check_str("(ret == \"x\")").unwrap_err();
    assert_eq!((err.column, err.message.contains("is a number")), (2, true), "{err}");
    let err = check_str("filname").unwrap_err();
    assert!(err.message.contains("did you mean filename"), "{err}");
}

#[test]
fn globs() {
    for (pattern, text, expected) in [
        ("*", "", true),
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("a*c*e", "abcde", true),
        ("a*c*e", "abcdf", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("[a-c]x", "bx", true),
        ("[a-c]x", "dx", false),
        ("[", "[", true),
        ("a[", "a[", true),
        ("**a", "bba", true),
    ] {
        assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), expected, "{pattern} ~ {text}");
    }
}

proptest! {
    #[test]
    fn no_input_panics_the_parser(input in "\\PC{0,40}") {
        if let Err(err) = parse(&input) {
            prop_assert!(err.column >= 1 && err.column <= input.chars().count() + 1);
        }
    }

    #[test]
    fn no_operator_soup_panics_the_parser(input in "[a-z0-9_ ()!&|<>=\"*?\\[\\]\\\\-]{0,40}") {
        match parse(&input) {
            Ok(expr) => { let _ = expr.matches(&event()); }
            Err(err) => prop_assert!(err.column >= 1 && err.column <= input.chars().count() + 1),
        }
    }

    #[test]
    fn no_glob_panics(pattern in "[a*?\\[\\]!^-]{0,12}", text in "[a\\[\\]-]{0,12}") {
        let _ = glob(pattern.as_bytes(), text.as_bytes());
    }
}
