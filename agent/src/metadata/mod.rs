//! Who runs in a cgroup: pod and container identity from the node's container runtime.

pub mod cri;
