//! Format files in testdata/ are copies of this kernel's (6.18) own.

use proptest::prelude::*;

use super::*;

const FORMATS: &[(&str, &str)] = &[
    ("cap_capable", include_str!("testdata/cap_capable.format")),
    ("dma_map_sg", include_str!("testdata/dma_map_sg.format")),
    ("inet_sock_set_state", include_str!("testdata/inet_sock_set_state.format")),
    ("kfree_skb", include_str!("testdata/kfree_skb.format")),
    ("mark_victim", include_str!("testdata/mark_victim.format")),
    ("sched_process_exec", include_str!("testdata/sched_process_exec.format")),
    ("sched_process_fork", include_str!("testdata/sched_process_fork.format")),
    ("signal_generate", include_str!("testdata/signal_generate.format")),
    ("sys_enter", include_str!("testdata/sys_enter.format")),
    ("sys_enter_openat", include_str!("testdata/sys_enter_openat.format")),
    ("sys_exit", include_str!("testdata/sys_exit.format")),
];

fn format(name: &str) -> Format {
    let text = FORMATS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or_default();
    Format::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn layout(format: &Format, field: &str) -> (Layout, usize, usize, bool) {
    let f = format.field(field).unwrap_or_else(|| panic!("no field {field}"));
    (f.layout, f.offset, f.size, f.signed)
}

#[test]
fn parses_every_kind_of_field_of_this_kernel() {
    for (name, text) in FORMATS {
        let parsed = Format::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.name, *name);
        assert!(parsed.id > 0);
        assert_eq!(parsed.fields.iter().filter(|f| f.common).count(), 4, "{name}");
    }
    let fork = format("sched_process_fork");
    assert_eq!(layout(&fork, "parent_comm"), (Layout::DynamicString { relative: false }, 8, 4, false));
    assert_eq!(layout(&fork, "parent_pid"), (Layout::Int, 12, 4, true));
    assert_eq!(layout(&fork, "child_pid"), (Layout::Int, 20, 4, true));
    assert_eq!(fork.fixed_size(), 24);
    assert!(fork.has_dynamic_fields());
    let common = format("sys_enter");
    assert_eq!(layout(&common, "common_type"), (Layout::Int, 0, 2, false));
    assert_eq!(layout(&common, "common_flags"), (Layout::Int, 2, 1, false));
    assert_eq!(layout(&common, "id"), (Layout::Int, 8, 8, true));
    assert_eq!(layout(&common, "args"), (Layout::Array { element: 8 }, 16, 48, false));
    assert!(!common.has_dynamic_fields());
    // The size, not the declared type, decides: `int dfd` takes 8 bytes in syscall records.
    let openat = format("sys_enter_openat");
    assert_eq!(layout(&openat, "dfd"), (Layout::Int, 16, 8, false));
    assert_eq!(layout(&openat, "filename"), (Layout::Pointer, 24, 8, false));
    let sock = format("inet_sock_set_state");
    assert_eq!(layout(&sock, "skaddr"), (Layout::Pointer, 8, 8, false));
    assert_eq!(layout(&sock, "sport"), (Layout::Int, 24, 2, false));
    assert_eq!(layout(&sock, "saddr"), (Layout::Array { element: 1 }, 32, 4, false));
    assert_eq!(layout(&sock, "daddr_v6"), (Layout::Array { element: 1 }, 56, 16, false));
    let states = &sock.field("newstate").map(|f| f.symbols.clone()).unwrap_or_default();
    assert_eq!(states.get(&1).map(String::as_str), Some("TCP_ESTABLISHED"));
    assert_eq!(states.get(&7).map(String::as_str), Some("TCP_CLOSE"));
    let families = &sock.field("family").map(|f| f.symbols.clone()).unwrap_or_default();
    assert_eq!(families.get(&10).map(String::as_str), Some("AF_INET6"));
    let skb = format("kfree_skb");
    let reasons = &skb.field("reason").map(|f| f.symbols.clone()).unwrap_or_default();
    assert_eq!(reasons.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
    assert_eq!(reasons.get(&3).map(String::as_str), Some("NO_SOCKET"));
    assert!(reasons.len() > 50, "{} reasons", reasons.len());
    assert_eq!(layout(&format("signal_generate"), "comm"), (Layout::Chars, 20, 16, false));
    let dma = format("dma_map_sg");
    assert_eq!(layout(&dma, "phys_addrs").0, Layout::DynamicArray { element: 8, relative: false });
    assert_eq!(layout(&dma, "lengths").0, Layout::DynamicArray { element: 4, relative: false });
    assert_eq!(layout(&dma, "truncated"), (Layout::Int, 20, 1, false));
    let oom = format("mark_victim");
    assert_eq!(layout(&oom, "oom_score_adj"), (Layout::Int, 64, 2, true));
}

/// A record of `format` with `fields` written at their offsets, and dynamic data appended.
fn record(format: &Format, size: usize, values: &[(&str, &[u8])], dynamic: &[(&str, &[u8])]) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    for (name, value) in values {
        let f = format.field(name).unwrap_or_else(|| panic!("{name}"));
        bytes[f.offset..f.offset + value.len()].copy_from_slice(value);
    }
    for (name, data) in dynamic {
        let f = format.field(name).unwrap_or_else(|| panic!("{name}"));
        let loc = (bytes.len() as u32) | ((data.len() as u32) << 16);
        bytes[f.offset..f.offset + 4].copy_from_slice(&loc.to_ne_bytes());
        bytes.extend_from_slice(data);
    }
    bytes
}

