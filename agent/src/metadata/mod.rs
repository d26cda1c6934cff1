//! Who is who: cgroup id → cgroup path → container → pod.

pub mod cgroups;
