//! `cargo xtask codebuild BUILDSPEC`: a buildspec run on this machine as CodeBuild runs it, so
//! the CodeBuild path is rehearsed, not assumed.
//!
//! What is reproduced: the phases in order (`install`, `pre_build`, `build`, `post_build`) in
//! one shell whose environment carries from command to command and phase to phase (buildspec
//! 0.2); a failed command ends its phase; a failed `install` or `pre_build` skips the rest, a
//! failed `build` still runs `post_build` (with `CODEBUILD_BUILD_SUCCEEDING=0`); `on-failure:
//! CONTINUE`; `env.variables` and `env.shell`; the `CODEBUILD_*` variables, with secondary
//! sources as `CODEBUILD_SRC_DIR_<name>`; `exported-variables` captured into
//! `OUT/exported.env`; every `reports:` file checked to exist; `artifacts.files` copied into
//! `OUT/artifacts/` (the folder the next stage gets as a secondary source). Not reproduced:
//! `cache:` (nothing is cached between runs), `finally:` blocks and `secrets-manager:` (refused,
//! so a buildspec using them is not rehearsed by accident), the container image itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use validate::Node;

/// The flags of `cargo xtask codebuild`.
#[derive(clap::Args)]
pub struct CodebuildArgs {
    /// The buildspec to run.
    pub buildspec: PathBuf,
    /// The primary source folder (CODEBUILD_SRC_DIR) [default: the current folder].
    #[arg(long)]
    pub src: Option<PathBuf>,
    /// A secondary source, as NAME=DIR (CODEBUILD_SRC_DIR_NAME); repeatable.
    #[arg(long = "secondary", value_name = "NAME=DIR")]
    pub secondary: Vec<String>,
    /// An environment variable of the project or action, as NAME=VALUE; repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Where the artifacts and exported variables go (emptied first).
    #[arg(long)]
    pub out: PathBuf,
}

const PHASES: [&str; 4] = ["install", "pre_build", "build", "post_build"];

fn split_pair(pair: &str, what: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = pair.split_once('=').with_context(|| format!("{what} `{pair}` is not NAME=VALUE"))?;
    ensure!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{what} name `{name}` must be letters, digits and `_`"
    );
    Ok((name.to_owned(), value.to_owned()))
}

