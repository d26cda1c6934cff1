//! Names the kernel gives to the numbers of a tracepoint field, read from the `print fmt` line
//! of its tracefs `format` file: `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`.
//! Reading them from the running kernel keeps them right on every version (the numbering of
//! `enum skb_drop_reason` changes between releases).

use std::{collections::BTreeMap, path::Path};

/// Number → name, for one field.
pub type Symbols = BTreeMap<u64, String>;

/// Reads the symbols of `field` from a `format` file; an error says which file and why. A
/// tracepoint that does not print the field (an older kernel's) has none, and that is no error.
pub fn read(format: &Path, field: &str) -> Result<Symbols, String> {
    let text =
        std::fs::read_to_string(format).map_err(|err| format!("cannot read {}: {err}", format.display()))?;
    let symbols = parse(&text, field);
    if symbols.is_empty() && text.contains(&format!("REC->{field}")) {
        return Err(format!("{} has no __print_symbolic(REC->{field}, ...)", format.display()));
    }
    Ok(symbols)
}

/// Parses every `{ number, "NAME" }` pair of `__print_symbolic(REC->field, ...)` in `text`.
/// Anything malformed ends the list where it is; numbers may be decimal or 0x-hexadecimal.
pub fn parse(text: &str, field: &str) -> Symbols {
    let mut symbols = Symbols::new();
    let marker = format!("__print_symbolic(REC->{field},");
    let Some(start) = text.find(&marker) else {
        return symbols;
    };
    let mut rest = &text[start + marker.len()..];
    loop {
        rest = rest.trim_start();
        let Some(after_brace) = rest.strip_prefix('{') else {
            break;
        };
        let Some((number, after_number)) = after_brace.split_once(',') else {
            break;
        };
        let Some(value) = parse_number(number.trim()) else {
            break;
        };
        let Some(after_quote) = after_number.trim_start().strip_prefix('"') else {
            break;
        };
        let Some((name, after_name)) = after_quote.split_once('"') else {
            break;
        };
        let Some(after_pair) = after_name.trim_start().strip_prefix('}') else {
            break;
        };
        symbols.insert(value, name.to_owned());
        rest = after_pair.trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next,
            None => break,
        }
    }
    symbols
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KFREE_SKB: &str = r#"name: kfree_skb
format:
	field:enum skb_drop_reason reason;	offset:36;	size:4;	signed:0;

print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" }, { 0x80, "MAX" })
"#;

    #[test]
    fn parses_the_drop_reasons() {
        let symbols = parse(KFREE_SKB, "reason");
        assert_eq!(symbols.len(), 4);
        assert_eq!(symbols[&2], "NOT_SPECIFIED");
        assert_eq!(symbols[&3], "NO_SOCKET");
        assert_eq!(symbols[&12], "NETFILTER_DROP");
        assert_eq!(symbols[&128], "MAX");
        assert!(parse(KFREE_SKB, "protocol").is_empty());
    }

    #[test]
    fn a_field_the_tracepoint_does_not_print_has_no_symbols_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let format = dir.path().join("format");
        // 5.10's kfree_skb: no reason field.
        std::fs::write(
            &format,
            "print fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n",
        )
        .unwrap();
        assert_eq!(read(&format, "reason"), Ok(Symbols::new()));
        std::fs::write(&format, "print fmt: \"reason: %u\", REC->reason\n").unwrap();
        assert!(read(&format, "reason").unwrap_err().contains("no __print_symbolic(REC->reason"));
    }

    #[test]
    fn malformed_lists_end_where_they_break() {
        let text = r#"__print_symbolic(REC->reason, { 2, "A" }, { x, "B" }, { 4, "C" })"#;
        assert_eq!(parse(text, "reason").into_iter().collect::<Vec<_>>(), [(2, "A".to_owned())]);
        assert!(parse(r#"__print_symbolic(REC->reason, { 2, "unterminated })"#, "reason").is_empty());
        assert!(parse("__print_symbolic(REC->reason,", "reason").is_empty());
    }

    #[test]
    fn reads_the_running_kernel() {
        let format = Path::new("/sys/kernel/tracing/events/skb/kfree_skb/format");
        if !format.exists() {
            eprintln!("SKIPPED: {} is not there (tracefs not mounted)", format.display());
            return;
        }
        let symbols = read(format, "reason").unwrap();
        assert!(symbols.values().any(|name| name == "NO_SOCKET"), "{symbols:?}");
        assert!(
            read(Path::new("/nonexistent/format"), "reason").unwrap_err().contains("/nonexistent/format")
        );
    }

    proptest! {
        #[test]
        fn no_input_panics(text in ".{0,400}") {
            let _ = parse(&text, "reason");
        }

        #[test]
        fn no_list_tail_panics(tail in r#"[{}0-9x, "A-Z_]{0,200}"#) {
            let _ = parse(&format!("__print_symbolic(REC->reason,{tail}"), "reason");
        }

        #[test]
        fn well_formed_pairs_round_trip(pairs in proptest::collection::btree_map(0u64..1_000_000, "[A-Z_]{1,20}", 0..40)) {
            let list: Vec<String> = pairs.iter().map(|(n, name)| format!("{{ {n}, \"{name}\" }}")).collect();
            let text = format!("print fmt: \"%s\", __print_symbolic(REC->reason, {})", list.join(", "));
            prop_assert_eq!(parse(&text, "reason"), pairs);
        }
    }
}
