//! Text that tenants choose (paths, process names, arguments, container and pod names, cgroup
//! paths) made safe to print on an operator's terminal.
//!
//! A workload can put any byte in an `execve` argument, a file name or its `comm`; printed raw,
//! an escape sequence would clear the screen, move the cursor over earlier lines, retitle the
//! window or forge table rows. Every human-readable output (the tables of `trace`, `top`,
//! `audit`, the screens of `inspect` and `advise`) passes such text through [`escape`] (or
//! [`Escaped`] in a format string): control characters come out as visible escapes and nothing
//! else changes. JSON output needs none of this: its encoder escapes control characters itself.

use std::{borrow::Cow, fmt};

/// Whether `c` must not reach a terminal as it is: the C0 controls (ESC, CR, LF, TAB, BEL, ...),
/// DEL, the C1 controls (U+0080 to U+009F, which some terminals take as 8-bit CSI, OSC, ...),
/// and the characters that reorder or break what follows them on screen (bidirectional
/// overrides and isolates, line and paragraph separators).
fn unsafe_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each unsafe character written as an escape: `\t`, `\n`, `\r` by name, the other
/// controls below U+0100 as `\xNN` (ESC is `\x1b`, CSI `\x9b`), the rest as `\u{NNNN}`. Text
/// without any is returned as it is, without a copy.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use fmt::Write as _;
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if !unsafe_on_terminal(c) => out.push(c),
        c if u32::from(c) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        }
    }
}

/// [`escape`] for format strings: `format!("{}", Escaped(name))` writes the escaped text and
/// honours width and alignment (`{:<24}`) on the escaped form, which is what the screen shows.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn escapes_c0_del_c1_and_reordering_characters() {
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("line\r\nnext\ttab\x07\x7f"), "line\\r\\nnext\\ttab\\x07\\x7f");
        assert_eq!(escape("csi\u{9b}31m osc\u{9d}"), "csi\\x9b31m osc\\x9d");
        assert_eq!(escape("evil\u{202e}txt.exe\u{2028}"), "evil\\u{202e}txt.exe\\u{2028}");
        assert_eq!(escape("\0"), "\\x00");
    }

    #[test]
    fn leaves_ordinary_text_alone_without_copying() {
        for text in ["/usr/bin/env true", "café ü 日本", "back\\slash", "", "-"] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn pads_the_escaped_form() {
        assert_eq!(format!("[{:<8}]", Escaped("a\rb")), "[a\\rb    ]");
        assert_eq!(format!("[{:>6}]", Escaped("ok")), "[    ok]");
    }

    proptest! {
        #[test]
        fn no_control_character_survives(text in "\\PC*|[\u{0}-\u{1f}\u{7f}-\u{9f}a-z\u{202a}-\u{202e}]{0,24}") {
            let escaped = escape(&text);
            prop_assert!(!escaped.chars().any(unsafe_on_terminal), "{escaped:?}");
            // Nothing but the unsafe characters changed.
            let kept: String = text.chars().filter(|c| !unsafe_on_terminal(*c)).collect();
            let mut rest = escaped.as_ref();
            for c in kept.chars() {
                let at = rest.find(c);
                prop_assert!(at.is_some(), "{c:?} lost from {text:?}: {escaped:?}");
                rest = &rest[at.unwrap_or(0) + c.len_utf8()..];
            }
        }
    }
}
