//! The agent a command reads (`top`, `diagnose`): the one given, the one at the default
//! address, or one started for the command and stopped with it.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::metrics::client as scrape;

/// Where an agent listens by default (`metrics.listen`).
pub const DEFAULT_AGENT: &str = "127.0.0.1:9464";

/// An agent started for one command; stopped when dropped (or when this process dies).
pub struct OwnAgent(Child);

impl Drop for OwnAgent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The agent at `given`; else the one at `DEFAULT_AGENT`; else one started `for_what` (said on
/// stderr). Returns the started agent, to keep while it is needed, and the address to read.
pub fn find_or_start(given: Option<&str>, for_what: &str) -> anyhow::Result<(Option<OwnAgent>, String)> {
    if let Some(address) = given {
        return Ok((None, address.to_owned()));
    }
    match scrape::fetch(DEFAULT_AGENT) {
        Ok(_) => Ok((None, DEFAULT_AGENT.to_owned())),
        Err(err) => {
            match err {
                scrape::ScrapeError::Tls(_) => eprintln!(
                    "the agent at {DEFAULT_AGENT} serves TLS, which this command does not speak yet: starting one for {for_what}"
                ),
                _ => eprintln!("no agent at {DEFAULT_AGENT}: starting one for {for_what}"),
            }
            let (agent, address) = start(for_what)?;
            Ok((Some(agent), address))
        }
    }
}

fn start(for_what: &str) -> anyhow::Result<(OwnAgent, String)> {
    let exe = std::env::current_exe().context("cannot find the kernsight binary to start an agent")?;
    let mut command = Command::new(exe);
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; the agent then dies with this command.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot start `kernsight run`")?;
    let stderr = child.stderr.take().context("no stderr from the agent")?;
    let agent = OwnAgent(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("serving metrics on http://").nth(1) {
            let address = rest.split('/').next().unwrap_or_default().to_owned();
            // Keep draining its log, or the agent blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((agent, address));
        }
        log.push(line);
    }
    bail!("the agent started for {for_what} did not come up: {}", log.join(" | "))
}
