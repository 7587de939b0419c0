//! The native rules on the template fixtures: one bad template per rule with its expected
//! findings as a snapshot (`NAME.expected.json`), the good templates clean, and parity with
//! cfn-lint (installed by `cargo xtask`, pinned in xtask/python-requirements.txt) for every
//! rule both implement.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use validate::{Finding, rules};

fn fixtures() -> PathBuf {
    test_support::workspace_root().join("fixtures/templates")
}

fn templates(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .filter(|p| !p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    found.sort();
    found
}

fn native(path: &Path) -> Vec<Finding> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    validate::check_template(&name, path, &std::fs::read(path).unwrap())
}

fn native_ids() -> BTreeSet<&'static str> {
    rules::ALL.iter().map(|r| r.id).chain([validate::PARSE_ERROR]).collect()
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Seen {
    rule: String,
    line: u32,
    column: u32,
}

fn expected(path: &Path) -> Vec<Seen> {
    let file = path.with_extension("expected.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))).unwrap();
    let ids = native_ids();
    let mut seen: Vec<Seen> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| ids.contains(f["rule"].as_str().unwrap()))
        .map(|f| Seen {
            rule: f["rule"].as_str().unwrap().to_string(),
            line: f["line"].as_u64().unwrap() as u32,
            column: f["column"].as_u64().unwrap() as u32,
        })
        .collect();
    seen.sort();
    // cfn-lint may say two things at one place under one rule (`!Ref {…}` is both "not one of"
    // and "not of type 'string'"); the native rule says it once.
    seen.dedup();
    seen
}

#[test]
fn every_bad_template_gives_its_expected_findings() {
    let bad = templates(&fixtures().join("bad"));
    assert!(bad.len() >= 15, "only {} bad templates", bad.len());
    let mut covered = BTreeSet::new();
    let mut mismatches = Vec::new();
    for path in &bad {
        let mut got: Vec<Seen> = native(path)
            .iter()
            .map(|f| Seen { rule: f.rule.clone(), line: f.pos.line, column: f.pos.column })
            .collect();
        got.sort();
        let want = expected(path);
        covered.extend(got.iter().map(|s| s.rule.clone()));
        if got != want {
            mismatches.push(format!("{}:\n  native   {got:?}\n  expected {want:?}", path.display()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let untested: Vec<&str> = rules::ALL.iter().map(|r| r.id).filter(|id| !covered.contains(*id)).collect();
    assert!(untested.is_empty(), "rules without a bad template: {untested:?}");
}

#[test]
fn the_good_templates_are_clean() {
    for path in templates(&fixtures().join("good")) {
        let findings = native(&path);
        assert!(findings.is_empty(), "{}: {findings:#?}", path.display());
    }
}

/// cfn-lint from the tools' virtual environment.
fn cfn_lint() -> PathBuf {
    let bin = test_support::python().parent().unwrap().join("cfn-lint");
    assert!(
        bin.exists(),
        "cfn-lint is missing at {}: run through `cargo xtask test`, which installs it",
        bin.display()
    );
    bin
}

#[test]
fn findings_match_cfn_lint_for_the_rules_both_implement() {
    let mut files = templates(&fixtures().join("bad"));
    files.extend(templates(&fixtures().join("good")));
    let out = Command::new(cfn_lint()).args(["-f", "json", "--"]).args(&files).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cfn-lint output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    // Rules whose fixtures say cfn-lint has no such check (or gives the ID another meaning).
    let native_only: BTreeSet<String> = templates(&fixtures().join("bad"))
        .iter()
        .flat_map(|path| {
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path.with_extension("expected.json")).unwrap()).unwrap();
            json.as_array()
                .unwrap()
                .iter()
                .filter(|f| f["source"] == "native-only")
                .map(|f| f["rule"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let ours: BTreeSet<&str> = rules::ALL.iter().map(|r| r.id).filter(|id| !native_only.contains(*id)).collect();
    assert!(ours.len() >= 15, "parity covers only {ours:?}");
    let key = |file: &str, rule: &str, line: u64, column: u64| {
        let name = Path::new(file).file_name().unwrap().to_string_lossy().to_string();
        (name, rule.to_string(), line, column)
    };
    let theirs: BTreeSet<_> = report
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| ours.contains(f["Rule"]["Id"].as_str().unwrap_or("")))
        .map(|f| {
            let start = &f["Location"]["Start"];
            key(
                f["Filename"].as_str().unwrap(),
                f["Rule"]["Id"].as_str().unwrap(),
                start["LineNumber"].as_u64().unwrap(),
                start["ColumnNumber"].as_u64().unwrap(),
            )
        })
        .collect();
    let mine: BTreeSet<_> = files
        .iter()
        .flat_map(|p| native(p))
        .filter(|f| ours.contains(f.rule.as_str()))
        .map(|f| key(&f.path, &f.rule, f.pos.line.into(), f.pos.column.into()))
        .collect();
    let only_theirs: Vec<_> = theirs.difference(&mine).collect();
    let only_mine: Vec<_> = mine.difference(&theirs).collect();
    assert!(
        only_theirs.is_empty() && only_mine.is_empty(),
        "only cfn-lint: {only_theirs:#?}\nonly native: {only_mine:#?}"
    );
}
