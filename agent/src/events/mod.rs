//! Consumers of the families' event rings: what the agent does with each rare event (an OOM
//! kill reported and counted, an exec or exit logged). The cgroup lifecycle ring is consumed by
//! the cgroup index itself (`metadata::cgroups`).

pub mod dns;
pub mod oom;
pub mod processes;
