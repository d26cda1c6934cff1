use kernsight_common::trace::{
    KIND_SYSCALL, KIND_TRACEPOINT, LATENCY_UNKNOWN, SyscallRecord, TRACE_PATH_MAX, TraceHeader,
};

use super::*;

const FORK: &str = include_str!("../../kernel/tracefs/testdata/sched_process_fork.format");
const SIGNAL: &str = include_str!("../../kernel/tracefs/testdata/signal_generate.format");

fn header(kind: u32, len: u32) -> TraceHeader {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"bash");
    TraceHeader { timestamp_ns: 7, cgroup_id: 42, pid: 11, tgid: 10, kind, len, comm }
}

fn bytes_of<T>(value: &T) -> Vec<u8> {
    // SAFETY: plain-data wire types viewed as bytes.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[test]
fn decodes_a_tracepoint_record_after_its_header() {
    let decoder = RecordDecoder::new(Decoder::Tracepoint(Format::parse(FORK).unwrap()));
    let mut body = vec![0u8; 24];
    body[8..12].copy_from_slice(&(24u32 | (5 << 16)).to_ne_bytes());
    body[12..16].copy_from_slice(&10i32.to_ne_bytes());
    body[16..20].copy_from_slice(&(29u32 | (6 << 16)).to_ne_bytes());
    body[20..24].copy_from_slice(&12i32.to_ne_bytes());
    body.extend_from_slice(b"bash\0sleep\0");
    body.resize(64, 0);
    let mut record = bytes_of(&header(KIND_TRACEPOINT, 64));
    record.extend_from_slice(&body);
    let event = decoder.decode(&record, 0).unwrap();
    assert_eq!(event.get("pid"), Some(&Value::UInt(10)));
    assert_eq!(event.get("tid"), Some(&Value::UInt(11)));
    assert_eq!(event.get("comm"), Some(&Value::Str("bash".into())));
    assert_eq!(event.get("child_pid"), Some(&Value::Int(12)));
    assert_eq!(event.get("child_comm"), Some(&Value::Str("sleep".into())));
    // Every field the schema names is in the event, in the same order.
    let names: Vec<String> = decoder.schema().iter().map(|(n, _)| n.to_string()).collect();
    let got: Vec<String> = event.fields.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, got);
    for cut in 0..record.len() {
        assert!(decoder.decode(&record[..cut], 0).is_err(), "a record cut at {cut} bytes decoded");
    }
    let not_copied = bytes_of(&header(KIND_TRACEPOINT, 0));
    assert!(matches!(decoder.decode(&not_copied, 0), Err(RecordError::NotCopied)));
}

#[test]
fn clashing_tracepoint_fields_are_renamed() {
    let decoder = RecordDecoder::new(Decoder::Tracepoint(Format::parse(SIGNAL).unwrap()));
    let names: Vec<String> = decoder.schema().iter().map(|(n, _)| n.to_string()).collect();
    assert!(names.contains(&"args.pid".to_owned()) && names.contains(&"args.comm".to_owned()), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "pid").count(), 1);
}

#[test]
fn decodes_syscall_records() {
    let decoder = RecordDecoder::new(Decoder::Syscalls);
    let mut path = [0u8; TRACE_PATH_MAX];
    path[..8].copy_from_slice(b"/nothere");
    let openat = libc::SYS_openat as u32;
    let record = SyscallRecord {
        header: header(KIND_SYSCALL, 9),
        id: openat,
        _pad: 0,
        ret: -2,
        latency_ns: 1500,
        args: [(-100i64) as u64, 0x7fff_0000, 0, 0, 0, 0],
        path,
    };
    let event = decoder.decode(&bytes_of(&record), 0).unwrap();
    assert_eq!(event.get("syscall"), Some(&Value::Str("openat".into())));
    assert_eq!(event.get("ret"), Some(&Value::Int(-2)));
    assert_eq!(event.get("errno"), Some(&Value::Str("ENOENT".into())));
    assert_eq!(event.get("latency_ns"), Some(&Value::UInt(1500)));
    assert_eq!(event.get("path"), Some(&Value::Str("/nothere".into())));
    assert_eq!(event.get("args"), Some(&Value::Str("AT_FDCWD, \"/nothere\", 0, 0".into())));
    let unknown = SyscallRecord { latency_ns: LATENCY_UNKNOWN, ret: 3, ..record };
    let event = decoder.decode(&bytes_of(&unknown), 0).unwrap();
    assert_eq!(event.get("errno"), Some(&Value::empty()));
    assert_eq!(event.get("latency_ns"), Some(&Value::Str("-".into())));
    let bytes = bytes_of(&record);
    for cut in 0..bytes.len() {
        assert!(decoder.decode(&bytes[..cut], 0).is_err());
    }
    let wrong = SyscallRecord { header: header(KIND_TRACEPOINT, 0), ..record };
    assert!(matches!(decoder.decode(&bytes_of(&wrong), 0), Err(RecordError::Kind(KIND_TRACEPOINT))));
}

#[test]
fn an_event_reused_for_every_record_holds_what_a_fresh_one_would() {
    let decoder = RecordDecoder::new(Decoder::Syscalls);
    let mut path = [0u8; TRACE_PATH_MAX];
    path[..5].copy_from_slice(b"/etc/");
    let first = SyscallRecord {
        header: header(KIND_SYSCALL, 6),
        id: libc::SYS_openat as u32,
        _pad: 0,
        ret: 3,
        latency_ns: 10,
        args: [(-100i64) as u64, 0x7fff_0000, 0, 0, 0, 0],
        path,
    };
    let mut event = Event::default();
    decoder.decode_into(&bytes_of(&first), 0, &mut event).unwrap();
    assert_eq!(event.get("path"), Some(&Value::text("/etc/")));
    // Numbers a workload may pass: named from the cache below `CACHED_SYSCALLS`, per event past.
    for id in [0, 1, CACHED_SYSCALLS - 1, CACHED_SYSCALLS, 100_000, u32::MAX] {
        let call = SyscallRecord { id, header: header(KIND_SYSCALL, 0), ret: -1, ..first };
        decoder.decode_into(&bytes_of(&call), 0, &mut event).unwrap();
        assert_eq!(event, decoder.decode(&bytes_of(&call), 0).unwrap(), "syscall {id}");
        assert_eq!(event.get("syscall"), Some(&Value::text(&syscall_name(id))));
        assert_eq!(event.get("path"), Some(&Value::empty()), "nothing left of the first record");
        assert_eq!(event.get("errno"), Some(&Value::text("EPERM")));
    }
    // A record that does not decode leaves nothing to print, and the next one decodes whole.
    assert!(decoder.decode_into(&bytes_of(&first)[..40], 0, &mut event).is_err());
    decoder.decode_into(&bytes_of(&first), 0, &mut event).unwrap();
    assert_eq!(event, decoder.decode(&bytes_of(&first), 0).unwrap());
}

#[test]
fn quotes_arguments_like_a_shell() {
    let args: Vec<String> = ["echo", "two words", "", "plain"].map(String::from).to_vec();
    assert_eq!(shell_words(&args), "echo \"two words\" \"\" plain");
}
