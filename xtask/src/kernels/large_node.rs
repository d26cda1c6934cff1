//! `cargo xtask test-kernels --large-node`: the map memory budget on a node with 192 possible
//! CPUs. A guest booted with `-smp 1,maxcpus=192` (one CPU online: TCG stays fast) runs the
//! static agent twice, each time in a memory cgroup of its own:
//! - `table`: the budget and `memory.max` that docs/deploy.md's memory table gives 192 possible
//!   CPUs (what the chart should be given for that node): the agent serves, plans no more than
//!   the budget, lowers no bound (no shrink line) and is not OOM-killed;
//! - `default`: the chart's default budget and memory (sized for 64 CPUs): the agent serves,
//!   logs the one shrink line, runs with fewer cgroup slots, plans within the budget, no OOM.
//!
//! Debian's 6.1 kernel honours `maxcpus`; 6.12's ignores it, and the run says so and fails.

use std::{path::Path, time::Duration};

use super::{download, guest, initramfs, qemu::Arch};
use crate::process::workspace_root;

/// QEMU's CPUs: one online, 192 possible (per-CPU maps are sized by the possible ones).
const SMP: &str = "1,maxcpus=192";
const POSSIBLE: &str = "0-191";
const CPUS: u32 = 192;
/// The chart's default map budget and pod memory (deploy/helm/kernsight/values.yaml).
const DEFAULT_BUDGET_MIB: u64 = 224;
const DEFAULT_MEMORY_MIB: u64 = 352;
/// The default `syscalls.max_cgroups`, which the default budget must lower on this node.
const DEFAULT_MAX_CGROUPS: f64 = 512.0;
const SCRIPT: &str = include_str!("../../guest/large-node.sh");
/// Seconds the guest waits for each agent to serve (14 s measured on 6.1 under TCG).
const AGENT_WAIT: u64 = 300;

/// One agent run: its name in the guest's output, map budget and memory cgroup size.
struct Run {
    name: &'static str,
    budget_mib: u64,
    memory_mib: u64,
}

pub fn run(kernels: &[String], timeout: Duration) -> Result<(), String> {
    let names: Vec<&str> =
        if kernels.is_empty() { vec!["6.1"] } else { kernels.iter().map(String::as_str).collect() };
    let (budget_mib, memory_mib) = table_row(CPUS)?;
    let runs = [
        Run { name: "table", budget_mib, memory_mib },
        Run { name: "default", budget_mib: DEFAULT_BUDGET_MIB, memory_mib: DEFAULT_MEMORY_MIB },
    ];
    let agent = super::build::build_agent()?;
    let settings = format!(
        "AGENT_WAIT={AGENT_WAIT}\nRUNS='{}'\n",
        runs.iter()
            .map(|r| format!("{} {} {}", r.name, r.budget_mib, r.memory_mib << 20))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut failures = Vec::new();
    for name in names {
        let source = download::KERNELS
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| format!("unknown kernel `{name}`"))?;
        let kernel = download::kernel(source)?;
        let dir = workspace_root().join("target/kernel-matrix/large-node").join(kernel.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let guest = initramfs::ScriptGuest {
            busybox: Path::new(initramfs::BUSYBOX),
            agent: &agent,
            executables: &[],
            files: &[],
            script: SCRIPT,
            settings: &settings,
        };
        let image = initramfs::make_for_script(&dir, &kernel, &guest)?;
        eprintln!("xtask: boot {} ({}) with -smp {SMP} under QEMU (TCG)", kernel.name, kernel.release);
        let guest = guest::boot(&dir, &kernel.vmlinuz, &image, timeout, SMP, Arch::X86)?;
        eprintln!(
            "xtask: {}: guest ran {:.0} s; console and output in {}",
            kernel.name,
            guest.seconds,
            dir.display()
        );
        let found = Output(&guest.output);
        let mut problems: Vec<String> = guest.problem.into_iter().collect();
        problems.extend(check(&found, &runs));
        println!("{}", summary(kernel.name, &found, &runs));
        failures.extend(problems.into_iter().map(|p| format!("{}: {p}", kernel.name)));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("the large-node check failed:\n  {}", failures.join("\n  ")))
    }
}

/// The budget (MiB) and pod memory limit (MiB) docs/deploy.md's memory table gives `cpus`.
fn table_row(cpus: u32) -> Result<(u64, u64), String> {
    let path = workspace_root().join("docs/deploy.md");
    let docs = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    parse_table_row(&docs, cpus)
        .ok_or_else(|| format!("{}: no row for {cpus} possible CPUs in the memory table", path.display()))
}

/// `| 192 | 550.0 MiB | 560 | 688Mi | 213 |` in the marked memory table: (560, 688).
fn parse_table_row(docs: &str, cpus: u32) -> Option<(u64, u64)> {
    let table = docs.split("<!-- map memory table").nth(1)?.split("<!-- end of map memory table").next()?;
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.get(1)?.parse::<u32>().ok()? != cpus {
            return None;
        }
        Some((cells.get(3)?.parse().ok()?, cells.get(4)?.strip_suffix("Mi")?.parse().ok()?))
    })
}

/// The guest's `@@ RUN KEY VALUE` lines.
struct Output<'a>(&'a str);

impl Output<'_> {
    fn get(&self, run: &str, key: &str) -> Option<&str> {
        self.0.lines().find_map(|line| {
            let rest = line.strip_prefix("@@ ")?.strip_prefix(run)?.strip_prefix(' ')?;
            let (k, value) = rest.split_once(' ').unwrap_or((rest, ""));
            (k == key).then_some(value.trim())
        })
    }

    fn number(&self, run: &str, key: &str) -> Option<f64> {
        self.get(run, key)?.parse().ok()
    }
}

