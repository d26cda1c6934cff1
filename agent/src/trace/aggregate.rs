//! Aggregations of events in user space, bpftrace-style: counts by a tuple of fields, sums,
//! and log2 histograms (drawn as bpftrace draws `hist()`), optionally per key.

use std::{collections::HashMap, fmt::Write as _};

use crate::kernel::value::{Event, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// `--count-by`: the key fields (none: one row for everything).
    pub by: Vec<String>,
    /// `--sum`
    pub sum: Option<String>,
    /// `--hist`
    pub hist: Option<String>,
    /// `--top`: rows kept, by count (or sum), highest first.
    pub top: Option<usize>,
}

impl Spec {
    pub fn is_active(&self) -> bool {
        !self.by.is_empty() || self.sum.is_some() || self.hist.is_some()
    }

    /// The fields it reads (to check against the trace's fields before starting).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.by.iter().map(String::as_str).chain(self.sum.as_deref()).chain(self.hist.as_deref())
    }
}

/// Log2 buckets: index 0 holds negative values, 1 holds 0, `b + 2` holds `[2^b, 2^(b+1))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; 66],
}

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: [0; 66] }
    }
}

impl Histogram {
    pub fn add(&mut self, value: i128) {
        let index = match value {
            v if v < 0 => 0,
            0 => 1,
            v => {
                let v = u64::try_from(v).unwrap_or(u64::MAX);
                (63 - v.leading_zeros() as usize) + 2
            }
        };
        self.buckets[index] += 1;
    }

    /// bpftrace's drawing: `[lo, hi)` with K/M/G suffixes, the count, and a bar of `@` scaled to
    /// the largest bucket, from the first to the last non-empty bucket.
    pub fn draw(&self) -> String {
        let mut out = String::new();
        let Some(first) = self.buckets.iter().position(|&c| c > 0) else { return out };
        let last = self.buckets.iter().rposition(|&c| c > 0).unwrap_or(first);
        let max = self.buckets.iter().copied().max().unwrap_or(1).max(1);
        for (index, &count) in self.buckets.iter().enumerate().take(last + 1).skip(first) {
            let label = match index {
                0 => "(..., 0)".to_owned(),
                1 => "[0]".to_owned(),
                2 => "[1]".to_owned(),
                b => format!("[{}, {})", short(1u128 << (b - 2)), short(1u128 << (b - 1))),
            };
            let width = (count as u128 * 52 / max as u128) as usize;
            let _ = writeln!(out, "{label:<16}{count:>8} |{:<52}|", "@".repeat(width));
        }
        out
    }
}

/// 1024 → 1K, 1048576 → 1M, as bpftrace labels buckets.
fn short(n: u128) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let mut n = n;
    let mut unit = 0;
    while n >= 1024 && n.is_multiple_of(1024) && unit < UNITS.len() - 1 {
        n /= 1024;
        unit += 1;
    }
    format!("{n}{}", UNITS[unit])
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub count: u64,
    pub sum: i128,
    pub hist: Histogram,
}

/// Distinct keys an interval holds; the events of further keys count in one row of their own,
/// shown last as `OTHER_KEYS`. Keys are workload text (paths, comms, arguments): a workload that
/// opens a million distinct paths a second under `--count-by path` would grow the table by
/// hundreds of megabytes a second. At this bound the table is some 40 MiB.
pub const MAX_KEYS: usize = 65_536;

/// How the row of the keys past `MAX_KEYS` is labelled in a table (JSON marks it
/// `"other_keys": true`, which no key can forge).
pub const OTHER_KEYS: &str = "(other keys)";

/// The rows of one interval.
#[derive(Debug, Default)]
pub struct Aggregator {
    spec: Spec,
    cells: HashMap<Vec<Value>, Cell>,
    /// The events of keys past `MAX_KEYS`.
    other: Option<Cell>,
}

impl Aggregator {
    pub fn new(spec: Spec) -> Self {
        Self { spec, cells: HashMap::new(), other: None }
    }

