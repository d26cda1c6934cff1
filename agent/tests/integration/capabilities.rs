//! Capability checks, end to end: binds to a port below 1024 made by workloads the test forks
//! into cgroups it created, counted by `ks_cap_capable` and read back over HTTP.

use crate::support;

use std::time::Duration;

use crate::support::{Agent, TestCgroup, config_file, parse, path_str, privileged, value};

const BINDS: usize = 200;
/// A privileged port on loopback: the capability check comes before the port's use is looked
/// at, so the port being taken does not change what is counted.
const LOW_PORT: u16 = 1009;
const CAP_NET_BIND_SERVICE: u32 = 10;

/// `BINDS` binds of a TCP socket to 127.0.0.1:LOW_PORT; the count of those refused with EACCES.
fn bind_low_port() -> usize {
    let mut refused = 0;
    for _ in 0..BINDS {
        // SAFETY: raw socket calls on a zeroed sockaddr_in (safe after fork).
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return usize::MAX;
            }
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = LOW_PORT.to_be();
            addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::bind(fd, (&raw const addr).cast(), len) != 0 && *libc::__errno_location() == libc::EACCES
            {
                refused += 1;
            }
            libc::close(fd);
        }
    }
    refused
}

/// Clears CAP_NET_BIND_SERVICE from the calling process's effective set (raw capget/capset).
fn drop_net_bind_service() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: the kernel fills two `Data` for version 3.
    unsafe {
        if libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) != 0 {
            return false;
        }
        data[0].effective &= !(1 << CAP_NET_BIND_SERVICE);
        libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) == 0
    }
}

fn granted_binds() -> i32 {
    i32::from(bind_low_port() != 0)
}

fn denied_binds() -> i32 {
    if !drop_net_bind_service() {
        return 2;
    }
    i32::from(bind_low_port() != BINDS)
}

/// `denied_binds` by a process that took the name runc gives its setup stages.
fn denied_binds_named_like_runc() -> i32 {
    let name = c"runc:[2:INIT]";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
        return 3;
    }
    denied_binds()
}

fn checks(samples: &[support::Sample], cgroup: &str, result: &str) -> f64 {
    value(
        samples,
        "kernsight_capability_checks_total",
        &[("cgroup", cgroup), ("cap", "CAP_NET_BIND_SERVICE"), ("result", result), ("userns", "initial")],
    )
}

#[test]
fn binds_below_1024_count_net_bind_service_granted_and_denied() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let allowed = TestCgroup::create("cap-granted");
    let refused = TestCgroup::create("cap-denied");
    assert_eq!(allowed.run(granted_binds), 0, "a bind as root was refused");
    assert_eq!(refused.run(denied_binds), 0, "binds without CAP_NET_BIND_SERVICE were not all refused");

    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let seen = checks(samples, &allowed.label, "granted") + checks(samples, &refused.label, "denied");
        if seen >= 2.0 * BINDS as f64 {
            Ok(())
        } else {
            Err(format!("{seen} of {} checks counted", 2 * BINDS))
        }
    });
    assert_eq!(checks(&samples, &allowed.label, "granted"), BINDS as f64, "log:\n{}", agent.log());
    assert_eq!(checks(&samples, &allowed.label, "denied"), 0.0);
    assert_eq!(checks(&samples, &refused.label, "denied"), BINDS as f64);
    assert_eq!(checks(&samples, &refused.label, "granted"), 0.0);
    let full = value(&samples, "kernsight_bpf_map_full_total", &[("map", "CAPABILITY_CHECKS")]);
    assert_eq!(full, 0.0);
}

