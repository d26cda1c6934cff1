//! The family × kernel table: the guests' `@@ CELL STATUS DETAIL` lines and the integration
//! tests' libtest output (lines prefixed `@| `), held against the expectations of `plan.rs`, as
//! markdown. A row per area of the tests; a verdict per test.

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

/// One test of the integration binary as a guest ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// Full name, `oom::the_kill_is_attributed_...`.
    pub name: String,
    pub status: Status,
    /// One line: the panic message of a failure.
    pub detail: String,
    /// What the failed test printed (libtest's `---- NAME stdout ----` section).
    pub output: String,
}

/// One kernel's run: which package, how long, how it ended, its cells in the order reported and
/// its tests.
pub struct KernelResult {
    pub kernel: &'static str,
    pub package: String,
    pub seconds: f64,
    pub problem: Option<String>,
    /// How the boots before this one failed by software emulation's fault (`guest.rs`).
    pub faulted_boots: Vec<String>,
    pub cells: Vec<(String, Cell)>,
    pub tests: Vec<TestResult>,
}

/// What the guests ran of the integration tests: each area with its tests, or why none ran.
pub type Areas = Result<Vec<(String, Vec<String>)>, String>;

/// The result cells of a guest's output (`@@ ` lines).
pub fn parse_cells(output: &str) -> Vec<(String, Cell)> {
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

/// The tests in the libtest output the guest forwarded (`@| ` lines), in the order they ran. A
/// test that started and never finished (its area timed out) is a failure that says so.
pub fn parse_tests(output: &str) -> Vec<TestResult> {
    let lines = output.lines().filter_map(|line| line.strip_prefix("@| "));
    let mut tests: Vec<TestResult> = Vec::new();
    let mut running: Option<String> = None;
    let mut section: Option<(String, Vec<&str>)> = None;
    let settle = |tests: &mut Vec<TestResult>, name: String, status: Status| {
        tests.push(TestResult { name, status, detail: String::new(), output: String::new() });
    };
    for line in lines {
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            finish_section(&mut tests, section.take());
            section = Some((name.to_owned(), Vec::new()));
            continue;
        }
        if let Some((_, text)) = &mut section {
            if line == "failures:" || line.starts_with("test result:") {
                finish_section(&mut tests, section.take());
            } else {
                text.push(line);
            }
            continue;
        }
        if let Some((name, result)) = line.strip_prefix("test ").and_then(|l| l.split_once(" ...")) {
            if let Some(previous) = running.take() {
                settle(&mut tests, previous, Status::Fail);
            }
            match outcome(result) {
                Some(status) => settle(&mut tests, name.to_owned(), status),
                None => running = Some(name.to_owned()),
            }
        } else if let Some(status) = outcome(line) {
            // A result printed after output the test let through (its children's stderr).
            if let Some(name) = running.take() {
                settle(&mut tests, name, status);
            }
        }
    }
    finish_section(&mut tests, section);
    if let Some(name) = running {
        tests.push(TestResult {
            name,
            status: Status::Fail,
            detail: "still running when its area's time ran out".to_owned(),
            output: String::new(),
        });
    }
    tests
}

fn outcome(result: &str) -> Option<Status> {
    match result.trim() {
        "ok" => Some(Status::Pass),
        "FAILED" => Some(Status::Fail),
        r if r.starts_with("ignored") => Some(Status::Skip),
        _ => None,
    }
}

/// A failure's captured output, and its panic message as the detail.
fn finish_section(tests: &mut [TestResult], section: Option<(String, Vec<&str>)>) {
    let Some((name, text)) = section else { return };
    let Some(test) = tests.iter_mut().rev().find(|t| t.name == name) else { return };
    let message = text
        .iter()
        .position(|l| l.contains("panicked at"))
        .and_then(|at| text.get(at + 1))
        .or_else(|| text.iter().find(|l| !l.trim().is_empty()));
    test.detail = message.map(|m| one_line(m, 300)).unwrap_or_default();
    test.output = text.join("\n");
}

fn one_line(text: &str, max: usize) -> String {
    let text = text.trim().replace('|', "/");
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
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

    /// The test, or a failure saying why it has no result.
    fn test(&self, area: &str, name: &str) -> TestResult {
        if let Some(test) = self.tests.iter().find(|t| t.name == name) {
            return test.clone();
        }
        let area = self.cell(&format!("area:{area}"));
        TestResult {
            name: name.to_owned(),
            status: Status::Fail,
            detail: format!("no result: its area's run ended first ({})", area.detail),
            output: String::new(),
        }
    }
}

