//! What the agent reads from the running kernel: procfs, cgroupfs, tracefs, and names for the
//! numbers the kernel hands out (syscalls, errnos).

pub mod block_devices;
pub mod btf;
pub mod cgroup_handle;
pub mod cgroupfs;
pub mod clsact;
pub mod conntrack;
pub mod mountinfo;
pub mod names;
pub mod netns;
pub mod netstat;
pub mod preflight;
pub mod procfs;
pub mod resources;
pub mod small_file;
pub mod tracefs;
pub mod tracefs_symbols;
pub mod value;
