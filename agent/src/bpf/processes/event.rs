//! Exec and process-exit events of the `processes` family: a decoder that trusts nothing in a
//! record.

use kernsight_common::processes::{EVENT_ARGS_MAX, EVENT_EXEC, EVENT_EXIT, EVENT_FILENAME_MAX, ProcessEvent};

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub kind: Kind,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    /// Exec: the path executed. Exit: the command name.
    pub name: String,
    /// Exec: the arguments (possibly cut at `EVENT_ARGS_MAX` bytes).
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    /// `exit_code` as the kernel keeps it (`status << 8 | signal`).
    Exit {
        exit_code: u32,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("process event of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("process event of unknown kind {0}")]
    Kind(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Process, DecodeError> {
    let expected = size_of::<ProcessEvent>();
    if record.len() < expected {
        return Err(DecodeError::Size(record.len(), expected));
    }
    // SAFETY: length checked; ProcessEvent is plain integers and bytes, read unaligned.
    let event: ProcessEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let kind = match event.kind {
        EVENT_EXEC => Kind::Exec,
        EVENT_EXIT => Kind::Exit { exit_code: event.exit_code },
        other => return Err(DecodeError::Kind(other)),
    };
    let name_len = (event.filename_len as usize).min(EVENT_FILENAME_MAX);
    let name = String::from_utf8_lossy(&event.filename[..name_len]).into_owned();
    let args_len = (event.args_len as usize).min(EVENT_ARGS_MAX);
    let args = event.args[..args_len]
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let args = if kind == Kind::Exec { args } else { Vec::new() };
    Ok(Process {
        kind,
        pid: event.pid,
        tgid: event.tgid,
        ppid: event.ppid,
        uid: event.uid,
        cgroup_id: event.cgroup_id,
        name,
        args,
    })
}

/// How a process ended, from its exit code.
pub fn describe_exit(exit_code: u32) -> String {
    match exit_code & 0x7f {
        0 => format!("exited with status {}", (exit_code >> 8) & 0xff),
        9 => "killed by SIGKILL".to_owned(),
        signal => format!("killed by signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, name: &[u8], args: &[u8], lens: (u32, u32)) -> Vec<u8> {
        let mut event = ProcessEvent {
            kind,
            pid: 10,
            tgid: 10,
            ppid: 1,
            uid: 0,
            exit_code: 9,
            cgroup_id: 42,
            filename_len: lens.0,
            args_len: lens.1,
            filename: [0; EVENT_FILENAME_MAX],
            args: [0; EVENT_ARGS_MAX],
        };
        event.filename[..name.len()].copy_from_slice(name);
        event.args[..args.len()].copy_from_slice(args);
        // SAFETY: plain-data struct viewed as bytes.
        unsafe { std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<ProcessEvent>()) }
            .to_vec()
    }

    #[test]
    fn decodes_exec_and_exit() {
        let exec = decode(&record(EVENT_EXEC, b"/bin/echo", b"echo\0hello\0world\0", (9, 17))).unwrap();
        assert_eq!(exec.kind, Kind::Exec);
        assert_eq!(exec.name, "/bin/echo");
        assert_eq!(exec.args, vec!["echo", "hello", "world"]);
        let exit = decode(&record(EVENT_EXIT, b"sleep", b"", (5, 0))).unwrap();
        assert_eq!(exit.kind, Kind::Exit { exit_code: 9 });
        assert_eq!(describe_exit(9), "killed by SIGKILL");
        assert_eq!(describe_exit(3 << 8), "exited with status 3");
        assert_eq!(describe_exit(15), "killed by signal 15");
    }

    #[test]
    fn hostile_records_never_panic() {
        assert!(matches!(decode(&[0; 8]), Err(DecodeError::Size(8, _))));
        assert_eq!(decode(&record(7, b"", b"", (0, 0))), Err(DecodeError::Kind(7)));
        let bogus = decode(&record(EVENT_EXEC, b"\xff\xfe", b"\xff", (u32::MAX, u32::MAX))).unwrap();
        assert!(!bogus.name.is_empty(), "invalid UTF-8 is replaced, not dropped");
        for cut in 0..size_of::<ProcessEvent>() {
            let _ = decode(&record(EVENT_EXEC, b"/x", b"x\0", (2, 2))[..cut]);
        }
    }

    proptest::proptest! {
        /// Records come from the kernel, but the decoder trusts nothing: any bytes, any length.
        #[test]
        fn no_bytes_panic_the_decoder(record in proptest::collection::vec(proptest::num::u8::ANY, 0..3 * size_of::<ProcessEvent>())) {
            let _ = decode(&record);
        }

        /// A record cut short is an error (counted by the reader), never a partial event.
        #[test]
        fn truncated_records_are_errors(record in proptest::collection::vec(proptest::num::u8::ANY, size_of::<ProcessEvent>()), cut in 0..size_of::<ProcessEvent>()) {
            proptest::prop_assert!(decode(&record[..cut]).is_err());
        }
    }
}
