//! The family × kernel table: the guests' `@@ CELL STATUS DETAIL` lines, held against the
//! expectations of `plan.rs`, as markdown.

use std::fmt::Write as _;

use super::plan::{self, FAMILIES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub status: Status,
    pub detail: String,
}

/// One kernel's run: which package, how long, how it ended, and its cells in the order reported.
pub struct KernelResult {
    pub kernel: &'static str,
    pub package: String,
    pub seconds: f64,
    pub problem: Option<String>,
    pub cells: Vec<(String, Cell)>,
}

/// The results in a guest's output.
pub fn parse(output: &str) -> Vec<(String, Cell)> {
    output
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("@@ ")?.splitn(3, ' ');
            let name = parts.next()?.to_owned();
            let status = match parts.next()? {
                "PASS" => Status::Pass,
                "FAIL" => Status::Fail,
                "SKIP" => Status::Skip,
                _ => return None,
            };
            Some((name, Cell { status, detail: parts.next().unwrap_or_default().trim().to_owned() }))
        })
        .collect()
}

impl KernelResult {
    /// The cell, or a failure saying why the guest never reported it.
    pub fn cell(&self, name: &str) -> Cell {
        if let Some((_, cell)) = self.cells.iter().find(|(n, _)| n == name) {
            return cell.clone();
        }
        let detail = match (&self.problem, self.cells.iter().find(|(n, _)| n == "agent")) {
            (_, Some((_, agent))) if name.starts_with("probe:") && agent.status == Status::Fail => {
                format!("the agent did not start: {}", agent.detail)
            }
            (Some(problem), _) => problem.clone(),
            (None, _) => "not reported by the guest".to_owned(),
        };
        Cell { status: Status::Fail, detail }
    }
}