/// A cell's or a test's verdict against the expectations.
#[derive(Debug, PartialEq)]
enum Verdict {
    Pass,
    Skip,
    /// Failed, and allowed to today (the reason).
    KnownFailure(&'static str),
    /// Failed although it is expected to pass.
    Regression,
    /// Passed although an expectation names it as failing: the expectation can be tightened.
    UnexpectedPass,
}

fn verdict(kernel: &str, name: &str, status: Status, output: &str) -> Verdict {
    match status {
        Status::Pass if plan::expected_to_fail(kernel, name) => Verdict::UnexpectedPass,
        Status::Pass => Verdict::Pass,
        Status::Skip => Verdict::Skip,
        Status::Fail => match plan::known_failure(kernel, name, output) {
            Some((why, _)) => Verdict::KnownFailure(why),
            None => Verdict::Regression,
        },
    }
}

pub struct Matrix {
    pub markdown: String,
    /// Cells and tests that failed although expected to pass, and plans that no longer match
    /// the agent, as `kernel cell: detail`.
    pub regressions: Vec<String>,
}

/// Rows before the tests: boot, check, the agent, every family, the cgroup v2 checks.
fn rows(results: &[KernelResult]) -> Vec<String> {
    let mut rows: Vec<String> = ["boot", "check", "agent", "ready"].map(String::from).to_vec();
    rows.extend(FAMILIES.iter().map(|f| format!("probe:{f}")));
    for (name, _) in results.iter().flat_map(|r| &r.cells) {
        if (name.starts_with("probe:") || name.starts_with("v2:")) && !rows.contains(name) {
            rows.push(name.clone());
        }
    }
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
            Some(("area", area)) => format!("tests `{area}::`"),
            _ => row.to_owned(),
        },
    }
}

/// Where a guest that served reports other families than `plan::FAMILIES`: the plan must follow
/// the agent's registry.
/// " (booted 2 times; the earlier boot: why)" when software emulation faulted before this boot.
fn earlier_boots(faulted: &[String]) -> String {
    match faulted {
        [] => String::new(),
        [only] => format!(" (booted twice; the first boot: {only})"),
        all => format!(" (booted {} times; the earlier boots: {})", all.len() + 1, all.join("; ")),
    }
}

fn registry_mismatch(result: &KernelResult) -> Option<String> {
    if result.cell("agent").status != Status::Pass {
        return None;
    }
    let reported: Vec<&str> =
        result.cells.iter().filter_map(|(name, _)| name.strip_prefix("probe:")).collect();
    let missing: Vec<&str> = FAMILIES.iter().copied().filter(|f| !reported.contains(f)).collect();
    let extra: Vec<&str> = reported.iter().copied().filter(|f| !FAMILIES.contains(f)).collect();
    (!missing.is_empty() || !extra.is_empty()).then(|| {
        format!(
            "{} registry: the agent reports families {extra:?} that xtask/src/kernels/plan.rs FAMILIES \
             lacks, and not {missing:?} that it lists: make FAMILIES follow bpf::FAMILIES",
            result.kernel
        )
    })
}

