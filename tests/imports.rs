//! The house's floors: the graph of `crate::<module>` references between the
//! top-level modules of `src/` has no circle (a stage may use the floors
//! below it, never one above). The bug it pins: fifteen files in one circle
//! (`store` used `plc`'s merge, `plc`, `hosts` and `identity` called the
//! map's marks, `identity` used `event`'s time parsing, …), so no stage
//! could be read, tested or replaced alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names (comments and
/// `#[cfg(test)] mod tests` left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            modules.insert(name);
        } else if let Some(m) = name.strip_suffix(".rs") {
            if m != "lib" && m != "main" {
                modules.insert(m.to_owned());
            }
        }
    }
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
            let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap();
                let mut rest = code;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if modules.contains(&name) && name != top {
                        g.entry(top.clone()).or_default().insert(name);
                    }
                }
                // `use crate::{a, b::c}`
                if let Some(list) = code.trim().strip_prefix("use crate::{") {
                    for part in list.split([',', '}']) {
                        let name = part.trim().split("::").next().unwrap_or("").to_owned();
                        if modules.contains(&name) && name != top {
                            g.entry(top.clone()).or_default().insert(name);
                        }
                    }
                }
            }
        }
    }
    for m in modules {
        g.entry(m).or_default();
    }
    g
}

/// A circle through `start`, if any (depth-first search).
fn circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_owned());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for n in &g[m] {
            if let Some(c) = visit(g, n, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = visit(g, m, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_circle() {
    let g = graph();
    if let Some(c) = circle(&g) {
        panic!("modules import in a circle: {}\n{g:#?}", c.join(" -> "));
    }
}

#[test]
fn the_floors_import_nothing_above_them() {
    let g = graph();
    // the floor: used by every stage, using none
    for leaf in ["clock", "metrics", "repo"] {
        assert!(g[leaf].is_empty(), "{leaf} imports {:?}", g[leaf]);
    }
    let allowed = |m: &str, floor: &[&str]| g[m].iter().all(|d| floor.contains(&d.as_str()));
    assert!(allowed("types", &["clock"]), "types imports {:?}", g["types"]);
    assert!(allowed("store", &["clock", "types", "metrics"]), "store imports {:?}", g["store"]);
    // no source reaches the map, the writer, the API or the app
    for source in ["plc", "hosts", "identity", "firehose", "net"] {
        for above in ["cluster", "ingest", "api", "app", "export", "stats", "inspect"] {
            assert!(!g[source].contains(above), "{source} imports {above}");
        }
    }
}

/// Families, keys and codecs are the store's: no file of `src/` outside
/// `src/store/` names a column family (the constants are private, so the
/// compiler holds that) or one of the map's families.
#[test]
fn no_file_outside_the_store_names_a_family() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                if path != src.join("store") {
                    stack.push(path);
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap();
                if code.contains("Fam::") || code.contains("CF_") || code.contains("WriteBatch") {
                    found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "families named outside the store:\n{}", found.join("\n"));
}

/// The check itself finds a circle.
#[test]
fn a_circle_is_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), ["a".to_owned()].into());
    assert_eq!(circle(&g).unwrap(), vec!["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(circle(&g), None);
}
