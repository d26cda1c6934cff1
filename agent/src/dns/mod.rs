//! DNS per workload: the messages the `dns` family copies out of the kernel are parsed here
//! (`message`) and matched into exchanges, timeouts and counts per cgroup (`exchanges`).

pub mod exchanges;
pub mod message;
