//! Exec and exit events, one log line each (debug level: on a busy node execs are many), with
//! the workload they belong to. Losses are said at warn level.

use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use super::{cgroups::Tracker, identity::Resolver};
use crate::bpf::{
    process_events::{Kind, Process, ProcessEventReader, decode, describe_exit},
    rings::Rings,
};

/// Reads events until the agent stops.
pub async fn follow_events(
    reader: ProcessEventReader,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    rings: Arc<Rings>,
) {
    // SAFETY: the AsyncFd owns what holds the ring buffer's fd, so it stays open while registered.
    let registered = unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) };
    let mut events = match registered {
        Ok(events) => events,
        Err(err) => {
            warn!("cannot poll the process event ring buffer ({err}): exec and exit events are not reported");
            return;
        }
    };
    let mut lost_seen = 0;
    loop {
        let Ok(mut guard) = events.readable_mut().await else {
            warn!(
                "polling the process event ring buffer failed: exec and exit events are no longer reported"
            );
            return;
        };
        let reader = guard.get_inner_mut();
        let records: Vec<Vec<u8>> = std::iter::from_fn(|| reader.ring.next().map(|r| r.to_vec())).collect();
        let lost = reader.lost();
        guard.clear_ready();
        if lost > lost_seen {
            warn!(lost = lost - lost_seen, "process events lost: the ring buffer was full");
            lost_seen = lost;
        }
        for record in records {
            let decoded = decode(&record);
            rings.process_events.count(decoded.is_ok());
            match decoded {
                Ok(process) => log(&tracker, &resolver, &process),
                Err(err) => debug!("skipped a process event: {err}"),
            }
        }
    }
}

fn log(tracker: &Tracker, resolver: &Resolver, process: &Process) {
    let workload = resolver.workload(&super::oom::path_of(tracker, process.cgroup_id));
    let Process { pid, tgid, ppid, uid, name, args, .. } = process;
    let (namespace, pod, container, cgroup) =
        (workload.namespace, workload.pod, workload.container, workload.cgroup);
    match process.kind {
        Kind::Exec => debug!(
            pid, tgid, ppid, uid, %namespace, %pod, %container, %cgroup, filename = %name, ?args, "exec"
        ),
        Kind::Exit { exit_code } => debug!(
            pid, ppid, uid, %namespace, %pod, %container, %cgroup, comm = %name, exit_code,
            how = %describe_exit(exit_code), "exit"
        ),
    }
}