#[test]
fn decodes_fields_by_name() {
    let fork = format("sched_process_fork");
    let bytes = record(
        &fork,
        24,
        &[("parent_pid", &1234i32.to_ne_bytes()), ("child_pid", &5678i32.to_ne_bytes())],
        &[("parent_comm", b"bash\0"), ("child_comm", b"sleep\0")],
    );
    let decoded = fork.decode(&bytes).unwrap();
    let get = |name: &str| decoded.iter().find(|(n, _)| &**n == name).map(|(_, v)| v.clone());
    assert_eq!(get("parent_pid"), Some(Value::Int(1234)));
    assert_eq!(get("child_pid"), Some(Value::Int(5678)));
    assert_eq!(get("parent_comm"), Some(Value::Str("bash".into())));
    assert_eq!(get("child_comm"), Some(Value::Str("sleep".into())));
    assert_eq!(get("common_pid"), None, "the common header is not part of the event");

    let exit = format("sys_exit");
    let bytes = record(
        &exit,
        exit.fixed_size(),
        &[("id", &257i64.to_ne_bytes()), ("ret", &(-2i64).to_ne_bytes())],
        &[],
    );
    let decoded = exit.decode(&bytes).unwrap();
    assert_eq!(decoded, vec![("id".into(), Value::Int(257)), ("ret".into(), Value::Int(-2))]);

    let oom = format("mark_victim");
    let field = oom.field("oom_score_adj").unwrap();
    let bytes = record(&oom, oom.fixed_size(), &[("oom_score_adj", &(-999i16).to_ne_bytes())], &[]);
    assert_eq!(field.decode(&bytes), Ok(Value::Int(-999)), "sign-extended from 16 bits");

    let sock = format("inet_sock_set_state");
    let bytes = record(
        &sock,
        sock.fixed_size(),
        &[("newstate", &1i32.to_ne_bytes()), ("oldstate", &99i32.to_ne_bytes()), ("saddr", &[127, 0, 0, 1])],
        &[],
    );
    let decoded = sock.decode(&bytes).unwrap();
    let get = |name: &str| decoded.iter().find(|(n, _)| &**n == name).map(|(_, v)| v.clone());
    assert_eq!(get("newstate"), Some(Value::Str("TCP_ESTABLISHED".into())));
    assert_eq!(get("oldstate"), Some(Value::Str("99".into())), "a value without a name shows its number");
    let addr = [127, 0, 0, 1].map(Value::UInt);
    assert_eq!(get("saddr"), Some(Value::List(addr.to_vec())));
    assert_eq!(get("skaddr"), Some(Value::Pointer(0)));

    let dma = format("dma_map_sg");
    let lengths: Vec<u8> = [4096u32, 512].iter().flat_map(|l| l.to_ne_bytes()).collect();
    let bytes = record(&dma, dma.fixed_size(), &[], &[("device", b"nvme0\0"), ("lengths", &lengths)]);
    let field = dma.field("lengths").unwrap();
    assert_eq!(field.decode(&bytes), Ok(Value::List(vec![Value::UInt(4096), Value::UInt(512)])));
    assert_eq!(dma.field("device").unwrap().decode(&bytes), Ok(Value::Str("nvme0".into())));
}