/// Per-test verdicts of one area on one kernel.
struct AreaOutcome {
    passed: usize,
    skipped: Vec<String>,
    known: Vec<(String, &'static str, String)>,
    regressions: Vec<(String, String)>,
    unexpected_passes: Vec<String>,
    total: usize,
}

fn area_outcome(result: &KernelResult, area: &str, tests: &[String]) -> AreaOutcome {
    let mut outcome = AreaOutcome {
        passed: 0,
        skipped: Vec::new(),
        known: Vec::new(),
        regressions: Vec::new(),
        unexpected_passes: Vec::new(),
        total: tests.len(),
    };
    for name in tests {
        let test = result.test(area, name);
        let text = format!("{}\n{}", test.detail, test.output);
        match verdict(result.kernel, &format!("test:{name}"), test.status, &text) {
            Verdict::Pass => outcome.passed += 1,
            Verdict::Skip => outcome.skipped.push(name.clone()),
            Verdict::KnownFailure(why) => outcome.known.push((name.clone(), why, test.detail)),
            Verdict::Regression => outcome.regressions.push((name.clone(), test.detail)),
            Verdict::UnexpectedPass => {
                outcome.passed += 1;
                outcome.unexpected_passes.push(name.clone());
            }
        }
    }
    outcome
}

impl AreaOutcome {
    fn cell(&self) -> String {
        if self.passed == self.total && self.unexpected_passes.is_empty() {
            return "PASS".to_owned();
        }
        let mut parts = vec![format!("{}/{} pass", self.passed, self.total)];
        if !self.skipped.is_empty() {
            parts.push(format!("{} skip", self.skipped.len()));
        }
        if !self.known.is_empty() {
            parts.push(format!("{} FAIL (known)", self.known.len()));
        }
        if !self.regressions.is_empty() {
            parts.push(format!("**{} FAIL**", self.regressions.len()));
        }
        if !self.unexpected_passes.is_empty() {
            parts.push(format!("{} PASS (expected FAIL)", self.unexpected_passes.len()));
        }
        parts.join(", ")
    }
}

pub fn matrix(results: &[KernelResult], areas: &Areas, stale_plan: &[String], total_seconds: f64) -> Matrix {
    let rows = rows(results);
    let mut md = String::new();
    let mut regressions: Vec<String> = stale_plan
        .iter()
        .map(|what| {
            format!("xtask/src/kernels/plan.rs names {what}, which the integration tests no longer have")
        })
        .collect();
    regressions.extend(results.iter().filter_map(registry_mismatch));
    let mut notes: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "\n**{}** (`{}`): guest ran {:.0} s{}{}\n",
                r.kernel,
                r.package,
                r.seconds,
                r.problem.as_ref().map(|p| format!("; {p}")).unwrap_or_default(),
                earlier_boots(&r.faulted_boots)
            )
        })
        .collect();
    let _ = write!(md, "| | {} |\n|---|", results.iter().map(|r| r.kernel).collect::<Vec<_>>().join(" | "));
    md.push_str(&"---|".repeat(results.len()));
    md.push('\n');
    // Known failures of rows with one reason and one detail are one note (the families of a
    // kernel the agent refuses).
    let mut grouped: Vec<Vec<(&'static str, String, Vec<String>)>> = vec![Vec::new(); results.len()];
    for row in &rows {
        let _ = write!(md, "| {} |", label(row));
        for ((result, note), grouped) in results.iter().zip(&mut notes).zip(&mut grouped) {
            let cell = result.cell(row);
            let (text, line) = match verdict(result.kernel, row, cell.status, &cell.detail) {
                Verdict::Pass => ("PASS", (row == "agent" || row == "boot").then(|| cell.detail.clone())),
                Verdict::Skip => ("skip", Some(format!("skipped: {}", cell.detail))),
                Verdict::KnownFailure(why) => {
                    match grouped.iter_mut().find(|(w, detail, _)| *w == why && *detail == cell.detail) {
                        Some((_, _, labels)) => labels.push(label(row)),
                        None => grouped.push((why, cell.detail.clone(), vec![label(row)])),
                    }
                    ("FAIL (known)", None)
                }
                Verdict::UnexpectedPass => (
                    "PASS (expected FAIL)",
                    Some(
                        "passes although listed as a known failure: tighten xtask/src/kernels/plan.rs"
                            .to_owned(),
                    ),
                ),
                Verdict::Regression => {
                    regressions.push(format!("{} {row}: {}", result.kernel, cell.detail));
                    ("**FAIL**", Some(format!("**FAIL**: {}", cell.detail)))
                }
            };
            let _ = write!(md, " {text} |");
            if let Some(line) = line {
                let _ = writeln!(note, "- {}: {line}", label(row));
            }
        }
        md.push('\n');
    }

    for (note, grouped) in notes.iter_mut().zip(grouped) {
        for (why, detail, labels) in grouped {
            let _ = writeln!(note, "- {}: known failure ({why}): {detail}", labels.join(", "));
        }
    }

    match areas {
        Err(why) => {
            let _ = writeln!(md, "| integration tests |{}", " **FAIL** |".repeat(results.len()));
            regressions.push(format!("integration tests: {why}"));
        }
        Ok(areas) => {
            for (area, tests) in areas {
                let _ = write!(md, "| tests `{area}::` ({}) |", tests.len());
                for (result, note) in results.iter().zip(&mut notes) {
                    let outcome = area_outcome(result, area, tests);
                    let _ = write!(md, " {} |", outcome.cell());
                    area_notes(note, result, area, &outcome, &mut regressions);
                }
                md.push('\n');
            }
        }
    }

    for note in notes {
        md.push_str(&note);
    }
    md.push_str("\nNot run in the guests:\n");
    for (what, why) in plan::not_run_in_guests() {
        let _ = writeln!(md, "- {what}: {why}");
    }
    let _ = writeln!(md, "\nWhole run (builds, downloads, guests): {total_seconds:.0} s.");
    Matrix { markdown: md, regressions }
}

