//! The native rules on the template fixtures: one bad template per rule with our findings in
//! full as a snapshot (`NAME.native.json`), what cfn-lint says about it (`NAME.expected.json`,
//! `[]` for a native-only check) with the native finding at the same place and severity, the
//! good templates clean under both, and cfn-lint (installed by `cargo xtask`, pinned in
//! xtask/python-requirements.txt) checked to still say what the fixtures record.

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
        .filter(|p| !p.to_string_lossy().ends_with(".expected.json") && !p.to_string_lossy().ends_with(".native.json"))
        .collect();
    found.sort();
    found
}

fn native(path: &Path) -> Vec<Finding> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    validate::check_template(&name, path, &std::fs::read(path).unwrap())
}

/// A finding in full, as the snapshots hold it (the file is the snapshot's).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, serde::Serialize, serde::Deserialize)]
struct Full {
    rule: String,
    severity: String,
    line: u32,
    column: u32,
    message: String,
}

fn full(finding: &Finding) -> Full {
    Full {
        rule: finding.rule.clone(),
        severity: serde_json::to_value(finding.severity).unwrap().as_str().unwrap().to_string(),
        line: finding.pos.line,
        column: finding.pos.column,
        message: finding.message.clone(),
    }
}

fn read_full(file: &Path) -> Vec<Full> {
    let text = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// What cfn-lint says about a bad template (`NAME.expected.json`, written by generate.py; `[]`
/// for a native-only check).
fn cfn_lint_expected(path: &Path) -> Vec<Full> {
    let mut found = read_full(&path.with_extension("expected.json"));
    // E0002 is cfn-lint failing inside one of its rules, not a finding about the template.
    found.retain(|f| f.rule != "E0002");
    found.sort();
    found
}

/// Our full findings on a bad template: `NAME.native.json`.
fn native_snapshot(path: &Path) -> PathBuf {
    path.with_extension("native.json")
}

#[test]
fn every_bad_template_gives_its_snapshot_in_full() {
    let bad = templates(&fixtures().join("bad"));
    assert!(bad.len() >= 15, "only {} bad templates", bad.len());
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut covered = BTreeSet::new();
    let mut mismatches = Vec::new();
    for path in &bad {
        let got: Vec<Full> = native(path).iter().map(full).collect();
        assert!(!got.is_empty(), "{}: a bad template with no finding", path.display());
        covered.extend(got.iter().map(|f| f.rule.clone()));
        let snapshot = native_snapshot(path);
        if update {
            std::fs::write(&snapshot, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let want = read_full(&snapshot);
        if got != want {
            mismatches.push(format!("{}:\n  native   {got:#?}\n  snapshot {want:#?}", path.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nif the new findings are right: UPDATE_EXPECTED=1 cargo test -p validate --all-features --test templates, then check the diff by eye",
        mismatches.join("\n")
    );
    let untested: Vec<&str> = rules::ALL.iter().map(|r| r.id).filter(|id| !covered.contains(*id)).collect();
    assert!(untested.is_empty(), "rule IDs without a bad template: {untested:?}");
}

/// Every native rule, not only every ID (58 rules share 49 IDs: E1001 is an unknown section, a
/// missing `Resources`, a bad format version …), has a bad template that makes it fire.
#[test]
fn every_rule_not_only_every_id_has_a_bad_template() {
    let mut covered: BTreeSet<(&str, &str)> = BTreeSet::new();
    for path in templates(&fixtures().join("bad")) {
        let bytes = std::fs::read(&path).unwrap();
        let root = match validate::parse_bytes(&bytes, &validate::Limits::default()) {
            Ok(root) => root,
            Err(error) if error.empty => validate::Node::new(error.pos, validate::Value::Map(Vec::new())),
            Err(_) => continue,
        };
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for (rule, _) in rules::check_by_rule(&root, &name, path.parent().unwrap(), bytes.len(), &[]) {
            covered.insert((rule.id, rule.summary));
        }
    }
    let untested: Vec<(&str, &str)> =
        rules::ALL.iter().map(|r| (r.id, r.summary)).filter(|r| !covered.contains(r)).collect();
    assert!(untested.is_empty(), "rules without a bad template: {untested:#?}");
    let summaries: BTreeSet<&str> = rules::ALL.iter().map(|r| r.summary).collect();
    assert_eq!(summaries.len(), rules::ALL.len(), "each rule has its own summary");
}

#[test]
fn where_cfn_lint_has_the_check_the_native_finding_is_at_its_place_with_its_severity() {
    let bad = templates(&fixtures().join("bad"));
    let mut shared = 0;
    let mut native_only = Vec::new();
    for path in &bad {
        let theirs = cfn_lint_expected(path);
        // cfn-lint may say two things at one place under one rule (`!Ref {…}` is both "not one of"
        // and "not of type 'string'"); the native rule says it once.
        let place = |f: &Full| (f.rule.clone(), f.severity.clone(), f.line, f.column);
        let theirs: BTreeSet<_> = theirs.iter().map(place).collect();
        let ours: BTreeSet<_> = native(path).iter().map(full).map(|f| place(&f)).collect();
        if theirs.is_empty() {
            native_only.push(path.file_name().unwrap().to_string_lossy().to_string());
            continue;
        }
        shared += 1;
        assert_eq!(ours, theirs, "{}", path.display());
    }
    assert!(shared >= 15, "only {shared} bad templates have a cfn-lint finding");
    // The native-only checks, each named in fixtures/templates/README.md.
    let prefixes: Vec<&str> = native_only.iter().map(|name| name.split('-').next().unwrap()).collect();
    assert_eq!(prefixes, ["E2010", "E3040", "E7010", "P1002", "P3001", "P3002", "P3002", "P3002"], "{native_only:?}");
}

#[test]
fn the_good_templates_are_clean() {
    let good = templates(&fixtures().join("good"));
    assert!(good.len() >= 5, "only {} good templates", good.len());
    for path in good {
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

/// cfn-lint (every rule of its default set, nothing filtered out) still says exactly what the
/// fixtures record: each bad template's `expected.json` (nothing for a native-only check), and
/// nothing on `good/`.
#[test]
fn cfn_lint_says_what_the_fixtures_record_and_nothing_on_good_templates() {
    let bad = templates(&fixtures().join("bad"));
    let good = templates(&fixtures().join("good"));
    let files: Vec<&PathBuf> = bad.iter().chain(&good).collect();
    let out = Command::new(cfn_lint()).args(["-f", "json", "--"]).args(&files).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cfn-lint output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let severity = |level: &str| match level {
        "Error" => "error",
        "Warning" => "warning",
        "Informational" => "info",
        other => panic!("cfn-lint level {other}"),
    };
    let mut said: std::collections::BTreeMap<String, Vec<Full>> = std::collections::BTreeMap::new();
    for f in report.as_array().unwrap() {
        let file = Path::new(f["Filename"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
        if f["Rule"]["Id"] == "E0002" {
            continue; // cfn-lint failing inside a rule (see cfn_lint_expected)
        }
        let start = &f["Location"]["Start"];
        said.entry(file).or_default().push(Full {
            rule: f["Rule"]["Id"].as_str().unwrap().to_string(),
            severity: severity(f["Level"].as_str().unwrap()).to_string(),
            line: start["LineNumber"].as_u64().unwrap() as u32,
            column: start["ColumnNumber"].as_u64().unwrap() as u32,
            message: f["Message"].as_str().unwrap().to_string(),
        });
    }
    let mut mismatches = Vec::new();
    for path in &bad {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut got = said.remove(&name).unwrap_or_default();
        got.sort();
        let want = cfn_lint_expected(path);
        if got != want {
            mismatches.push(format!("{name}:\n  cfn-lint {got:#?}\n  expected {want:#?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}\n(generate.py --expected rewrites them)", mismatches.join("\n"));
    // What is left is about good/: nothing.
    assert!(said.is_empty(), "cfn-lint on good/: {said:#?}");
}

/// What cfn-lint says about templates with no `expected.json` (the sample monorepo's), run live
/// from the tools' virtual environment: (file name, rule, line), `E0002` (cfn-lint failing)
/// left out.
fn cfn_lint_live(files: &[PathBuf]) -> BTreeSet<(String, String, u32)> {
    let out = Command::new(cfn_lint()).args(["-f", "json", "--"]).args(files).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cfn-lint output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    report
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["Rule"]["Id"] != "E0002")
        .map(|f| {
            let file = Path::new(f["Filename"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
            let line = f["Location"]["Start"]["LineNumber"].as_u64().unwrap() as u32;
            (file, f["Rule"]["Id"].as_str().unwrap().to_string(), line)
        })
        .collect()
}

/// Parity in numbers, over every fixture (bad and good) and every template of the sample
/// monorepo: for the rule IDs both implement, the share of cfn-lint's findings the native
/// checks make at the same (file, rule, line) (goal: at least 95%), and the native errors on
/// templates cfn-lint finds clean (goal: none but the deliberate native-only checks — E2010,
/// E7010 and P3001, whose fixtures exceed a CloudFormation limit or name a missing file that
/// cfn-lint does not look at; see fixtures/templates/README.md).
#[test]
#[allow(clippy::print_stderr)]
fn parity_with_cfn_lint_in_numbers() {
    let bad = templates(&fixtures().join("bad"));
    let good = templates(&fixtures().join("good"));
    let monorepo = templates(&test_support::workspace_root().join("fixtures/monorepo/cfn"));
    // The fixtures' cfn-lint findings are their expected.json (checked against cfn-lint live by
    // cfn_lint_says_what_the_fixtures_record_and_nothing_on_good_templates, which also checks
    // that good/ is clean); the monorepo's are asked for here.
    let mut theirs: BTreeSet<(String, String, u32)> = cfn_lint_live(&monorepo)
        .into_iter()
        .map(|(file, rule, line)| (format!("monorepo/{file}"), rule, line))
        .collect();
    for path in &bad {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        theirs.extend(cfn_lint_expected(path).into_iter().map(|f| (name.clone(), f.rule, f.line)));
    }
    let mut ours: BTreeSet<(String, String, u32)> = BTreeSet::new();
    let mut native_errors: Vec<(String, String, u32)> = Vec::new();
    for (prefix, path) in
        bad.iter().map(|p| ("", p)).chain(good.iter().map(|p| ("", p))).chain(monorepo.iter().map(|p| ("monorepo/", p)))
    {
        let name = format!("{prefix}{}", path.file_name().unwrap().to_string_lossy());
        for finding in native(path) {
            if finding.severity == validate::Severity::Error {
                native_errors.push((name.clone(), finding.rule.clone(), finding.pos.line));
            }
            ours.insert((name.clone(), finding.rule, finding.pos.line));
        }
    }
    let native_ids: BTreeSet<&str> = rules::ALL.iter().map(|r| r.id).collect();
    let shared: Vec<&(String, String, u32)> =
        theirs.iter().filter(|(_, rule, _)| native_ids.contains(rule.as_str())).collect();
    let found = shared.iter().filter(|f| ours.contains(**f)).count();
    let missed: Vec<&&(String, String, u32)> = shared.iter().filter(|f| !ours.contains(**f)).collect();
    let flagged: BTreeSet<&str> = theirs.iter().map(|(file, _, _)| file.as_str()).collect();
    let clean_errors: Vec<&(String, String, u32)> =
        native_errors.iter().filter(|(file, _, _)| !flagged.contains(file.as_str())).collect();
    let deliberate = |rule: &str| matches!(rule, "E2010" | "E7010") || rule.starts_with('P');
    let false_errors: Vec<&&(String, String, u32)> =
        clean_errors.iter().filter(|(_, rule, _)| !deliberate(rule)).collect();
    let files = bad.len() + good.len() + monorepo.len();
    let share = found as f64 / shared.len().max(1) as f64;
    eprintln!(
        "parity over {files} templates: {found} of cfn-lint's {} findings under shared rule IDs at the same (file, rule, line) = {:.1}%; \
         native errors on templates cfn-lint finds clean: {} ({} from the deliberate native-only checks E2010/E7010/P*, {} others)",
        shared.len(),
        share * 100.0,
        clean_errors.len(),
        clean_errors.len() - false_errors.len(),
        false_errors.len()
    );
    if !missed.is_empty() {
        eprintln!("missed: {missed:?}");
    }
    let other_ids: BTreeSet<&str> =
        theirs.iter().map(|(_, rule, _)| rule.as_str()).filter(|r| !native_ids.contains(r)).collect();
    eprintln!("cfn-lint rule IDs seen here that the native core does not implement: {other_ids:?}");
    assert!(shared.len() >= 50, "only {} shared findings: the measure means little", shared.len());
    assert!(share >= 0.95, "{:.1}% of cfn-lint's findings; missed {missed:?}", share * 100.0);
    assert!(false_errors.is_empty(), "native errors on templates cfn-lint finds clean: {false_errors:?}");
}

/// The embedded resource-schema bundle comes from the cfn-lint the tools pin (regenerate it
/// with `cargo xtask schemas` after changing the pin).
#[test]
fn the_schema_bundle_comes_from_the_pinned_cfn_lint() {
    let requirements =
        std::fs::read_to_string(test_support::workspace_root().join("xtask/python-requirements.txt")).unwrap();
    let pinned = requirements.lines().find_map(|l| l.trim().strip_prefix("cfn-lint==")).expect("cfn-lint is pinned");
    let source = validate::schemas::Schemas::get().source();
    assert!(source.starts_with(&format!("cfn-lint {pinned}\t")), "bundle from {source:?}, cfn-lint {pinned} pinned");
    let schemas = validate::schemas::Schemas::get();
    assert!(schemas.regions().len() >= 30, "{:?}", schemas.regions());
    for resource_type in ["AWS::S3::Bucket", "AWS::Lambda::Function", "AWS::CloudFront::Distribution"] {
        let resource = schemas.resource(resource_type).unwrap_or_else(|| panic!("{resource_type} missing"));
        assert!(resource.in_region(schemas.region_bit("us-east-1").unwrap()), "{resource_type}");
    }
}

/// In SARIF, rules that share a cfn-lint ID each have their own entry (`E1001/unknown-section`,
/// `E1001/format-version` …) with their own summary, and each result points at its own.
#[test]
fn sarif_gives_rules_that_share_an_id_their_own_entries() {
    let mut findings = Vec::new();
    for name in ["E1001-unknown-section.yaml", "E1001-format-version-wrong.yaml", "E1001-empty-file.yaml"] {
        findings.extend(native(&fixtures().join("bad").join(name)));
    }
    let sarif: serde_json::Value = serde_json::from_str(&validate::report::sarif(&findings)).unwrap();
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    let ids: BTreeSet<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["E1001/format-version", "E1001/resources-missing", "E1001/unknown-section"]),
        "{rules:#?}"
    );
    let summaries: BTreeSet<&str> = rules.iter().map(|r| r["shortDescription"]["text"].as_str().unwrap()).collect();
    assert_eq!(summaries.len(), rules.len(), "each entry its own summary: {rules:#?}");
    for result in sarif["runs"][0]["results"].as_array().unwrap() {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"], "{result:#?}");
    }
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), findings.len());
}
