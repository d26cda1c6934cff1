//! Ring-buffer records to events: the header every record has (time, process, cgroup), then
//! the raw tracepoint record decoded by its tracefs layout, or a syscall record, or an exec/exit
//! event. Nothing in a record is trusted: lengths are checked, text is decoded lossily.

use kernsight_common::{
    block_io::{device_numbers, op_name},
    trace::{
        BlockIoRecord, KIND_BLOCK_IO, KIND_SYSCALL, KIND_TRACEPOINT, LATENCY_UNKNOWN, SyscallRecord,
        TraceHeader,
    },
};

use super::syscall_args;
use crate::{
    bpf::processes::event::{self, Kind as ProcessKind},
    dns::{
        exchanges::{Exchanges, Limits, Seen, decode as decode_dns},
        message::{qtype_name, rcode_name},
    },
    kernel::value::{Event, Kind, Name, Text, Value, c_text},
    kernel::{
        names::{errno_name, syscall_name},
        tracefs::{self, Format},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes, shorter than its header or body")]
    Short(usize),
    #[error("record of unexpected kind {0}")]
    Kind(u32),
    #[error("the kernel could not copy the tracepoint record")]
    NotCopied,
    #[error(transparent)]
    Tracepoint(#[from] tracefs::DecodeError),
    #[error(transparent)]
    Process(#[from] event::DecodeError),
    #[error("a DNS record: {0}")]
    Dns(String),
    /// A TCP segment that continues a DNS message: nothing to show, nothing wrong.
    #[error("the rest of a DNS message")]
    Continuation,
}

/// Field names shared by all events of a trace (allocated once).
struct Names {
    time_ns: Name,
    pid: Name,
    tid: Name,
    comm: Name,
    cgroup_id: Name,
}

impl Names {
    fn new() -> Self {
        Self {
            time_ns: "time_ns".into(),
            pid: "pid".into(),
            tid: "tid".into(),
            comm: "comm".into(),
            cgroup_id: "cgroup_id".into(),
        }
    }
}

/// Room for an event's fields (the common ones, a record's own and the enrichment's), so that
/// none is regrown while it is enriched.
pub const EVENT_FIELDS: usize = 24;

/// The fields every event starts with.
const COMMON: [(&str, Kind); 5] = [
    ("time_ns", Kind::Number),
    ("pid", Kind::Number),
    ("tid", Kind::Number),
    ("comm", Kind::Text),
    ("cgroup_id", Kind::Number),
];

/// What the records of a trace are.
pub enum Decoder {
    /// Raw records of a tracepoint, decoded with its `format` file.
    Tracepoint(Format),
    Syscalls,
    Processes,
    /// Completed block requests (`kernsight trace io`).
    BlockIo,
    /// DNS messages, matched into exchanges as the agent does (`kernsight trace dns`).
    Dns,
}

/// A decoder's own state per kind of record.
enum Records {
    /// Tracepoint fields whose names clash with the common ones are renamed `args.<name>`.
    Tracepoint {
        format: Format,
        renamed: Vec<Name>,
    },
    Syscalls(SyscallTexts),
    Processes,
    BlockIo(DeviceNames),
    Dns(std::sync::Mutex<Exchanges>),
}

/// The names of the syscalls below `CACHED_SYSCALLS`, made once: a name copied into every
/// event was an allocation each. A number past them (any a workload passes) is named per event.
struct SyscallTexts(Vec<Text>);

const CACHED_SYSCALLS: u32 = 512;

impl SyscallTexts {
    fn new() -> Self {
        Self((0..CACHED_SYSCALLS).map(|id| Text::from(&*syscall_name(id))).collect())
    }

    fn name(&self, id: u32) -> Value {
        match self.0.get(id as usize) {
            Some(name) => Value::Str(Text::clone(name)),
            None => Value::text(&syscall_name(id)),
        }
    }
}

/// Kernel names of the devices seen (`major:minor` → name), read once each from sysfs; at most
/// `MAX_DEVICE_NAMES`, past which devices are shown by number only.
#[derive(Default)]
struct DeviceNames(std::sync::Mutex<std::collections::HashMap<u32, String>>);

const MAX_DEVICE_NAMES: usize = 256;

impl DeviceNames {
    fn name(&self, device: u32) -> String {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(&device) {
            return name.clone();
        }
        let (major, minor) = device_numbers(device);
        let name = crate::kernel::block_devices::device_name(std::path::Path::new("/sys"), major, minor)
            .unwrap_or_default();
        if names.len() < MAX_DEVICE_NAMES {
            names.insert(device, name.clone());
        }
        name
    }
}

/// The fields of a DNS event after the common ones.
const DNS_FIELDS: [(&str, Kind); 9] = [
    ("kind", Kind::Text),
    ("name", Kind::Text),
    ("qtype", Kind::Text),
    ("rcode", Kind::Text),
    ("latency_ns", Kind::Number),
    ("server", Kind::Text),
    ("protocol", Kind::Text),
    ("id", Kind::Number),
    ("error", Kind::Text),
];

/// A trace awaits this many queries at once; past it, answers show no latency.
const DNS_TRACE_PENDING: usize = 65_536;
/// A trace has no timeout to report (a query without an answer line is one): a minute of
/// waiting before a query is forgotten.
const DNS_TRACE_FORGET_NS: u64 = 60_000_000_000;

/// The fields of a block I/O event after the common ones.
const BLOCK_IO_FIELDS: [(&str, Kind); 6] = [
    ("device", Kind::Text),
    ("device_name", Kind::Text),
    ("op", Kind::Text),
    ("bytes", Kind::Number),
    ("latency_ns", Kind::Number),
    ("error", Kind::Number),
];

struct SyscallNames {
    syscall: Name,
    ret: Name,
    errno: Name,
    latency_ns: Name,
    args: Name,
    path: Name,
}

/// Decodes records into events, with the trace's field names.
pub struct RecordDecoder {
    decoder: Records,
    names: Names,
    syscall: SyscallNames,
    /// Where a syscall's arguments are described before their text is made (one allocation
    /// an event, not two).
    args_text: std::cell::RefCell<String>,
}

impl RecordDecoder {
    pub fn new(decoder: Decoder) -> Self {
        let decoder = match decoder {
            Decoder::Tracepoint(format) => {
                let renamed = format
                    .fields
                    .iter()
                    .filter(|f| !f.common)
                    .map(|f| match COMMON.iter().any(|(n, _)| *n == &*f.name) {
                        true => format!("args.{}", f.name).into(),
                        false => Name::clone(&f.name),
                    })
                    .collect();
                Records::Tracepoint { format, renamed }
            }
            Decoder::Syscalls => Records::Syscalls(SyscallTexts::new()),
            Decoder::Processes => Records::Processes,
            Decoder::BlockIo => Records::BlockIo(DeviceNames::default()),
            Decoder::Dns => Records::Dns(std::sync::Mutex::new(Exchanges::new(Limits {
                timeout_ns: DNS_TRACE_FORGET_NS,
                max_pending: DNS_TRACE_PENDING,
                // A trace prints exchanges, not the per-cgroup counts the agent serves: one
                // cgroup's and the overflow's are all it keeps, however many come and go.
                max_cgroups: 1,
            }))),
        };
        let syscall = SyscallNames {
            syscall: "syscall".into(),
            ret: "ret".into(),
            errno: "errno".into(),
            latency_ns: "latency_ns".into(),
            args: "args".into(),
            path: "path".into(),
        };
        Self {
            decoder,
            names: Names::new(),
            syscall,
            args_text: std::cell::RefCell::new(String::with_capacity(512)),
        }
    }

    /// Every field an event of this trace has, for checking `--where` and aggregation fields.
    pub fn schema(&self) -> Vec<(Name, Kind)> {
        let mut fields: Vec<(Name, Kind)> = COMMON.iter().map(|(n, k)| (Name::from(*n), *k)).collect();
        match &self.decoder {
            Records::Tracepoint { format, renamed } => {
                let kinds = format.fields.iter().filter(|f| !f.common).map(|f| f.kind());
                fields.extend(renamed.iter().cloned().zip(kinds));
            }
            Records::Syscalls(_) => fields.extend(
                [
                    ("syscall", Kind::Text),
                    ("ret", Kind::Number),
                    ("errno", Kind::Text),
                    ("latency_ns", Kind::Number),
                    ("args", Kind::Text),
                    ("path", Kind::Text),
                ]
                .map(|(n, k)| (Name::from(n), k)),
            ),
            Records::Processes => fields.extend(
                [
                    ("event", Kind::Text),
                    ("ppid", Kind::Number),
                    ("uid", Kind::Number),
                    ("filename", Kind::Text),
                    ("argv", Kind::Text),
                    ("exit_code", Kind::Number),
                    ("how", Kind::Text),
                ]
                .map(|(n, k)| (Name::from(n), k)),
            ),
            Records::BlockIo(_) => fields.extend(BLOCK_IO_FIELDS.map(|(n, k)| (Name::from(n), k))),
            Records::Dns(_) => fields.extend(DNS_FIELDS.map(|(n, k)| (Name::from(n), k))),
        }
        fields
    }

    #[cfg(test)]
    pub fn decode(&self, record: &[u8], now_ns: u64) -> Result<Event, RecordError> {
        let mut event = Event { fields: Vec::with_capacity(EVENT_FIELDS) };
        self.decode_into(record, now_ns, &mut event)?;
        Ok(event)
    }

    /// Decodes `record` into `event`, emptied first: a trace reuses one event's room for every
    /// record rather than allocating it each time.
    pub fn decode_into(&self, record: &[u8], now_ns: u64, event: &mut Event) -> Result<(), RecordError> {
        event.fields.clear();
        match &self.decoder {
            Records::Processes => self.process(record, now_ns, event),
            Records::Tracepoint { format, renamed } => {
                let (header, body) = header(record)?;
                if header.kind != KIND_TRACEPOINT {
                    return Err(RecordError::Kind(header.kind));
                }
                if header.len == 0 {
                    return Err(RecordError::NotCopied);
                }
                let body = body.get(..header.len as usize).ok_or(RecordError::Short(record.len()))?;
                self.common(&header, event);
                for (name, (_, value)) in renamed.iter().zip(format.decode(body)?) {
                    event.push(name, value);
                }
                Ok(())
            }
            Records::Syscalls(names) => {
                if record.len() < size_of::<SyscallRecord>() {
                    return Err(RecordError::Short(record.len()));
                }
                // SAFETY: length checked; plain integers and bytes, read unaligned.
                let call: SyscallRecord = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
                if call.header.kind != KIND_SYSCALL {
                    return Err(RecordError::Kind(call.header.kind));
                }
                self.syscall(&call, names, event);
                Ok(())
            }
            Records::Dns(exchanges) => self.dns(record, exchanges, event),
            Records::BlockIo(names) => {
                if record.len() < size_of::<BlockIoRecord>() {
                    return Err(RecordError::Short(record.len()));
                }
                // SAFETY: length checked; plain integers and bytes, read unaligned.
                let io: BlockIoRecord = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
                if io.header.kind != KIND_BLOCK_IO {
                    return Err(RecordError::Kind(io.header.kind));
                }
                self.common(&io.header, event);
                let (major, minor) = device_numbers(io.device);
                let op = u16::try_from(io.op).ok().and_then(op_name).unwrap_or("other");
                let values = [
                    Value::text(&format!("{major}:{minor}")),
                    Value::text(&names.name(io.device)),
                    Value::text(op),
                    Value::UInt(io.bytes),
                    Value::UInt(io.latency_ns),
                    Value::UInt(u64::from(io.error)),
                ];
                for ((name, _), value) in BLOCK_IO_FIELDS.iter().zip(values) {
                    event.push(&Name::from(*name), value);
                }
                Ok(())
            }
        }
    }

    fn dns(
        &self,
        record: &[u8],
        exchanges: &std::sync::Mutex<Exchanges>,
        event: &mut Event,
    ) -> Result<(), RecordError> {
        let segment = decode_dns(record).map_err(RecordError::Dns)?;
        let mut exchanges = exchanges.lock().unwrap_or_else(|e| e.into_inner());
        let seen = exchanges.observe(&segment);
        exchanges.expire(segment.timestamp_ns);
        drop(exchanges);
        let (kind, message, latency, error) = match seen {
            Seen::Query(message) => ("query", Some(message), None, String::new()),
            Seen::Answer(message, latency) => ("answer", Some(message), latency, String::new()),
            Seen::Malformed(err) => ("malformed", None, None, err.to_string()),
            Seen::Continuation => return Err(RecordError::Continuation),
        };
        let n = &self.names;
        event.push(&n.time_ns, Value::UInt(segment.timestamp_ns));
        event.push(&n.pid, Value::UInt(0));
        event.push(&n.tid, Value::UInt(0));
        event.push(&n.comm, Value::empty());
        event.push(&n.cgroup_id, Value::UInt(segment.cgroup_id));
        let server = socket_text(segment.ip_version, &segment.remote, segment.remote_port);
        let values = [
            Value::text(kind),
            message.as_ref().map_or_else(Value::empty, |m| Value::text(&m.name)),
            message.as_ref().map_or_else(Value::empty, |m| Value::text(qtype_name(m.qtype))),
            match &message {
                Some(m) if m.response => Value::text(rcode_name(m.rcode)),
                _ => Value::empty(),
            },
            latency.map_or_else(|| Value::text("-"), Value::UInt),
            Value::text(&server),
            Value::text(if segment.tcp { "tcp" } else { "udp" }),
            Value::UInt(message.as_ref().map_or(0, |m| u64::from(m.id))),
            Value::text(&error),
        ];
        for ((name, _), value) in DNS_FIELDS.iter().zip(values) {
            event.push(&Name::from(*name), value);
        }
        Ok(())
    }

    fn common(&self, header: &TraceHeader, event: &mut Event) {
        let n = &self.names;
        event.push(&n.time_ns, Value::UInt(header.timestamp_ns));
        event.push(&n.pid, Value::UInt(u64::from(header.tgid)));
        event.push(&n.tid, Value::UInt(u64::from(header.pid)));
        event.push(&n.comm, Value::Str(c_text(&header.comm)));
        event.push(&n.cgroup_id, Value::UInt(header.cgroup_id));
    }

    fn syscall(&self, call: &SyscallRecord, names: &SyscallTexts, event: &mut Event) {
        self.common(&call.header, event);
        let s = &self.syscall;
        let errno = kernsight_common::syscalls::errno_of(call.ret);
        let path_len = (call.header.len as usize).min(call.path.len());
        let path = c_text(&call.path[..path_len]);
        event.push(&s.syscall, names.name(call.id));
        event.push(&s.ret, Value::Int(call.ret));
        event.push(&s.errno, if errno == 0 { Value::empty() } else { Value::text(&errno_name(errno)) });
        let latency =
            if call.latency_ns == LATENCY_UNKNOWN { Value::text("-") } else { Value::UInt(call.latency_ns) };
        event.push(&s.latency_ns, latency);
        let mut args = self.args_text.borrow_mut();
        args.clear();
        syscall_args::describe_into(&mut args, call.id, &call.args, path_len > 0, &path);
        event.push(&s.args, Value::text(&args));
        event.push(&s.path, Value::Str(path));
    }

    fn process(&self, record: &[u8], now_ns: u64, event: &mut Event) -> Result<(), RecordError> {
        let process = event::decode(record)?;
        let n = &self.names;
        event.push(&n.time_ns, Value::UInt(now_ns));
        event.push(&n.pid, Value::UInt(u64::from(process.tgid)));
        event.push(&n.tid, Value::UInt(u64::from(process.pid)));
        let (kind, comm, filename, exit_code) = match process.kind {
            ProcessKind::Exec => {
                let comm = process.name.rsplit('/').next().unwrap_or_default().chars().take(15).collect();
                ("exec", comm, process.name.clone(), 0)
            }
            ProcessKind::Exit { exit_code } => ("exit", process.name.clone(), String::new(), exit_code),
        };
        event.push(&n.comm, Value::text(&comm));
        event.push(&n.cgroup_id, Value::UInt(process.cgroup_id));
        event.push(&"event".into(), Value::text(kind));
        event.push(&"ppid".into(), Value::UInt(u64::from(process.ppid)));
        event.push(&"uid".into(), Value::UInt(u64::from(process.uid)));
        event.push(&"filename".into(), Value::text(&filename));
        event.push(&"argv".into(), Value::text(&shell_words(&process.args)));
        event.push(&"exit_code".into(), Value::UInt(u64::from(exit_code)));
        let how = if kind == "exit" { event::describe_exit(exit_code) } else { String::new() };
        event.push(&"how".into(), Value::text(&how));
        Ok(())
    }
}

fn header(record: &[u8]) -> Result<(TraceHeader, &[u8]), RecordError> {
    let size = size_of::<TraceHeader>();
    if record.len() < size {
        return Err(RecordError::Short(record.len()));
    }
    // SAFETY: length checked; plain integers and bytes, read unaligned.
    let header: TraceHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    Ok((header, &record[size..]))
}

/// `address:port`, `[address]:port` for IPv6.
fn socket_text(ip_version: u8, address: &[u8; 16], port: u16) -> String {
    if ip_version == 4 {
        format!("{}:{port}", std::net::Ipv4Addr::new(address[0], address[1], address[2], address[3]))
    } else {
        format!("[{}]:{port}", std::net::Ipv6Addr::from(*address))
    }
}

/// Arguments joined by spaces, quoted when they hold spaces or quotes or are empty.
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            if arg.is_empty() || arg.contains([' ', '"', '\'', '\t', '\n']) {
                format!("{arg:?}")
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
