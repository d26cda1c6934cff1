//! The modules' dependencies point down: no top-level module of `agent/src` imports, directly
//! or through others, a module that imports it back (kernel reading below config, config
//! below the families, families below the collectors and the CLI).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The top-level module (`bpf`, `kernel`, ...) of each file, and the top-level modules it names
/// with `crate::` outside its tests.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.to_owned()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let top = relative.iter().next().unwrap().to_str().unwrap().trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let named = graph.entry(top.clone()).or_default();
        // `crate::a::...` and the `a::` / `a,` items of `use crate::{...}` groups.
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let groups: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                vec![&group[..group.find("};").unwrap_or(group.len())]]
            } else {
                vec![rest]
            };
            for group in groups {
                let items = if rest.starts_with('{') { group.split(',').collect() } else { vec![group] };
                for item in items {
                    let name: String = item
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        named.insert(name);
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for named in graph.values_mut() {
        named.retain(|m| modules.contains(m));
    }
    graph
}

/// A path from `from` back to itself, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last()?;
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_import_circles_between_top_level_modules() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("bpf") && graph["cli"].contains("bpf"), "the scan finds imports: {graph:?}");
    let circles: Vec<String> =
        graph.keys().filter_map(|m| circle(&graph, m)).map(|path| path.join(" -> ")).collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn finds_a_circle_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
        ("d".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(circle(&graph, "a"), Some(vec!["a", "b", "c", "a"].into_iter().map(String::from).collect()));
    assert_eq!(circle(&graph, "d"), None);
}
