//! The kernel's own account of what each eBPF program costs a run (`kernel.bpf_stats_enabled`):
//! the time the kernel adds up around every run, read with `bpftool prog show`. On a shared VM
//! whose wall clock moves by more than the costs being measured, these per-run figures are the
//! steady instrument. They include the accounting's own two clock reads, which is what an empty
//! program's figure (the floor's) is made of.

use std::process::Command;

use crate::process::output;

const SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The accounting, on (or off) for as long as this lives, then back as it was.
pub struct Accounting {
    before: String,
}

impl Accounting {
    pub fn on() -> Result<Self, String> {
        Self::set("1")
    }

    /// Off, for the wall-clock measurements: left on (by another tool, or a run stopped
    /// midway), it adds its two clock reads to every run of every program, ~40 ns each here.
    pub fn off() -> Result<Self, String> {
        let accounting = Self::set("0")?;
        if accounting.before.trim() != "0" {
            eprintln!("xtask: {SWITCH} was on; off for the benchmark, on again after it");
        }
        Ok(accounting)
    }

    fn set(value: &str) -> Result<Self, String> {
        let before = std::fs::read_to_string(SWITCH).map_err(|e| format!("{SWITCH}: {e}"))?;
        std::fs::write(SWITCH, value).map_err(|e| format!("{SWITCH}: {e}"))?;
        Ok(Self { before })
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        let _ = std::fs::write(SWITCH, self.before.trim());
    }
}

/// (name, ns per run) of every kernsight (`ks_`) or floor (`floor_`) program that has run since
/// it was loaded (with the accounting on).
pub fn per_run() -> Result<Vec<(String, f64)>, String> {
    let named = |program: Program| {
        let ns = program.ns_per_run();
        (program.name, ns)
    };
    Ok(read()?.into_iter().map(named).collect())
}

/// Every kernsight (`ks_`) or floor (`floor_`) program that has run since it was loaded (with
/// the accounting on): its run time and runs.
pub fn read() -> Result<Vec<Program>, String> {
    let shown = output(Command::new("bpftool").args(["prog", "show"])).ok_or("bpftool prog show failed")?;
    Ok(parse(&shown))
}

/// The sum of the ns per run of the programs of `costs` named in `names`, if each of them ran.
pub fn total(costs: &[(String, f64)], names: &[&str]) -> Option<f64> {
    names.iter().map(|name| costs.iter().find(|(program, _)| program == name).map(|(_, ns)| ns)).sum()
}

/// A program's run time and runs, as the kernel accounts them.
#[derive(Debug, PartialEq)]
pub struct Program {
    pub name: String,
    pub time_ns: f64,
    pub runs: f64,
}

impl Program {
    pub fn ns_per_run(&self) -> f64 {
        self.time_ns / self.runs
    }
}

/// What each program of `after` ran since `before` (both from `read`): the programs that ran in
/// between, with their run time and runs in between.
pub fn since(before: &[Program], after: Vec<Program>) -> Vec<Program> {
    after
        .into_iter()
        .filter_map(|program| {
            let earlier = before.iter().find(|b| b.name == program.name);
            let (time_ns, runs) = earlier.map_or((0.0, 0.0), |b| (b.time_ns, b.runs));
            let runs = program.runs - runs;
            (runs > 0.0).then_some(Program { time_ns: program.time_ns - time_ns, runs, ..program })
        })
        .collect()
}

/// kernsight's and the floor's programs that ran, from `bpftool prog show`'s text
/// (`... name ks_dns_egress ... run_time_ns 34536784 run_cnt 200000`).
fn parse(shown: &str) -> Vec<Program> {
    let mut programs = Vec::new();
    for line in shown.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after =
            |key: &str| words.iter().position(|w| *w == key).and_then(|at| words.get(at + 1)).copied();
        let number = |key: &str| after(key).and_then(|n| n.parse::<f64>().ok());
        if let (Some(name), Some(time_ns), Some(runs)) =
            (after("name"), number("run_time_ns"), number("run_cnt"))
            && (name.starts_with("ks_") || name.starts_with("floor_"))
            && runs > 0.0
        {
            programs.push(Program { name: name.to_owned(), time_ns, runs });
        }
    }
    programs
}

#[cfg(test)]
mod tests {
    #[test]
    fn costs_are_read_from_bpftool_lines() {
        let shown = "42: cgroup_skb  name ks_dns_egress  tag 0123456789abcdef  gpl run_time_ns 3000 run_cnt 20\n\
                     \tloaded_at 2026-12-01T14:13:39+0000  uid 0\n\
                     43: tracing  name ks_sys_exit  tag 00  gpl run_time_ns 0 run_cnt 0\n\
                     44: cgroup_skb  name sd_fw_egress  tag 00  gpl run_time_ns 10 run_cnt 1\n\
                     45: cgroup_skb  name floor_skb  tag 00  gpl run_time_ns 900 run_cnt 20\n";
        let programs = super::parse(shown);
        let program = |name: &str, time_ns, runs| super::Program { name: name.to_owned(), time_ns, runs };
        assert_eq!(
            programs,
            vec![program("ks_dns_egress", 3000.0, 20.0), program("floor_skb", 900.0, 20.0)],
            "kernsight's and the floor's programs, not systemd's"
        );
        let costs: Vec<(String, f64)> = programs.into_iter().map(|p| (p.name, p.time_ns / p.runs)).collect();
        assert_eq!(super::total(&costs, &["ks_dns_egress", "floor_skb"]), Some(195.0));
        assert_eq!(super::total(&costs, &["ks_dns_egress", "ks_sys_exit"]), None, "ks_sys_exit never ran");
    }

    #[test]
    fn runs_since_an_earlier_read_are_the_difference() {
        let program = |name: &str, time_ns, runs| super::Program { name: name.to_owned(), time_ns, runs };
        let before = [program("ks_net_egress", 1000.0, 10.0), program("ks_net_ingress", 500.0, 10.0)];
        let after = vec![
            program("ks_net_egress", 6000.0, 110.0),
            program("ks_net_ingress", 500.0, 10.0),
            program("floor_skb", 300.0, 3.0),
        ];
        assert_eq!(
            super::since(&before, after),
            vec![program("ks_net_egress", 5000.0, 100.0), program("floor_skb", 300.0, 3.0)],
            "what ran in between; a program that did not run is left out"
        );
    }
}
