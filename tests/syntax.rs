//! Identifier syntax against the official interop vectors.

mod common;

use instancemap::types;

fn lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(common::fixture(&format!("syntax/{name}")))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn check(kind: &str, f: fn(&str) -> bool) {
    for v in lines(&format!("{kind}_syntax_valid.txt")) {
        assert!(f(&v), "{kind}: valid {v:?} rejected");
    }
    for v in lines(&format!("{kind}_syntax_invalid.txt")) {
        assert!(!f(&v), "{kind}: invalid {v:?} accepted");
    }
}

#[test]
fn dids() {
    check("did", types::is_did);
}

#[test]
fn handles() {
    check("handle", types::is_handle);
}

#[test]
fn nsids() {
    check("nsid", types::is_nsid);
}

#[test]
fn record_keys() {
    check("recordkey", types::is_record_key);
}

#[test]
fn tids() {
    check("tid", types::is_tid);
}
