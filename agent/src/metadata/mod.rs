//! Who is who: cgroup id → cgroup path → container → pod.

pub mod api;
pub mod cgroup_path;
pub mod cgroups;
pub mod cri;
pub mod identity;
pub mod local;
pub mod lookup;
mod named;
pub mod owner;
