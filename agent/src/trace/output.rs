//! Event output: an aligned table (with colour only on a terminal) or one JSON object per line.
//! Every cell of a table is escaped for the terminal (`terminal::escape`) here, where it is laid
//! out: callers pass the text as it came, and widths are those of what the screen shows.

use std::fmt::Write as _;

use crate::{
    kernel::value::{Event, Name, Value},
    terminal,
};

/// Columns left-aligned under their header, two spaces apart; numbers right-aligned. Cells are
/// escaped for the terminal.
pub fn align(header: &[String], rows: &[Vec<String>]) -> String {
    let escape_row = |row: &[String]| -> Vec<String> { row.iter().map(|c| escaped(c.clone())).collect() };
    let header = escape_row(header);
    let rows: Vec<Vec<String>> = rows.iter().map(|r| escape_row(r)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    // A column of numbers (and `-` for none) is right-aligned.
    let number = |c: &String| c.parse::<f64>().is_ok();
    let numeric: Vec<bool> = (0..widths.len())
        .map(|i| {
            let cells: Vec<&String> = rows.iter().filter_map(|r| r.get(i)).filter(|c| *c != "-").collect();
            !cells.is_empty() && cells.into_iter().all(number)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(header.as_slice()).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                line.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Widest a column grows to: a wider value is printed whole, but does not widen the lines after
/// it. Values are the workloads' (a pod's name may be 253 characters, a cgroup path 512): one
/// of them must not pad every later line of a trace.
const MAX_COLUMN_WIDTH: usize = 48;

/// Prints events as they come: the columns are fixed when the trace starts; each column is as
/// wide as its widest value so far, up to `MAX_COLUMN_WIDTH` (a wider value widens the
/// following lines).
pub struct TablePrinter {
    columns: Vec<String>,
    widths: Vec<usize>,
    colour: bool,
    header_printed: bool,
}

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

impl TablePrinter {
    /// `columns`: field names (the last one is never padded: it holds free text).
    pub fn new(columns: Vec<String>, colour: bool) -> Self {
        let widths = columns.iter().map(|c| c.len().max(initial_width(c))).collect();
        Self { columns, widths, colour, header_printed: false }
    }

    pub fn header(&mut self) -> String {
        self.header_printed = true;
        let cells: Vec<String> = self.columns.iter().map(|c| escaped(c.to_uppercase())).collect();
        let line = self.line(&cells);
        if self.colour { format!("{BOLD}{line}{RESET}\n") } else { format!("{line}\n") }
    }

    pub fn event(&mut self, event: &Event) -> String {
        let mut out = if self.header_printed { String::new() } else { self.header() };
        let cells: Vec<String> = self.columns.iter().map(|c| cell(c, event)).collect();
        for (i, cell) in cells.iter().enumerate() {
            if let Some(w) = self.widths.get_mut(i) {
                *w = (*w).max(cell.chars().count().min(MAX_COLUMN_WIDTH));
            }
        }
        let line = self.line(&cells);
        let failed = matches!(event.get("ret"), Some(Value::Int(r)) if *r < 0);
        if self.colour && failed {
            let _ = writeln!(out, "{RED}{line}{RESET}");
        } else {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    fn line(&self, cells: &[String]) -> String {
        let mut line = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            if i == last {
                line.push_str(cell);
            } else {
                let width = self.widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<width$}");
            }
        }
        line.trim_end().to_owned()
    }
}

fn initial_width(column: &str) -> usize {
    match column {
        "time" => 15,
        "pid" | "tid" | "ppid" => 7,
        "comm" => 15,
        "container" | "pod" => 12,
        "filename" => 24,
        "syscall" | "errno" => 10,
        "latency_ns" => 10,
        _ => 0,
    }
}

/// A column's text, escaped for the terminal: `time` as a wall clock, a missing value as `-`.
fn cell(column: &str, event: &Event) -> String {
    let text = match (column, event.get(column)) {
        ("time", _) => match event.get("time") {
            Some(Value::Str(s)) => s.to_string(),
            _ => "-".into(),
        },
        (_, Some(Value::Str(s))) if s.is_empty() => "-".into(),
        (_, Some(value)) => value.to_string(),
        (_, None) => "-".into(),
    };
    escaped(text)
}

/// `text` escaped for the terminal, copied only when it had something to escape.
fn escaped(text: String) -> String {
    match terminal::escape(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// Events as JSON objects, one a line: the fields in the event's order (a `serde_json::Map`
/// would sort them), written directly, no intermediate JSON values per event. The events of a
/// trace share their field names (`Name`), so each key (`"name":`) is encoded once per place
/// in the event and found again by pointer: encoding every key of every event was a seventh of
/// the tracer's time (docs/performance.md, "The tracer: one wakeup per wait, and a JSON line
/// for less").
#[derive(Default)]
pub struct JsonLines {
    /// Per place in an event: the name last seen there, and its key.
    keys: Vec<(Name, String)>,
}

impl JsonLines {
    /// One JSON object and a newline, appended to `line`.
    pub fn push(&mut self, line: &mut String, event: &Event) {
        line.push('{');
        for (place, (name, value)) in event.fields.iter().enumerate() {
            if place > 0 {
                line.push(',');
            }
            line.push_str(self.key(place, name));
            json_value(line, value);
        }
        line.push_str("}\n");
    }

    /// The key of `name` at `place`. Places are visited in order, so `place` is at most the
    /// number of places known: the cache is as long as the longest event.
    fn key(&mut self, place: usize, name: &Name) -> &str {
        let known = self.keys.get(place).is_some_and(|(seen, _)| Name::ptr_eq(seen, name));
        if !known {
            let mut key = String::with_capacity(name.len() + 3);
            json_string(&mut key, name);
            key.push(':');
            self.keys.truncate(place);
            self.keys.push((Name::clone(name), key));
        }
        &self.keys[place].1
    }
}

fn json_value(out: &mut String, value: &Value) {
    match value {
        Value::Int(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Value::UInt(v) => out.push_str(itoa::Buffer::new().format(*v)),
        Value::Pointer(v) => {
            let _ = write!(out, "\"{v:#x}\"");
        }
        Value::Str(s) => json_string(out, s),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(out, item);
            }
            out.push(']');
        }
    }
}

/// Whether a byte stands as itself in a JSON string (RFC 8259): not a quote, a backslash or a
/// control character.
const PLAIN: [bool; 256] = {
    let mut table = [true; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = false;
        byte += 1;
    }
    table[b'"' as usize] = false;
    table[b'\\' as usize] = false;
    table
};

/// Whether one of the 8 bytes of `word` must be escaped in JSON: below 0x20, a quote or a
/// backslash. A byte below `n` sets its high bit in `(word - n * ONES) & !word`, a byte equal
/// to `c` is a zero byte of `word ^ c * ONES`: exact for the word as a whole.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |word: u64, n: u64| word.wrapping_sub(n * ONES) & !word;
    let quote = word ^ (u64::from(b'"') * ONES);
    let backslash = word ^ (u64::from(b'\\') * ONES);
    (below(word, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGHS != 0
}

/// A JSON string literal. Runs without escapes are found 8 bytes at a time and copied whole:
/// at a million events a second, a `match` per byte was a fifth of the tracer's time, and a
/// table lookup per byte still showed in its profile (docs/performance.md, "The tracer: one
/// wakeup per wait, and a JSON line for less").
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    let bytes = text.as_bytes();
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(word) = bytes[at..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*word))
        {
            at += 8;
            continue;
        }
        let byte = bytes[at];
        if PLAIN[usize::from(byte)] {
            at += 1;
            continue;
        }
        // An ASCII byte: both ends of the run before it are character boundaries.
        out.push_str(&text[copied..at]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        at += 1;
        copied = at;
    }
    out.push_str(&text[copied..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json_line(event: &Event) -> String {
        let mut line = String::new();
        JsonLines::default().push(&mut line, event);
        line
    }

    proptest! {
        #[test]
        fn any_text_makes_one_valid_json_line(text in "\\PC*|[\"\\\\\n\t\u{0}-\u{1f}a-z]{0,20}") {
            let mut event = Event::default();
            event.push(&"s".into(), Value::text(&text));
            let line = json_line(&event);
            prop_assert_eq!(line.matches('\n').count(), 1);
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(parsed, serde_json::json!({ "s": text }));
        }
    }

    #[test]
    fn a_word_needs_escape_exactly_when_one_of_its_bytes_does() {
        // Every byte at every place, among plain bytes (ASCII and UTF-8's high ones), whose
        // borrows in the word's arithmetic must not hide it or fake one.
        for fill in [b'a', 0x20, 0x80, 0xff, b'#', b']'] {
            for byte in 0..=u8::MAX {
                for place in 0..8 {
                    let mut bytes = [fill; 8];
                    bytes[place] = byte;
                    let word = u64::from_le_bytes(bytes);
                    assert_eq!(needs_escape(word), !PLAIN[usize::from(byte)], "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn aligns_columns_and_numbers() {
        let header = vec!["SYSCALL".to_owned(), "COUNT".to_owned()];
        let rows =
            vec![vec!["getppid".to_owned(), "1000".to_owned()], vec!["write".to_owned(), "7".to_owned()]];
        assert_eq!(align(&header, &rows), "SYSCALL  COUNT\ngetppid   1000\nwrite        7\n");
    }

    #[test]
    fn tables_escape_what_workloads_chose() {
        let hostile = "x\x1b[2J\r\u{9b}31m";
        let mut printer = TablePrinter::new(vec!["comm".into(), "args".into()], true);
        let mut event = Event::default();
        event.push(&"comm".into(), Value::Str(hostile.into()));
        event.push(&"args".into(), Value::text(&format!("a {hostile}\nforged row")));
        let out = printer.event(&event);
        // The printer's own colour codes stay (the header is bold); nothing of the workload's.
        assert_eq!(out.matches('\x1b').count(), 2, "{out:?}");
        assert!(!out.contains('\r') && !out.contains('\u{9b}') && out.lines().count() == 2, "{out:?}");
        assert!(out.contains("x\\x1b[2J\\r\\x9b31m"), "{out:?}");
        let table = align(&["COMM".into()], &[vec![hostile.into()]]);
        assert_eq!(table, "COMM\nx\\x1b[2J\\r\\x9b31m\n");
        // JSON keeps the exact text (its encoder escapes it).
        let parsed: serde_json::Value = serde_json::from_str(&json_line(&event)).unwrap();
        assert_eq!(parsed["comm"], hostile);
    }

    #[test]
    fn a_long_value_is_printed_whole_without_widening_later_lines() {
        let mut printer = TablePrinter::new(vec!["pod".into(), "comm".into(), "args".into()], false);
        let row = |pod: &str| {
            let mut event = Event::default();
            event.push(&"pod".into(), Value::text(pod));
            event.push(&"comm".into(), Value::text("sh"));
            event.push(&"args".into(), Value::text("x"));
            event
        };
        // Up to the bound, a column widens to fit its widest value.
        printer.event(&row(&"q".repeat(30)));
        assert_eq!(printer.event(&row("web-0")), format!("{:<30} sh              x\n", "web-0"));
        let long = "p".repeat(253);
        let first = printer.event(&row(&long));
        assert_eq!(first, format!("{long} sh              x\n"));
        let second = printer.event(&row("web-0"));
        assert_eq!(second, format!("{:<MAX_COLUMN_WIDTH$} sh              x\n", "web-0"));
    }

    #[test]
    fn prints_events_under_a_header_without_colour_off_a_terminal() {
        let mut printer = TablePrinter::new(vec!["pid".into(), "comm".into(), "args".into()], false);
        let mut event = Event::default();
        event.push(&"pid".into(), Value::UInt(42));
        event.push(&"comm".into(), Value::Str("sh".into()));
        event.push(&"args".into(), Value::Str("echo hi".into()));
        event.push(&"ret".into(), Value::Int(-2));
        let out = printer.event(&event);
        assert_eq!(out, "PID     COMM            ARGS\n42      sh              echo hi\n");
        assert!(!out.contains('\x1b'));
        let mut coloured = TablePrinter::new(vec!["pid".into()], true);
        assert!(coloured.event(&event).contains(RED));
        assert_eq!(json_line(&event), "{\"pid\":42,\"comm\":\"sh\",\"args\":\"echo hi\",\"ret\":-2}\n");
        // Whatever the text, each line is one valid JSON object with the same values.
        let mut odd = Event::default();
        odd.push(&"path".into(), Value::Str("a\"b\\c\nd\u{1}é".into()));
        odd.push(&"addr".into(), Value::Pointer(255));
        odd.push(&"list".into(), Value::List(vec![Value::Int(-1), Value::UInt(2)]));
        let parsed: serde_json::Value = serde_json::from_str(&json_line(&odd)).unwrap();
        assert_eq!(parsed, serde_json::json!({"path": "a\"b\\c\nd\u{1}é", "addr": "0xff", "list": [-1, 2]}));
    }
}