/// A cell's verdict against the expectations.
#[derive(Debug, PartialEq)]
enum Verdict {
    Pass,
    Skip,
    /// Failed, and allowed to today (the reason).
    KnownFailure(&'static str),
    /// Failed although it is expected to pass.
    Regression,
    /// Passed although it is listed as a known failure: the expectation can be tightened.
    UnexpectedPass,
}

fn verdict(kernel: &str, name: &str, cell: &Cell) -> Verdict {
    match (cell.status, plan::known_failure(kernel, name)) {
        (Status::Pass, None) => Verdict::Pass,
        (Status::Pass, Some(_)) => Verdict::UnexpectedPass,
        (Status::Skip, _) => Verdict::Skip,
        (Status::Fail, Some(why)) => Verdict::KnownFailure(why),
        (Status::Fail, None) => Verdict::Regression,
    }
}

pub struct Matrix {
    pub markdown: String,
    /// Cells that failed although expected to pass, as `kernel cell: detail`.
    pub regressions: Vec<String>,
}

/// Rows: boot, check, the agent, every family, the cgroup v2 checks, every test binary run.
fn rows(results: &[KernelResult], test_binaries: &[String]) -> Vec<String> {
    let mut rows: Vec<String> = ["boot", "check", "agent", "ready"].map(String::from).to_vec();
    rows.extend(FAMILIES.iter().map(|f| format!("probe:{f}")));
    for (name, _) in results.iter().flat_map(|r| &r.cells) {
        if (name.starts_with("probe:") || name.starts_with("v2:")) && !rows.contains(name) {
            rows.push(name.clone());
        }
    }
    rows.extend(test_binaries.iter().map(|t| format!("test:{t}")));
    rows
}

fn label(row: &str) -> String {
    match row {
        "boot" => "boots, pure cgroup v2".to_owned(),
        "check" => "`kernsight check`".to_owned(),
        "agent" => "agent starts and serves".to_owned(),
        "ready" => "`/readyz` (every probe attached)".to_owned(),
        _ => match row.split_once(':') {
            Some(("probe", family)) => format!("family `{family}`"),
            Some(("v2", what)) => format!("cgroup v2: {what}"),
            Some(("test", binary)) => format!("tests `{binary}`"),
            _ => row.to_owned(),
        },
    }
}

pub fn matrix(results: &[KernelResult], test_binaries: &[String], total_seconds: f64) -> Matrix {
    let rows = rows(results, test_binaries);
    let mut md = String::new();
    let mut regressions = Vec::new();
    let mut notes = String::new();
    let _ = write!(md, "| | {} |\n|---|", results.iter().map(|r| r.kernel).collect::<Vec<_>>().join(" | "));
    md.push_str(&"---|".repeat(results.len()));
    md.push('\n');
    for row in &rows {
        let _ = write!(md, "| {} |", label(row));
        for result in results {
            let cell = result.cell(row);
            let text = match verdict(result.kernel, row, &cell) {
                Verdict::Pass => "PASS",
                Verdict::Skip => "skip",
                Verdict::KnownFailure(_) => "FAIL (known)",
                Verdict::UnexpectedPass => "PASS (expected FAIL)",
                Verdict::Regression => {
                    regressions.push(format!("{} {row}: {}", result.kernel, cell.detail));
                    "**FAIL**"
                }
            };
            let _ = write!(md, " {text} |");
        }
        md.push('\n');
    }

    for result in results {
        let _ = writeln!(
            notes,
            "\n**{}** (`{}`): guest ran {:.0} s{}",
            result.kernel,
            result.package,
            result.seconds,
            result.problem.as_ref().map(|p| format!("; {p}")).unwrap_or_default()
        );
        for row in &rows {
            let cell = result.cell(row);
            let line = match verdict(result.kernel, row, &cell) {
                Verdict::Pass if row.starts_with("test:") || row == "agent" || row == "boot" => {
                    format!("{}: {}", label(row), cell.detail)
                }
                Verdict::Pass => continue,
                Verdict::Skip => format!("{}: skipped: {}", label(row), cell.detail),
                Verdict::KnownFailure(why) => {
                    format!("{}: known failure ({why}): {}", label(row), cell.detail)
                }
                Verdict::UnexpectedPass => {
                    format!(
                        "{}: passes although listed as a known failure: tighten xtask/src/kernels/plan.rs",
                        label(row)
                    )
                }
                Verdict::Regression => format!("{}: **FAIL**: {}", label(row), cell.detail),
            };
            let _ = writeln!(notes, "- {line}");
        }
    }
    let not_run = test_binaries_not_run();
    md.push_str(&notes);
    if !not_run.is_empty() {
        md.push_str("\nNot run in the guests:\n");
        for line in not_run {
            let _ = writeln!(md, "- {line}");
        }
    }
    let _ = writeln!(md, "\nWhole run (builds, downloads, guests): {total_seconds:.0} s.");
    Matrix { markdown: md, regressions }
}

/// Test binaries and single tests the guests leave out, with the reason.
fn test_binaries_not_run() -> Vec<String> {
    plan::not_run_in_guests().into_iter().map(|(what, why)| format!("{what}: {why}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(kernel: &'static str, output: &str) -> KernelResult {
        KernelResult { kernel, package: "p".into(), seconds: 1.0, problem: None, cells: parse(output) }
    }

    #[test]
    fn parses_result_lines_and_ignores_the_rest() {
        let cells =
            parse("booting\n@@ boot PASS 6.12.1, 2 CPUs\n@@ probe:oom FAIL why: it failed\n@@ bad MAYBE x\n");
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0], ("boot".into(), Cell { status: Status::Pass, detail: "6.12.1, 2 CPUs".into() }));
        assert_eq!(cells[1].1.status, Status::Fail);
    }

    #[test]
    fn a_failure_is_a_regression_unless_expected() {
        let old = result("5.10", "@@ boot PASS x\n@@ agent FAIL kernel too old\n");
        let new = result("6.12", "@@ boot PASS x\n@@ agent PASS serving\n@@ probe:syscalls FAIL verifier\n");
        let matrix = matrix(&[old, new], &["oom".to_owned()], 10.0);
        // 5.10: the agent and everything after it are known failures; 6.12: syscalls, and the
        // families and tests it never reported, are regressions.
        assert!(matrix.regressions.iter().all(|r| r.starts_with("6.12 ")), "{:?}", matrix.regressions);
        assert!(matrix.regressions.iter().any(|r| r == "6.12 probe:syscalls: verifier"));
        assert!(matrix.regressions.iter().any(|r| r.starts_with("6.12 test:oom")));
        assert!(
            matrix.markdown.contains("| family `syscalls` | FAIL (known) | **FAIL** |"),
            "{}",
            matrix.markdown
        );
        assert!(matrix.markdown.contains("the agent did not start: kernel too old"));
    }
}