#[test]
fn truncated_records_and_wild_offsets_are_errors() {
    let fork = format("sched_process_fork");
    let bytes = record(&fork, 24, &[], &[("parent_comm", b"bash\0"), ("child_comm", b"sleep\0")]);
    assert!(fork.decode(&bytes).is_ok());
    for cut in 0..bytes.len() {
        assert!(fork.decode(&bytes[..cut]).is_err(), "a record cut at {cut} bytes decoded");
    }
    let mut wild = bytes.clone();
    wild[8..12].copy_from_slice(&(0xfff0u32 | (16 << 16)).to_ne_bytes());
    let err = fork.decode(&wild).unwrap_err();
    assert!(
        matches!(&err, DecodeError::OutOfRecord { field, start: 0xfff0, .. } if &**field == "parent_comm"),
        "{err}"
    );
}

#[test]
fn malformed_format_files_are_errors() {
    assert!(Format::parse("").is_err());
    assert!(Format::parse("name: x\nformat:\n").is_err());
    assert!(Format::parse("name: x\n\tfield:int a;\toffset:zz;\tsize:4;\tsigned:1;\n").is_err());
    assert!(Format::parse("name: x\n\tfield:__data_loc char[] s;\toffset:8;\tsize:8;\tsigned:0;\n").is_err());
    assert!(Format::parse("name: x\n\tfield:int;\toffset:8;\tsize:4;\tsigned:1;\n").is_err());
}

#[test]
fn unknown_tracepoints_list_close_matches() {
    let dir = tempfile::tempdir().unwrap();
    for (category, name) in
        [("sched", "sched_process_fork"), ("sched", "sched_process_exec"), ("signal", "signal_generate")]
    {
        let path = dir.path().join("events").join(category).join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("format"), FORMATS[6].1).unwrap();
    }
    assert!(Format::read(dir.path(), "sched", "sched_process_fork").is_ok());
    let err = Format::read(dir.path(), "sched", "sched_proces_fork").unwrap_err().to_string();
    assert!(err.contains("no tracepoint sched:sched_proces_fork"), "{err}");
    assert!(err.contains("did you mean sched:sched_process_fork"), "{err}");
    let err = Format::read(dir.path(), "schd", "sched_process_exec").unwrap_err().to_string();
    assert!(err.contains("did you mean sched:sched_process_exec"), "{err}");
    let err = Format::read(dir.path(), "nothing", "like_it").unwrap_err().to_string();
    assert!(!err.contains("did you mean"), "{err}");
}

proptest! {
    #[test]
    fn no_format_text_panics_the_parser(text in "(name: [a-z]{1,5}\n|\tfield:[a-z_ \\[\\]0-9*]{0,20};\toffset:[0-9]{1,3};\tsize:[0-9]{1,2};\tsigned:[01];\n|print fmt: [{}, \"A-Z0-9]{0,30}\n|[^\n]{0,20}\n){0,8}") {
        if let Ok(format) = Format::parse(&text) {
            let _ = format.decode(&[0xff; 64]);
        }
    }

    #[test]
    fn no_record_panics_the_decoder(index in 0..FORMATS.len(), bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        let format = Format::parse(FORMATS[index].1).unwrap();
        if let Ok(fields) = format.decode(&bytes) {
            prop_assert!(bytes.len() >= format.fixed_size() && !fields.is_empty());
        }
    }
}