fn strings(node: Option<&Node>) -> Vec<String> {
    node.map(|n| n.items().iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

// Single quotes for the shell: the value as is, a `'` closed, escaped and reopened.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs the buildspec; `Ok(false)` when the build failed (as CodeBuild would report it).
pub fn run(args: &CodebuildArgs) -> anyhow::Result<bool> {
    let spec = read_buildspec(&args.buildspec)?;
    let env_section = spec.get("env");
    let src = std::path::absolute(args.src.clone().unwrap_or_else(|| PathBuf::from(".")))?;
    let out = std::path::absolute(&args.out)?;
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let state = out.join("shell-state.sh");
    let shell = env_section.and_then(|e| e.get("shell")).and_then(Node::as_str).unwrap_or("sh").to_owned();

    let mut prelude = String::new();
    for (name, value) in &environment(args, env_section, &src)? {
        prelude.push_str(&format!("export {name}={}\n", quote(value)));
    }
    std::fs::write(&state, prelude)?;

    let mut succeeded = run_phases(spec.get("phases"), &state, &shell, &src)?;
    write_exported(env_section, &state, &shell, &out)?;
    let base_dir = |node: &Node| -> PathBuf {
        match node.get("base-directory").and_then(Node::as_str) {
            Some(dir) => src.join(dir),
            None => src.clone(),
        }
    };
    if let Some(reports) = spec.get("reports") {
        succeeded &= reports_found(reports, base_dir)?;
    }
    if let Some(artifacts) = spec.get("artifacts") {
        copy_artifacts(artifacts, &base_dir(artifacts), &out.join("artifacts"))?;
    }
    eprintln!("[codebuild] {} {}", args.buildspec.display(), if succeeded { "SUCCEEDED" } else { "FAILED" });
    Ok(succeeded)
}

/// The buildspec at `path`, refused when it asks for what is not rehearsed (a version other
/// than 0.2, `finally` blocks, secrets-manager or parameter-store).
fn read_buildspec(path: &Path) -> anyhow::Result<Node> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the buildspec {}", path.display()))?;
    let spec = validate::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    ensure!(
        spec.get("version").and_then(Node::as_str) == Some("0.2"),
        "{}: only version 0.2 is rehearsed",
        path.display()
    );
    for unsupported in ["finally"] {
        if let Some(phases) = spec.get("phases")
            && phases.entries().iter().any(|(_, phase)| phase.get(unsupported).is_some())
        {
            bail!("{}: `{unsupported}` blocks are not rehearsed", path.display());
        }
    }
    if spec.get("env").and_then(|e| e.get("secrets-manager").or_else(|| e.get("parameter-store"))).is_some() {
        bail!("{}: secrets-manager and parameter-store are not rehearsed; pass the values with --env", path.display());
    }
    Ok(spec)
}

/// The build's environment: CodeBuild's own variables, the project's, then the buildspec's.
fn environment(args: &CodebuildArgs, env_section: Option<&Node>, src: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = vec![
        ("CODEBUILD_CI".into(), "true".into()),
        ("CODEBUILD_BUILD_ID".into(), format!("xtask-codebuild:{}", std::process::id())),
        ("CODEBUILD_BUILD_NUMBER".into(), "1".into()),
        ("CODEBUILD_INITIATOR".into(), "xtask".into()),
        ("CODEBUILD_SRC_DIR".into(), src.display().to_string()),
    ];
    if let Ok(head) = Command::new("git").current_dir(src).args(["rev-parse", "HEAD"]).output()
        && head.status.success()
    {
        vars.push((
            "CODEBUILD_RESOLVED_SOURCE_VERSION".into(),
            String::from_utf8_lossy(&head.stdout).trim().to_owned(),
        ));
    }
    for pair in &args.secondary {
        let (name, dir) = split_pair(pair, "--secondary")?;
        let dir = std::path::absolute(dir)?;
        ensure!(dir.is_dir(), "secondary source {name}: {} is not a folder", dir.display());
        vars.push((format!("CODEBUILD_SRC_DIR_{name}"), dir.display().to_string()));
    }
    for pair in &args.env {
        vars.push(split_pair(pair, "--env")?);
    }
    // With the call log on (aws_target::LOG_VAR), the stage's calls are logged under its
    // buildspec's name (the role that stage runs as), unless the caller named the stage.
    if std::env::var_os(aws_target::LOG_VAR).is_some() && std::env::var_os(aws_target::STAGE_VAR).is_none() {
        let stage = args.buildspec.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        vars.push((aws_target::STAGE_VAR.into(), stage));
    }
    if let Some(variables) = env_section.and_then(|e| e.get("variables")) {
        for (key, value) in variables.entries() {
            let value = value.as_str().map(str::to_owned).unwrap_or_else(|| match &value.value {
                validate::Value::Number(n) => n.clone(),
                validate::Value::Bool(b) => b.to_string(),
                _ => String::new(),
            });
            // A project or action variable wins over the buildspec's, as in CodeBuild.
            if !args.env.iter().any(|p| p.split('=').next() == Some(key.name.as_str())) {
                vars.push((key.name.clone(), value));
            }
        }
    }
    Ok(vars)
}

/// Runs the phases in order, each in `shell` from the environment `state` holds (and saves
/// back): whether the build still succeeds.
fn run_phases(phases: Option<&Node>, state: &Path, shell: &str, src: &Path) -> anyhow::Result<bool> {
    let mut succeeded = true;
    for phase_name in PHASES {
        let Some(phase) = phases.and_then(|p| p.get(phase_name)) else { continue };
        if !succeeded && phase_name != "post_build" {
            eprintln!("[codebuild] skipping {phase_name}: an earlier phase failed");
            continue;
        }
        let script = phase_script(phase_name, &strings(phase.get("commands")), state, succeeded);
        let status = Command::new(shell)
            .arg("-c")
            .arg(&script)
            .current_dir(src)
            .status()
            .with_context(|| format!("running the {phase_name} phase with {shell}"))?;
        if !status.success() {
            let continue_on_failure = phase.get("on-failure").and_then(Node::as_str) == Some("CONTINUE");
            eprintln!(
                "[codebuild] phase {phase_name} FAILED{}",
                if continue_on_failure { " (on-failure: CONTINUE)" } else { "" }
            );
            succeeded = false;
            if continue_on_failure && phase_name != "post_build" {
                // The build is still failed, but the next phases run.
                succeeded = true;
            }
        }
    }
    Ok(succeeded)
}

/// One phase's shell script: the saved environment, then each command in turn (the first that
/// fails ends the phase with its status), the environment saved after.
fn phase_script(phase_name: &str, commands: &[String], state: &Path, succeeded: bool) -> String {
    let state = quote(&state.display().to_string());
    let mut script = format!(". {state}\nexport CODEBUILD_BUILD_SUCCEEDING={}\n", u8::from(succeeded));
    for command in commands {
        let first_line = command.lines().next().unwrap_or_default();
        script.push_str(&format!(
            "echo {} >&2\n{{\n{command}\n}}\nrc=$?\nif [ \"$rc\" -ne 0 ]; then echo {} \"$rc\" >&2; export -p > {state}; exit \"$rc\"; fi\n",
            quote(&format!("[codebuild] {phase_name}: {first_line}")),
            quote(&format!("[codebuild] {phase_name}: command did not exit successfully: {first_line}; exit status")),
        ));
    }
    script.push_str(&format!("export -p > {state}\n"));
    script
}

/// The `exported-variables`, read from the shell's final environment, into `OUT/exported.env`.
fn write_exported(env_section: Option<&Node>, state: &Path, shell: &str, out: &Path) -> anyhow::Result<()> {
    let exported = strings(env_section.and_then(|e| e.get("exported-variables")));
    if !exported.is_empty() {
        let script = format!(
            ". {}\nfor v in {}; do printf '%s=%s\\n' \"$v\" \"$(printenv \"$v\")\"; done",
            quote(&state.display().to_string()),
            exported.join(" ")
        );
        let output = Command::new(shell).arg("-c").arg(script).output()?;
        std::fs::write(out.join("exported.env"), &output.stdout)?;
    }
    Ok(())
}

/// Whether every report group has a file; each that has none is said.
fn reports_found(reports: &Node, base_dir: impl Fn(&Node) -> PathBuf) -> anyhow::Result<bool> {
    let mut found_all = true;
    for (group, report) in reports.entries() {
        let found = matching_files(&base_dir(report), &strings(report.get("files")))?;
        if found.is_empty() {
            eprintln!("[codebuild] report group {}: no file matches {:?}", group.name, strings(report.get("files")));
            found_all = false;
        }
    }
    Ok(found_all)
}

/// Copies the artifact files under `base` into `target`, their paths kept.
fn copy_artifacts(artifacts: &Node, base: &Path, target: &Path) -> anyhow::Result<()> {
    for file in matching_files(base, &strings(artifacts.get("files")))? {
        let to = target.join(&file);
        std::fs::create_dir_all(to.parent().unwrap_or(target))?;
        std::fs::copy(base.join(&file), &to).with_context(|| format!("copying the artifact {file}"))?;
    }
    Ok(())
}

/// The files under `base` (relative paths) that any of the globs match; links are not followed.
fn matching_files(base: &Path, globs: &[String]) -> anyhow::Result<Vec<String>> {
    if globs.is_empty() {
        return Ok(Vec::new());
    }
    let mut builder = globset::GlobSetBuilder::new();
    for glob in globs {
        builder.add(pipeline_config::glob(glob).with_context(|| format!("the buildspec's glob `{glob}`"))?);
    }
    let set = builder.build()?;
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(base).follow_links(false).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(base)?.to_string_lossy().into_owned();
        if set.is_match(&relative) {
            found.push(relative);
        }
    }
    found.sort();
    Ok(found)
}