/// One kernel's notes on an area: how long it ran, each failure with its verdict.
fn area_notes(
    note: &mut String,
    result: &KernelResult,
    area: &str,
    outcome: &AreaOutcome,
    regressions: &mut Vec<String>,
) {
    let run = result.cell(&format!("area:{area}"));
    let _ =
        writeln!(note, "- tests `{area}::`: {} of {} passed ({})", outcome.passed, outcome.total, run.detail);
    // Known failures with one reason are one line: on a kernel the agent refuses, that is most.
    let mut reasons: Vec<&'static str> = Vec::new();
    for (_, why, _) in &outcome.known {
        if !reasons.contains(why) {
            reasons.push(why);
        }
    }
    for why in reasons {
        let tests: Vec<&(String, &str, String)> =
            outcome.known.iter().filter(|(_, w, _)| *w == why).collect();
        if let [(name, _, detail)] = tests[..] {
            let _ = writeln!(note, "  - `{name}`: known failure ({why}): {detail}");
        } else {
            let names: Vec<&str> = tests.iter().map(|(name, _, _)| name.as_str()).collect();
            let _ = writeln!(note, "  - known failures ({why}): {}", names.join(", "));
        }
    }
    for (name, detail) in &outcome.regressions {
        let _ = writeln!(note, "  - `{name}`: **FAIL**: {detail}");
        regressions.push(format!("{} test:{name}: {detail}", result.kernel));
    }
    for name in &outcome.skipped {
        let _ = writeln!(note, "  - `{name}`: ignored by the test binary (`#[ignore]`)");
    }
    for name in &outcome.unexpected_passes {
        let _ = writeln!(note, "  - `{name}`: passes although listed as a known failure: tighten plan.rs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(kernel: &'static str, output: &str) -> KernelResult {
        KernelResult {
            kernel,
            package: "p".into(),
            seconds: 1.0,
            problem: None,
            faulted_boots: Vec::new(),
            cells: parse_cells(output),
            tests: parse_tests(output),
        }
    }

    #[test]
    fn parses_result_lines_and_ignores_the_rest() {
        let cells = parse_cells(
            "booting\n@@ boot PASS 6.12.1, 2 CPUs\n@@ probe:oom FAIL why: it failed\n@@ bad MAYBE x\n",
        );
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0], ("boot".into(), Cell { status: Status::Pass, detail: "6.12.1, 2 CPUs".into() }));
        assert_eq!(cells[1].1.status, Status::Fail);
    }

    const LIBTEST: &str = "\
@| 
@| running 3 tests
@| test oom::a ... ok
@| test oom::b ... FAILED
@| test oom::c ... ignored, slow
@| 
@| failures:
@| 
@| ---- oom::b stdout ----
@| 
@| thread 'oom::b' panicked at agent/tests/integration/oom.rs:12:5:
@| the hog holds 0 bytes | of anonymous memory
@| note: run with `RUST_BACKTRACE=1`
@| 
@| 
@| failures:
@|     oom::b
@| 
@| test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 3.2s
@| 
@@ area:oom FAIL 4s: exit 101
@| 
@| running 2 tests
@| test trace_oom::d ... cleanup: killing process 12
@| ok
@| test trace_oom::e ... 
@@ area:trace_oom FAIL 600s: timed out after 600s
";

    #[test]
    fn reads_each_tests_result_and_the_panic_message_of_a_failure() {
        let tests = parse_tests(LIBTEST);
        let summary: Vec<(&str, Status)> = tests.iter().map(|t| (t.name.as_str(), t.status)).collect();
        assert_eq!(
            summary,
            [
                ("oom::a", Status::Pass),
                ("oom::b", Status::Fail),
                ("oom::c", Status::Skip),
                ("trace_oom::d", Status::Pass),
                ("trace_oom::e", Status::Fail),
            ]
        );
        assert_eq!(tests[1].detail, "the hog holds 0 bytes / of anonymous memory");
        assert!(tests[1].output.contains("RUST_BACKTRACE"));
        assert_eq!(tests[4].detail, "still running when its area's time ran out");
    }

    const RESTART: &str = "restart::counters_continue_across_kill_9_and_restart";

    /// A 5.10 guest that reports every row: the v2 memory check fails (known there), `restart`
    /// fails as given.
    fn full_guest(restart_failure: &str) -> String {
        let mut out = String::from("@@ boot PASS x\n@@ check PASS exit 0\n@@ agent PASS serving\n");
        out.push_str("@@ ready PASS 200\n");
        for family in FAMILIES {
            out.push_str(&format!("@@ probe:{family} PASS attached\n"));
        }
        out.push_str("@@ v2:memory FAIL shmem 8 KiB short\n");
        out.push_str("@| test cli::a ... ok\n");
        if restart_failure.is_empty() {
            out.push_str(&format!("@| test {RESTART} ... ok\n"));
        } else {
            out.push_str(&format!("@| test {RESTART} ... FAILED\n@| ---- {RESTART} stdout ----\n"));
            out.push_str(&format!(
                "@| thread '{RESTART}' panicked at x:\n@| {restart_failure}\n@| failures:\n"
            ));
        }
        out
    }

    #[test]
    fn a_failure_is_a_regression_unless_expected() {
        let known = result("5.10", &full_guest(""));
        let new = result(
            "6.12",
            "@@ boot PASS x\n@@ agent PASS serving\n@@ probe:syscalls FAIL verifier\n@| test cli::a ... ok\n",
        );
        let areas: Areas = Ok(vec![
            ("cli".to_owned(), vec!["cli::a".to_owned()]),
            ("restart".to_owned(), vec![RESTART.to_owned()]),
        ]);
        let matrix = matrix(&[known, new], &areas, &[], 10.0);
        // 5.10: the v2 memory check is a known failure; 6.12: syscalls, the families it did not
        // report, and the test it has no result of are regressions.
        assert!(matrix.regressions.iter().all(|r| r.starts_with("6.12 ")), "{:?}", matrix.regressions);
        assert!(matrix.regressions.iter().any(|r| r == "6.12 probe:syscalls: verifier"));
        assert!(matrix.regressions.iter().any(|r| r.starts_with(&format!("6.12 test:{RESTART}: no result"))));
        assert!(
            matrix.regressions.iter().any(|r| r.starts_with("6.12 registry:")),
            "{:?}",
            matrix.regressions
        );
        let md = &matrix.markdown;
        assert!(md.contains("| family `syscalls` | PASS | **FAIL** |"), "{md}");
        assert!(md.contains("| family `packet_drops` | PASS |"), "{md}");
        assert!(md.contains("| cgroup v2: memory | FAIL (known) |"), "{md}");
        assert!(md.contains("| tests `cli::` (1) | PASS | PASS |"), "{md}");
        assert!(md.contains("| tests `restart::` (1) | PASS | 0/1 pass, **1 FAIL** |"), "{md}");
    }

    #[test]
    fn a_kernel_with_known_failures_fails_any_other_cell() {
        let guest = full_guest("assertion failed: counters continue");
        let areas: Areas = Ok(vec![("restart".to_owned(), vec![RESTART.to_owned()])]);
        let matrix = matrix(&[result("5.10", &guest)], &areas, &[], 1.0);
        assert_eq!(matrix.regressions, [format!("5.10 test:{RESTART}: assertion failed: counters continue")]);
    }

    #[test]
    fn the_table_says_how_many_boots_emulation_cost() {
        let areas: Areas = Ok(Vec::new());
        let mut guest = result("6.12", &full_guest(""));
        guest.faulted_boots = vec!["int3".into(), "stalled".into()];
        let markdown = matrix(&[guest], &areas, &[], 1.0).markdown;
        assert!(markdown.contains("(booted 3 times; the earlier boots: int3; stalled)"), "{markdown}");
        assert_eq!(earlier_boots(&["int3".into()]), " (booted twice; the first boot: int3)");
        assert_eq!(earlier_boots(&[]), "");
    }
}
