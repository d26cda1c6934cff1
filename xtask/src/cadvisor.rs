//! cAdvisor, the reference of the scrape benchmark: the version Debian 11 ships (0.38), fetched
//! from bullseye as the kernel matrix fetches its kernels, run with its defaults (housekeeping
//! every second, every cgroup of the host) on the benchmark's cgroups.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::kernels::download::{KERNELS, package_file};

pub struct CAdvisor {
    child: Child,
    pub address: String,
}

impl CAdvisor {
    /// Fetches cAdvisor (once; kept in the kernel cache) and starts it on a free local port.
    pub fn start() -> Result<Self, String> {
        let binary = binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(&binary)
            .args(["-listen_ip", "127.0.0.1", "-port", &port.to_string(), "-logtostderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Self { child, address: format!("127.0.0.1:{port}") })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until its metrics count at least `wanted` cgroups whose path holds `marker`.
    pub fn wait_for(&self, marker: &str, wanted: usize, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        let mut seen = 0;
        while started.elapsed() < timeout {
            if let Ok(body) = crate::scrape_bench::get(&self.address, "/metrics") {
                seen = body
                    .lines()
                    .filter(|l| l.starts_with("container_memory_usage_bytes{") && l.contains(marker))
                    .count();
                if seen >= wanted {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(format!("cAdvisor reported {seen} of {wanted} cgroups after {timeout:?}"))
    }
}

impl Drop for CAdvisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Result<PathBuf, String> {
    let bullseye = KERNELS
        .iter()
        .find(|k| k.arch == "amd64" && k.suites.contains(&"bullseye"))
        .ok_or("no amd64 bullseye source in the kernel matrix")?;
    package_file(bullseye, "cadvisor", "usr/bin/cadvisor")
}