    /// The cell of `key`, or the other keys' once `MAX_KEYS` are held.
    fn cell(&mut self, key: Vec<Value>) -> &mut Cell {
        if self.cells.len() >= MAX_KEYS && !self.cells.contains_key(&key) {
            return self.other.get_or_insert_with(Cell::default);
        }
        self.cells.entry(key).or_default()
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn add(&mut self, event: &Event) {
        let key: Vec<Value> =
            self.spec.by.iter().map(|f| event.get(f).cloned().unwrap_or_else(Value::empty)).collect();
        let number =
            |field: &Option<String>| field.as_deref().and_then(|f| event.get(f)).and_then(Value::as_i128);
        let (sum, hist) = (number(&self.spec.sum), number(&self.spec.hist));
        let cell = self.cell(key);
        cell.count += 1;
        if let Some(v) = sum {
            cell.sum += v;
        }
        if let Some(v) = hist {
            cell.hist.add(v);
        }
    }

    /// Adds `count` to a key directly (counts made in the kernel).
    pub fn add_count(&mut self, key: Vec<Value>, count: u64) {
        self.cell(key).count += count;
    }

    /// Adds a histogram made in the kernel: `buckets[0]` counts 0, `buckets[b]` counts
    /// `[2^(b-1), 2^b)`.
    pub fn add_histogram(&mut self, key: Vec<Value>, buckets: &[u64]) {
        let cell = self.cell(key);
        for (b, &count) in buckets.iter().enumerate() {
            if let Some(slot) = cell.hist.buckets.get_mut(b + 1) {
                *slot += count;
            }
            cell.count += count;
        }
    }

    /// The rows, by sum (with `--sum`) or count, highest first, cut to `--top`.
    pub fn rows(&self) -> Vec<(&Vec<Value>, &Cell)> {
        let mut rows: Vec<(&Vec<Value>, &Cell)> = self.cells.iter().collect();
        let by_sum = self.spec.sum.is_some();
        rows.sort_by(|a, b| {
            let order = if by_sum { b.1.sum.cmp(&a.1.sum) } else { b.1.count.cmp(&a.1.count) };
            order.then_with(|| a.0.cmp(b.0))
        });
        rows.truncate(self.spec.top.unwrap_or(usize::MAX));
        rows
    }

    /// The other keys' row (`MAX_KEYS`), when there was one.
    pub fn other_keys(&self) -> Option<&Cell> {
        self.other.as_ref()
    }

    pub fn clear(&mut self) {
        self.cells.clear();
        self.other = None;
    }

    /// `rows`, then the other keys' row (no key), if any.
    fn printed(&self) -> Vec<(Option<&Vec<Value>>, &Cell)> {
        let rows = self.rows().into_iter().map(|(key, cell)| (Some(key), cell));
        rows.chain(self.other.as_ref().map(|cell| (None, cell))).collect()
    }

    /// An aligned table (`--count-by`, `--sum`) and/or histograms (`--hist`), one per key.
    pub fn render(&self) -> String {
        let rows = self.printed();
        let mut out = String::new();
        if let Some(field) = &self.spec.hist {
            for (key, cell) in &rows {
                // Keys are workload text (paths, comm): escaped, as every table cell is.
                let key: Vec<String> = match key {
                    Some(key) => {
                        key.iter().map(|v| crate::terminal::escape(&v.to_string()).into_owned()).collect()
                    }
                    None => vec![OTHER_KEYS.to_owned()],
                };
                let name = if key.is_empty() {
                    format!("@{field}")
                } else {
                    format!("@{field}[{}]", key.join(", "))
                };
                let _ = writeln!(out, "{name}:\n{}", cell.hist.draw());
            }
            out.push_str(&self.other_keys_note());
            return out;
        }
        let mut header: Vec<String> = self.spec.by.iter().map(|f| f.to_uppercase()).collect();
        header.push("COUNT".into());
        if let Some(sum) = &self.spec.sum {
            header.push(format!("SUM({sum})"));
        }
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|(key, cell)| {
                let mut row: Vec<String> = match key {
                    Some(key) => key
                        .iter()
                        .map(|v| match v {
                            Value::Str(s) if s.is_empty() => "-".to_owned(),
                            v => v.to_string(),
                        })
                        .collect(),
                    None => std::iter::once(OTHER_KEYS.to_owned())
                        .chain(std::iter::repeat_n("-".to_owned(), self.spec.by.len().saturating_sub(1)))
                        .collect(),
                };
                row.push(cell.count.to_string());
                if self.spec.sum.is_some() {
                    row.push(cell.sum.to_string());
                }
                row
            })
            .collect();
        out.push_str(&super::output::align(&header, &table));
        out.push_str(&self.other_keys_note());
        out
    }

    /// A line under a table with the other keys' row: a key may read `(other keys)` too, and
    /// this says which row is the bound's.
    fn other_keys_note(&self) -> String {
        match &self.other {
            Some(other) => format!(
                "the last row counts {} events of keys past the first {MAX_KEYS} of this interval\n",
                other.count
            ),
            None => String::new(),
        }
    }

