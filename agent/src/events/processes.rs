//! Exec and exit events, one log line each (debug level: on a busy node execs are many), with
//! the workload they belong to. Losses are said at warn level.

use std::sync::Arc;

use tracing::debug;

use crate::{
    bpf::{
        processes::event::{Kind, Process, decode, describe_exit},
        rings::EventRing,
    },
    metadata::{cgroups::Tracker, identity::Resolver},
};

/// Reads events until the agent stops.
pub async fn follow_events(events: EventRing, tracker: Arc<Tracker>, resolver: Arc<Resolver>) {
    events
        .follow(|record| match decode(record) {
            Ok(process) => {
                log(&tracker, &resolver, &process);
                true
            }
            Err(err) => {
                debug!("skipped a process event: {err}");
                false
            }
        })
        .await;
}

fn log(tracker: &Tracker, resolver: &Resolver, process: &Process) {
    let workload = resolver.workload(&tracker.path_of(process.cgroup_id));
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