/// Only runc's own binary makes a check the runtime's: a workload that renames itself like
/// runc's stages (`prctl(PR_SET_NAME)`, open to any process) is counted like any other.
#[test]
fn checks_of_a_process_named_like_runc_still_count() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let plain = TestCgroup::create("cap-plain");
    let renamed = TestCgroup::create("cap-renamed");
    assert_eq!(plain.run(denied_binds), 0, "binds without CAP_NET_BIND_SERVICE were not all refused");
    assert_eq!(renamed.run(denied_binds_named_like_runc), 0, "renamed binds were not all refused");

    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let seen = checks(samples, &plain.label, "denied") + checks(samples, &renamed.label, "denied");
        if seen >= 2.0 * BINDS as f64 {
            Ok(())
        } else {
            Err(format!("{seen} of {} denied checks counted", 2 * BINDS))
        }
    });
    assert_eq!(checks(&samples, &plain.label, "denied"), BINDS as f64, "log:\n{}", agent.log());
    assert_eq!(checks(&samples, &renamed.label, "denied"), BINDS as f64, "log:\n{}", agent.log());
}

#[test]
fn full_capability_map_counts_in_other() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    // The smallest bound: the overflow entries take (CAP_LAST_CAP + 1) * 2 of the 512, the
    // host's own cgroups some more, and 600 cgroups with a check each cannot all find room.
    let (_dir, config) = config_file("[security]\ncapability_max_entries = 512\n");
    let agent = Agent::start(&["--config", path_str(&config)]);
    // Fill the map: more cgroups than it has room for, each with BINDS checks.
    let fillers: Vec<TestCgroup> = (0..600).map(|i| TestCgroup::create(&format!("cap-fill-{i}"))).collect();
    for cgroup in &fillers {
        assert_eq!(cgroup.run(granted_binds), 0);
    }
    let samples = parse(&agent.scrape());
    let full = value(&samples, "kernsight_bpf_map_full_total", &[("map", "CAPABILITY_CHECKS")]);
    assert!(full >= BINDS as f64, "the map never filled ({full} misses); log:\n{}", agent.log());
    // Every miss is counted under cgroup="other" with its capability and result.
    let other = value(&samples, "kernsight_capability_checks_total", &[("cgroup", "other")]);
    assert!(other >= full, "{other} checks in `other` for {full} misses");
    let counted: f64 = fillers.iter().map(|c| checks(&samples, &c.label, "granted")).sum();
    // The fillers' checks are all somewhere: in their own series or in `other`.
    assert!(counted + checks(&samples, "other", "granted") >= (fillers.len() * BINDS) as f64);
    assert!(counted < (fillers.len() * BINDS) as f64, "every filler found room");
}

const SETHOSTNAMES: usize = 50;

/// In a new user namespace, `sethostname` asks for CAP_SYS_ADMIN over the host's UTS namespace:
/// denied, and the credentials asking are the nested namespace's. The hostname never changes.
fn sethostname_in_a_user_namespace() -> i32 {
    // SAFETY: raw syscalls in a forked child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            return 2;
        }
        let name = b"kernsight-never";
        for _ in 0..SETHOSTNAMES {
            if libc::syscall(libc::SYS_sethostname, name.as_ptr(), name.len()) == 0 {
                return 3; // it must not succeed
            }
        }
    }
    0
}

#[test]
fn checks_from_a_user_namespace_are_nested() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let cgroup = TestCgroup::create("cap-userns");
    assert_eq!(cgroup.run(sethostname_in_a_user_namespace), 0);
    let labels = |userns| {
        [
            ("cgroup", cgroup.label.clone()),
            ("cap", "CAP_SYS_ADMIN".into()),
            ("result", "denied".into()),
            ("userns", userns),
        ]
    };
    let count = |samples: &[support::Sample], userns: &str| {
        let labels = labels(userns.to_owned());
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(samples, "kernsight_capability_checks_total", &labels)
    };
    let samples = agent.scrape_until(Duration::from_secs(20), |samples| {
        let nested = count(samples, "nested");
        if nested >= SETHOSTNAMES as f64 { Ok(()) } else { Err(format!("{nested} nested checks counted")) }
    });
    assert_eq!(count(&samples, "nested"), SETHOSTNAMES as f64, "log:\n{}", agent.log());
    let granted_nested = value(
        &samples,
        "kernsight_capability_checks_total",
        &[("cgroup", &cgroup.label), ("result", "granted"), ("userns", "nested")],
    );
    assert_eq!(granted_nested, 0.0);
}