    /// One JSON object per row.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for (key, cell) in self.printed() {
            let mut object = serde_json::Map::new();
            match key {
                Some(key) => {
                    for (field, value) in self.spec.by.iter().zip(key) {
                        object.insert(field.clone(), value.to_json());
                    }
                }
                None => {
                    object.insert("other_keys".into(), true.into());
                }
            }
            object.insert("count".into(), cell.count.into());
            if let Some(sum) = &self.spec.sum {
                object.insert(format!("sum_{sum}"), serde_json::Value::from(cell.sum as f64));
            }
            if let Some(field) = &self.spec.hist {
                let buckets: Vec<serde_json::Value> = cell
                    .hist
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, c)| {
                        let low: i128 = match i {
                            0 => i128::MIN,
                            1 => 0,
                            b => 1i128 << (b - 2),
                        };
                        serde_json::json!({ "low": if low == i128::MIN { serde_json::Value::Null } else { (low as f64).into() }, "count": c })
                    })
                    .collect();
                object.insert(format!("hist_{field}"), buckets.into());
            }
            out.push_str(&serde_json::Value::Object(object).to_string());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(syscall: &str, latency: u64) -> Event {
        let mut e = Event::default();
        e.push(&"syscall".into(), Value::Str(syscall.into()));
        e.push(&"latency_ns".into(), Value::UInt(latency));
        e
    }

    #[test]
    fn counts_sums_and_tops() {
        let spec = Spec { by: vec!["syscall".into()], sum: None, hist: None, top: Some(2) };
        let mut agg = Aggregator::new(spec);
        for (s, n) in [("read", 5), ("write", 3), ("openat", 1)] {
            for _ in 0..n {
                agg.add(&event(s, 10));
            }
        }
        let rows: Vec<(String, u64)> = agg.rows().iter().map(|(k, c)| (k[0].to_string(), c.count)).collect();
        assert_eq!(rows, vec![("read".into(), 5), ("write".into(), 3)]);
        assert_eq!(agg.render(), "SYSCALL  COUNT\nread         5\nwrite        3\n");
        let mut sums = Aggregator::new(Spec { sum: Some("latency_ns".into()), ..Spec::default() });
        sums.add(&event("read", 7));
        sums.add(&event("read", 8));
        assert_eq!(sums.rows()[0].1.sum, 15);
        assert_eq!(sums.json_lines(), "{\"count\":2,\"sum_latency_ns\":15.0}\n");
    }

    #[test]
    fn a_workload_of_endless_distinct_keys_fills_one_other_row() {
        let spec =
            Spec { by: vec!["syscall".into(), "latency_ns".into()], sum: None, hist: None, top: Some(2) };
        let mut agg = Aggregator::new(spec);
        // A key the workload chose to look like the other row's label, then more keys than held.
        agg.add(&event(OTHER_KEYS, 1));
        for i in 0..MAX_KEYS as u64 + 1_000 {
            agg.add(&event(&format!("/tmp/x{i}"), i));
        }
        agg.add(&event(OTHER_KEYS, 1));
        agg.add_count(vec![Value::text("never seen"), Value::UInt(0)], 7);
        assert_eq!(agg.cells.len(), MAX_KEYS);
        assert_eq!(agg.other_keys().map(|cell| cell.count), Some(1_001 + 7));
        let total: u64 = agg.cells.values().map(|cell| cell.count).sum::<u64>() + 1_008;
        assert_eq!(total, MAX_KEYS as u64 + 1_000 + 2 + 7, "every event counted once");
        // Last, after the rows `--top` keeps; JSON marks it where no key can.
        let table = agg.render();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(lines[3], "(other keys)           -   1008");
        assert_eq!(
            lines[4],
            format!("the last row counts 1008 events of keys past the first {MAX_KEYS} of this interval")
        );
        let json = agg.json_lines();
        let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        assert_eq!(last, serde_json::json!({"other_keys": true, "count": 1008}));
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["syscall"], OTHER_KEYS, "{json}");
        assert!(first.get("other_keys").is_none());
        agg.clear();
        assert!(agg.other_keys().is_none() && agg.cells.is_empty());
    }

    #[test]
    fn kernel_histograms_land_in_the_same_buckets() {
        let mut from_events = Histogram::default();
        for v in [0, 1, 5, 1500] {
            from_events.add(v);
        }
        let mut agg = Aggregator::new(Spec { hist: Some("latency_ns".into()), ..Spec::default() });
        let mut kernel = vec![0u64; 64];
        for v in [0u64, 1, 5, 1500] {
            kernel[(64 - v.leading_zeros()) as usize] += 1;
        }
        agg.add_histogram(Vec::new(), &kernel);
        assert_eq!(agg.rows()[0].1.hist, from_events);
        assert_eq!(agg.rows()[0].1.count, 4);
    }

    #[test]
    fn draws_histograms_as_bpftrace_does() {
        let mut hist = Histogram::default();
        for v in [0, 1, 2, 3, 1024, 1500, 2047] {
            hist.add(v);
        }
        hist.add(-5);
        let drawn = hist.draw();
        let lines: Vec<&str> = drawn.lines().collect();
        assert_eq!(lines[0], format!("(..., 0)               1 |{:<52}|", "@".repeat(17)));
        assert_eq!(lines[1], format!("[0]                    1 |{:<52}|", "@".repeat(17)));
        assert_eq!(lines[3], format!("[2, 4)                 2 |{:<52}|", "@".repeat(34)));
        assert_eq!(lines[12], format!("[1K, 2K)               3 |{}|", "@".repeat(52)));
        assert_eq!(lines.len(), 13);
        assert_eq!(short(1 << 20), "1M");
        assert_eq!(short(3 << 10), "3K");
        assert_eq!(short(1000), "1000");
    }
}