/// The flags of `cargo xtask codebuild-stages`.
#[derive(clap::Args)]
pub struct StagesArgs {
    /// The pipeline's template [default: the workspace's cfn/pipeline.yaml].
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// The variables a rehearsed stage exported, as NAMESPACE=FILE (its `OUT/exported.env`,
    /// read as the stage's action namespace, e.g. `Diff`); repeatable.
    #[arg(long = "variables", value_name = "NAMESPACE=FILE")]
    pub variables: Vec<String>,
    /// Only the stages after this one [default: every stage].
    #[arg(long)]
    pub after: Option<String>,
}

/// What CodePipeline does at a stage's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// No entry condition, or every rule of it passed.
    Enter,
    /// A rule failed and the condition's result is `SKIP`: why.
    Skip(String),
    /// A rule failed and the condition's result is `FAIL`: why.
    Fail(String),
}

/// Prints each stage of the template's pipeline (after `--after`) with what its `BeforeEntry`
/// conditions decide for these variables, one line each: `NAME: enter`, `NAME: skip: WHY`,
/// `NAME: fail: WHY`. `Ok(false)` when a stage's entry fails.
pub fn stages(args: &StagesArgs) -> anyhow::Result<bool> {
    let path = args.template.clone().unwrap_or_else(|| crate::workspace_root().join("cfn/pipeline.yaml"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the template {}", path.display()))?;
    let template = validate::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut variables = std::collections::BTreeMap::new();
    for pair in &args.variables {
        let (namespace, file) = split_pair(pair, "--variables")?;
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line.split_once('=').with_context(|| format!("{file}: `{line}` is not NAME=VALUE"))?;
            variables.insert(format!("{namespace}.{name}"), value.to_owned());
        }
    }
    let mut entries = stage_entries(&template, &variables).with_context(|| path.display().to_string())?;
    if let Some(after) = &args.after {
        let at = entries.iter().position(|(name, _)| name == after);
        let at = at.with_context(|| format!("{}: no stage named {after}", path.display()))?;
        entries.drain(..=at);
    }
    let mut entered = true;
    for (name, entry) in &entries {
        match entry {
            Entry::Enter => println!("{name}: enter"),
            Entry::Skip(why) => println!("{name}: skip: {why}"),
            Entry::Fail(why) => {
                entered = false;
                println!("{name}: fail: {why}");
            }
        }
    }
    Ok(entered)
}

/// Each stage of the template's `AWS::CodePipeline::Pipeline`, in order, with what its
/// `BeforeEntry` conditions decide for these variables (`NAMESPACE.NAME` → value), as CodePipeline
/// evaluates them: a condition is met when every rule passes; when it is not, its result
/// engages. Only `VariableCheck` rules are rehearsed; any other rule, or a variable no stage
/// exported, is an error naming the stage.
pub fn stage_entries(
    template: &Node,
    variables: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, Entry)>> {
    let resources = template.get("Resources").context("no Resources")?;
    let pipeline = resources
        .entries()
        .iter()
        .map(|(_, r)| r)
        .find(|r| r.get("Type").and_then(Node::as_str) == Some("AWS::CodePipeline::Pipeline"))
        .context("no AWS::CodePipeline::Pipeline resource")?;
    let stages = pipeline.get("Properties").and_then(|p| p.get("Stages")).context("the pipeline has no Stages")?;
    let mut out = Vec::new();
    for stage in stages.items() {
        let name = stage.get("Name").and_then(Node::as_str).context("a stage without a Name")?.to_owned();
        let conditions =
            stage.get("BeforeEntry").and_then(|b| b.get("Conditions")).map(Node::items).unwrap_or_default();
        let mut entry = Entry::Enter;
        for condition in conditions {
            let failed = failed_rules(condition, variables).with_context(|| format!("stage {name}"))?;
            if failed.is_empty() {
                continue;
            }
            entry = match condition.get("Result").and_then(Node::as_str) {
                Some("SKIP") => Entry::Skip(failed.join("; ")),
                Some("FAIL") => Entry::Fail(failed.join("; ")),
                other => bail!("stage {name}: an entry condition's Result is {other:?}, not SKIP or FAIL"),
            };
            break;
        }
        out.push((name, entry));
    }
    Ok(out)
}

/// The rules of a condition that do not pass, each as `RULE: why`.
fn failed_rules(
    condition: &Node,
    variables: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    for rule in condition.get("Rules").map(Node::items).unwrap_or_default() {
        let name = rule.get("Name").and_then(Node::as_str).unwrap_or("(unnamed)");
        let provider = rule.get("RuleTypeId").and_then(|t| t.get("Provider")).and_then(Node::as_str);
        ensure!(
            provider == Some("VariableCheck"),
            "rule {name}: only VariableCheck rules are rehearsed, not {provider:?}"
        );
        let config = rule.get("Configuration").with_context(|| format!("rule {name} has no Configuration"))?;
        let field =
            |key: &str| config.get(key).and_then(Node::as_str).with_context(|| format!("rule {name} has no {key}"));
        let (reference, expected, operator) = (field("Variable")?, field("Value")?, field("Operator")?);
        let variable = reference
            .strip_prefix("#{")
            .and_then(|r| r.strip_suffix('}'))
            .with_context(|| format!("rule {name}: Variable `{reference}` is not #{{NAMESPACE.NAME}}"))?;
        let value = variables
            .get(variable)
            .with_context(|| format!("rule {name} reads {reference}, which no stage given exported"))?;
        let passes = match operator {
            "EQ" => value == expected,
            "NE" => value != expected,
            "CONTAINS" => value.contains(expected),
            other => bail!("rule {name}: the operator {other} is not rehearsed (EQ, NE, CONTAINS are)"),
        };
        if !passes {
            failed.push(format!("{name}: {reference} is `{value}`, not {operator} `{expected}`"));
        }
    }
    Ok(failed)
}