/// What must hold; each failure is one line.
fn check(out: &Output, runs: &[Run]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    let possible = out.get("guest", "possible").unwrap_or("nothing");
    expect(
        possible == POSSIBLE,
        format!("possible CPUs {possible}, not {POSSIBLE}: this kernel ignores maxcpus"),
    );
    for run in runs {
        let name = run.name;
        let budget = (run.budget_mib << 20) as f64;
        expect(out.get(name, "served") == Some("yes"), format!("{name}: /metrics not served"));
        let memory_max = out.number(name, "memory_max");
        expect(
            memory_max == Some((run.memory_mib << 20) as f64),
            format!("{name}: memory.max {memory_max:?}, not {} MiB", run.memory_mib),
        );
        let planned = out.number(name, "kernsight_bpf_map_planned_bytes");
        expect(
            planned.is_some_and(|p| p > 0.0 && p <= budget),
            format!("{name}: planned {planned:?} bytes, budget {budget}"),
        );
        let reported = out.number(name, "kernsight_bpf_map_budget_bytes");
        expect(
            reported == Some(budget),
            format!("{name}: kernsight_bpf_map_budget_bytes {reported:?}, not {budget}"),
        );
        let kills = out.number(name, "oom_kills");
        expect(kills == Some(0.0), format!("{name}: {kills:?} OOM kills in its cgroup"));
    }
    // The table's budget keeps every default bound; the chart's default lowers them, in one line.
    let table = ("table", out.number("table", "shrink_lines"), out.get("table", "max_cgroups"));
    expect(
        table.1 == Some(0.0) && table.2 == Some(""),
        format!("table: shrink lines {:?}, max_cgroups {:?}: the budget should fit", table.1, table.2),
    );
    let lines = out.number("default", "shrink_lines");
    expect(lines == Some(1.0), format!("default: {lines:?} shrink lines, not 1"));
    let slots = out.number("default", "max_cgroups");
    expect(
        slots.is_some_and(|n| n < DEFAULT_MAX_CGROUPS),
        format!("default: syscalls.max_cgroups {slots:?}, not lowered"),
    );
    problems
}

/// The numbers, as a Markdown table.
fn summary(kernel: &str, out: &Output, runs: &[Run]) -> String {
    let mib = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} MiB", v / 1048576.0));
    let mut text = format!(
        "large node, {kernel} ({}), possible CPUs {}, online {}\n\n\
         | run | budget | memory.max | served after | planned | charged (fdinfo) | memory.current | max_cgroups | shrink lines | OOM kills |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        out.get("guest", "release").unwrap_or("?"),
        out.get("guest", "possible").unwrap_or("?"),
        out.get("guest", "online").unwrap_or("?"),
    );
    for run in runs {
        let n = run.name;
        let slots = out.get(n, "max_cgroups").filter(|s| !s.is_empty()).unwrap_or("512 (default)");
        text.push_str(&format!(
            "| {n} | {} MiB | {} MiB | {} s | {} | {} | {} | {slots} | {} | {} |\n",
            run.budget_mib,
            run.memory_mib,
            out.get(n, "seconds").unwrap_or("-"),
            mib(out.number(n, "kernsight_bpf_map_planned_bytes")),
            mib(out.number(n, "charged_bytes")),
            mib(out.number(n, "memory_current")),
            out.get(n, "shrink_lines").unwrap_or("-"),
            out.get(n, "oom_kills").unwrap_or("-"),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_memory_table() {
        let docs = "x\n<!-- map memory table: t -->\n| possible CPUs | a | b | c | d |\n|---:|---:|\n\
                    | 64 | 194.1 MiB | 208 | 336Mi | 512 |\n| 192 | 550.0 MiB | 560 | 688Mi | 213 |\n\
                    <!-- end of map memory table -->\n| 192 | 1 | 2 | 3Mi | 4 |\n";
        assert_eq!(parse_table_row(docs, 192), Some((560, 688)));
        assert_eq!(parse_table_row(docs, 64), Some((208, 336)));
        assert_eq!(parse_table_row(docs, 96), None);
    }

    #[test]
    fn the_repository_table_has_a_row_for_the_large_node() {
        let (budget, memory) = table_row(CPUS).unwrap();
        assert_eq!(memory, budget + 128, "the pod's limit is the budget plus 128 MiB");
    }

    #[test]
    fn checks_fail_on_a_kernel_that_ignores_maxcpus_and_on_a_missing_shrink_line() {
        let runs = [
            Run { name: "table", budget_mib: 560, memory_mib: 688 },
            Run { name: "default", budget_mib: 208, memory_mib: 336 },
        ];
        let good = "@@ guest possible 0-191\n\
            @@ table memory_max 721420288\n@@ table served yes\n@@ table kernsight_bpf_map_planned_bytes 574000000\n\
            @@ table kernsight_bpf_map_budget_bytes 587202560\n@@ table oom_kills 0\n@@ table shrink_lines 0\n@@ table max_cgroups \n\
            @@ default memory_max 352321536\n@@ default served yes\n@@ default kernsight_bpf_map_planned_bytes 217702584\n\
            @@ default kernsight_bpf_map_budget_bytes 218103808\n@@ default oom_kills 0\n@@ default shrink_lines 1\n\
            @@ default max_cgroups 215\n";
        assert_eq!(check(&Output(good), &runs), Vec::<String>::new());
        let ignored = good.replace("0-191", "0");
        assert_eq!(check(&Output(&ignored), &runs).len(), 1);
        let silent = good.replace("default shrink_lines 1", "default shrink_lines 0");
        assert_eq!(check(&Output(&silent), &runs).len(), 1);
        let over = good.replace("planned_bytes 217702584", "planned_bytes 300000000");
        assert_eq!(check(&Output(&over), &runs).len(), 1);
    }
}
