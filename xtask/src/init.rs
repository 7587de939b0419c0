//! `cargo xtask init --repo DIR`: reads a repository as it is and writes a commented
//! `pipeline.toml` to start from: the CloudFormation templates and which nest which (local
//! paths or S3 URLs whose key's tail is a file), the functions from the templates' handlers
//! and code keys (flat files grouped by the handler's module and its local imports), the
//! frontend from `package.json`, pytest files per function. `--check` explains instead: what
//! each component owns, the tracked files no component owns, and every template reference it
//! could not map.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use validate::Node;

/// `cargo xtask init` arguments.
#[derive(clap::Args)]
pub struct InitArgs {
    /// The repository [default: the current folder].
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Explain what was found (ownership, unowned files, unmapped references); write nothing.
    #[arg(long)]
    check: bool,
    /// Print the config instead of writing pipeline.toml.
    #[arg(long)]
    print: bool,
    /// Replace an existing pipeline.toml.
    #[arg(long)]
    force: bool,
}

/// A template of the repository.
#[derive(Debug, Default)]
struct Template {
    /// Templates it nests (repository paths).
    children: Vec<String>,
    /// Parameters without a default, and the environment's (`Environment`, `Env`, `Stage`)
    /// even with one: a default (`dev`) would deploy every environment as that one.
    required: Vec<String>,
    /// Parameters whose value builds a nested TemplateURL or a code key's bucket.
    bucket_parameters: BTreeSet<String>,
    /// `CAPABILITY_IAM`, `CAPABILITY_NAMED_IAM`, `CAPABILITY_AUTO_EXPAND`.
    capabilities: BTreeSet<&'static str>,
}

/// A function found in a template.
#[derive(Debug)]
struct Function {
    name: String,
    template: String,
    resource: String,
    sources: Vec<String>,
    requirements: Option<String>,
    test: Option<String>,
}

/// What init found.
#[derive(Debug, Default)]
struct Found {
    templates: BTreeMap<String, Template>,
    functions: Vec<Function>,
    /// (package.json's folder, its scripts).
    frontend: Option<(String, BTreeSet<String>)>,
    unmapped: Vec<String>,
    /// The repository has a `.secrets-allowlist`.
    secrets_allowlist: bool,
}

pub fn run(args: &InitArgs) -> anyhow::Result<bool> {
    let repo = args.repo.canonicalize().with_context(|| format!("cannot read {}", args.repo.display()))?;
    let files = repo_files(&repo)?;
    let found = find(&repo, &files)?;
    let text = config(&repo, &found);
    if args.check {
        print!("{}", explain(&repo, &files, &found, &text)?);
        return Ok(found.unmapped.is_empty());
    }
    if args.print {
        print!("{text}");
        return Ok(true);
    }
    let path = repo.join("pipeline.toml");
    if path.exists() && !args.force {
        bail!("{} exists; pass --force to replace it, or --print to see what init would write", path.display());
    }
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {}: {} template(s), {} function(s){}; fill in the TODOs, then `cargo xtask init --check`",
        path.display(),
        found.templates.len(),
        found.functions.len(),
        if found.frontend.is_some() { ", a frontend" } else { "" }
    );
    for line in &found.unmapped {
        println!("not mapped: {line}");
    }
    print!("{}", exported_variables(&text)?);
    Ok(true)
}

/// The `env.exported-variables` of `buildspecs/diff.yml` for the config's components: the
/// flags `source-diff --format env` writes, so nobody lists them by hand.
fn exported_variables(text: &str) -> anyhow::Result<String> {
    let config = pipeline_config::ConfigFile::from_text(Path::new("pipeline.toml"), text);
    let components = source_diff::Components::from_config(&config)?;
    let mut out = String::from("buildspecs/diff.yml, env.exported-variables:\n    - any_changed\n");
    for component in components.iter() {
        let prefix = &component.flag_prefix;
        let _ = writeln!(out, "    - {prefix}_tests_required\n    - {prefix}_deploy_required");
    }
    Ok(out)
}

/// The repository's files (relative, sorted), build output, dependencies and hidden folders left out.
fn repo_files(repo: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(repo).sort_by_file_name().into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        e.depth() == 0
            || !(e.file_type().is_dir()
                && (name.starts_with('.') || ["node_modules", "dist", "__pycache__", "target"].contains(&&*name)))
    });
    for entry in walk {
        let entry = entry?;
        if entry.file_type().is_file()
            && let Ok(relative) = entry.path().strip_prefix(repo)
        {
            files.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(files)
}

fn parse(repo: &Path, path: &str) -> Option<Node> {
    let bytes = pipeline_config::fs::read_regular(&repo.join(path), 4 * 1024 * 1024).ok()?;
    let root = validate::parse_bytes(&bytes, &validate::template::Limits::default()).ok()?;
    let resources = root.get("Resources")?;
    let typed = resources.entries().iter().any(|(_, r)| r.get("Type").and_then(Node::as_str).is_some());
    typed.then_some(root)
}

/// The text of a string-valued expression with `${NAME}` for what is not literal.
fn text_of(node: &Node) -> Option<String> {
    if let Some(text) = node.as_str() {
        return Some(text.to_string());
    }
    let (function, argument) = node.intrinsic()?;
    match function.name.as_str() {
        "Ref" => Some(format!("${{{}}}", argument.as_str()?)),
        "Fn::Sub" => argument.as_str().or_else(|| argument.items().first()?.as_str()).map(str::to_string),
        "Fn::Join" => {
            let [separator, parts] = argument.items() else { return None };
            let parts: Option<Vec<String>> = parts.items().iter().map(text_of).collect();
            Some(parts?.join(separator.as_str()?))
        }
        _ => None,
    }
}

/// The parameters an expression refers to.
fn parameters_in(text: &str) -> BTreeSet<String> {
    text.split("${").skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string())).collect()
}

/// The repository file an S3 URL or key names by its longest tail, or a local path names.
fn file_for(files: &[String], template: &str, reference: &str) -> Option<String> {
    let local = !(reference.contains("://") || reference.contains("${"));
    if local {
        let dir = Path::new(template).parent().unwrap_or(Path::new(""));
        let joined = normalise(&dir.join(reference))?;
        return files.contains(&joined).then_some(joined);
    }
    let path = reference.rsplit_once('}').map_or(reference, |(_, after)| after);
    let path = path.split_once("://").map_or(path, |(_, after)| after.split_once('/').map_or("", |(_, p)| p));
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    (0..parts.len()).map(|i| parts[i..].join("/")).find(|candidate| files.contains(candidate))
}

fn normalise(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

fn find(repo: &Path, files: &[String]) -> anyhow::Result<Found> {
    let mut found = Found { secrets_allowlist: files.iter().any(|f| f == SECRETS_ALLOWLIST), ..Found::default() };
    for path in files.iter().filter(|f| f.ends_with(".yaml") || f.ends_with(".yml") || f.ends_with(".json")) {
        let Some(root) = parse(repo, path) else { continue };
        let template = read_template(repo, files, path, &root, &mut found);
        found.templates.insert(path.clone(), template);
    }
    found.frontend = frontend(repo, files);
    Ok(found)
}

/// What the template at `path` needs (parameters, capabilities, buckets) and nests; its
/// functions go into `found`, with what could not be mapped.
fn read_template(repo: &Path, files: &[String], path: &String, root: &Node, found: &mut Found) -> Template {
    let mut template = Template::default();
    for (key, value) in root.get("Parameters").map(Node::entries).unwrap_or_default() {
        if value.get("Default").is_none() || is_environment(&key.name) {
            template.required.push(key.name.clone());
        }
    }
    if root.get("Transform").is_some() {
        template.capabilities.insert("CAPABILITY_AUTO_EXPAND");
    }
    for (key, resource) in root.get("Resources").map(Node::entries).unwrap_or_default() {
        let kind = resource.get("Type").and_then(Node::as_str).unwrap_or_default();
        let prop = |p: &str| resource.get("Properties").and_then(|ps| ps.get(p));
        if kind.starts_with("AWS::IAM::") {
            template.capabilities.insert("CAPABILITY_IAM");
            if ["RoleName", "UserName", "GroupName", "ManagedPolicyName"].iter().any(|p| prop(p).is_some()) {
                template.capabilities.insert("CAPABILITY_NAMED_IAM");
            }
        }
        match kind {
            "AWS::CloudFormation::Stack" => {
                let Some(url) = prop("TemplateURL").and_then(text_of) else { continue };
                match file_for(files, path, &url) {
                    Some(child) => {
                        template.children.push(child);
                        if url.contains("://") {
                            template.bucket_parameters.extend(parameters_in(url.split('/').nth(3).unwrap_or("")));
                            template.bucket_parameters.extend(parameters_in(url.split('/').nth(2).unwrap_or("")));
                        }
                    }
                    None => found.unmapped.push(format!("{path}: {} TemplateURL `{url}`: no such file", key.name)),
                }
            }
            "AWS::Lambda::Function" | "AWS::Serverless::Function" => {
                let function =
                    lambda_function(repo, files, path, &key.name, resource, &mut template, &mut found.unmapped);
                found.functions.extend(function);
            }
            _ => {}
        }
    }
    template
}

/// The function resource `resource` (named `resource_name` in the template at `path`): its
/// name, sources (a local code folder, else the handler's module with its imports),
/// requirements and test. `None` when it has no handler, or its module is not one file of the
/// repository (said in `unmapped`). The code's bucket parameters go into `template`.
fn lambda_function(
    repo: &Path,
    files: &[String],
    path: &String,
    resource_name: &str,
    resource: &Node,
    template: &mut Template,
    unmapped: &mut Vec<String>,
) -> Option<Function> {
    let prop = |p: &str| resource.get("Properties").and_then(|ps| ps.get(p));
    let code = prop("Code").or_else(|| prop("CodeUri"));
    let key_text = code.and_then(|c| c.get("S3Key").or_else(|| c.get("Key"))).and_then(text_of);
    if let Some(bucket) = code.and_then(|c| c.get("S3Bucket").or_else(|| c.get("Bucket"))).and_then(text_of) {
        template.bucket_parameters.extend(parameters_in(&bucket));
    }
    let handler = prop("Handler").and_then(Node::as_str)?;
    let (module, _) = handler.rsplit_once('.')?;
    let name = match &key_text {
        Some(key) => key.rsplit('/').next().unwrap_or(key).trim_end_matches(".zip").to_string(),
        None => kebab(resource_name.trim_end_matches("Function")),
    };
    let module_file = format!("{}.py", module.replace('.', "/"));
    let local_code = code.and_then(Node::as_str).filter(|c| !c.contains("://"));
    let sources = match local_code.and_then(|c| file_for(&dirs(files), path, c)) {
        Some(folder) => vec![folder],
        None => match files.iter().filter(|f| f.ends_with(&module_file) && !is_test(f)).collect::<Vec<_>>()[..] {
            [one] => with_imports(repo, files, one),
            _ => {
                unmapped.push(format!(
                    "{path}: {resource_name} Handler `{handler}`: no single `{module_file}` in the repository"
                ));
                return None;
            }
        },
    };
    let folder = Path::new(&sources[0]).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    // The nearest requirements file up from the handler's folder: one shared
    // `lambda/requirements.txt` serves `lambda/poller/execution_finder.py` too.
    let requirements = Path::new(&folder)
        .ancestors()
        .map(|dir| dir.join("requirements.txt").to_string_lossy().into_owned())
        .find(|r| files.contains(r));
    let stem = Path::new(&module_file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let test = [format!("test_{}.py", name.replace('-', "_")), format!("test_{stem}.py")]
        .iter()
        .find_map(|t| files.iter().find(|f| f.ends_with(&format!("/{t}")) || *f == t))
        .cloned();
    Some(Function { name, template: path.clone(), resource: resource_name.to_string(), sources, requirements, test })
}

/// The first `package.json` below the repository's root: its folder and its scripts.
fn frontend(repo: &Path, files: &[String]) -> Option<(String, BTreeSet<String>)> {
    files.iter().filter(|f| f.ends_with("package.json")).find_map(|path| {
        let text = std::fs::read_to_string(repo.join(path)).ok()?;
        let json = serde_json::from_str::<serde_json::Value>(&text).ok()?;
        let scripts: BTreeSet<String> =
            json.get("scripts").and_then(|s| s.as_object()).map(|s| s.keys().cloned().collect()).unwrap_or_default();
        let folder = Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        (!folder.is_empty()).then_some((folder, scripts))
    })
}

fn dirs(files: &[String]) -> Vec<String> {
    let mut dirs = BTreeSet::new();
    for file in files {
        let mut path = Path::new(file);
        while let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(parent.to_string_lossy().into_owned());
            path = parent;
        }
    }
    dirs.into_iter().collect()
}

fn is_test(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.split('/').any(|p| p == "tests" || p == "test") || name.starts_with("test_") || name == "conftest.py"
}

/// A module file with the modules beside it that it imports (`from rbac_middleware import …`).
fn with_imports(repo: &Path, files: &[String], module: &str) -> Vec<String> {
    let folder = Path::new(module).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut found = vec![module.to_string()];
    let mut index = 0;
    while index < found.len() {
        let text = std::fs::read_to_string(repo.join(&found[index])).unwrap_or_default();
        for line in text.lines() {
            let line = line.trim();
            let imported = line
                .strip_prefix("from ")
                .and_then(|rest| rest.split_whitespace().next())
                .or_else(|| line.strip_prefix("import ").and_then(|rest| rest.split([' ', ',']).next()));
            let Some(name) = imported else { continue };
            let candidate = if folder.is_empty() { format!("{name}.py") } else { format!("{folder}/{name}.py") };
            if files.contains(&candidate) && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
        index += 1;
    }
    found.sort();
    found
}

/// The secrets allow-list's conventional name (the README's), read when the repository has it.
const SECRETS_ALLOWLIST: &str = ".secrets-allowlist";

/// A parameter naming the environment deployed to, which init sets to `{env}`.
fn is_environment(name: &str) -> bool {
    ["environment", "env", "stage", "environmentname", "envname"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
}

/// The config init writes.
fn config(repo: &Path, found: &Found) -> String {
    let name = project_name(repo);
    let mut out = String::new();
    let _ = writeln!(out, "# pipeline.toml written by `cargo xtask init` from what the repository holds: check every");
    let _ = writeln!(out, "# section, fill in the TODOs, then `cargo xtask init --check --repo .`.\n");
    let _ = writeln!(out, "[diff]\ndefault_branch = \"main\"\n");
    write_components(&mut out, found);
    write_lambda(&mut out, found);
    write_deploy(&mut out, found, &name);
    if !found.templates.is_empty() {
        let globs: Vec<String> = found.templates.keys().cloned().collect();
        let _ = writeln!(out, "[validate]\ntemplates = [{}]", quoted(&globs));
        if found.secrets_allowlist {
            let _ = writeln!(out, "# One regex a line: matching lines are not secrets.");
            let _ = writeln!(out, "secrets_allowlist = \"{SECRETS_ALLOWLIST}\"");
        }
    }
    if let Some((folder, _)) = &found.frontend {
        let _ = writeln!(out, "\n# TODO: the site's bucket and distribution, from the stacks' outputs:");
        let _ = writeln!(out, "# [publish]\n# component = \"frontend\"\n# dist = \"{folder}/dist\"");
        let _ = writeln!(
            out,
            "# bucket = {{ output = \"STACK.SiteBucketName\" }}\n# distribution = {{ output = \"STACK.DistributionId\" }}"
        );
    }
    out
}

/// The repository's folder name as a bucket and a stack name take it: letters, digits and
/// single `-`, starting with a letter.
fn project_name(repo: &Path) -> String {
    let name = repo.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_else(|| "app".into());
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let name = name.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if name.starts_with(|c: char| c.is_ascii_lowercase()) { name } else { format!("app-{name}") }
}

/// The `[components.*]` sections: one a function, the frontend, and `infra` (the templates,
/// depending on every function).
fn write_components(out: &mut String, found: &Found) {
    let mut infra_deps = Vec::new();
    for function in &found.functions {
        let mut paths: Vec<String> =
            function.sources.iter().map(|s| if s.ends_with(".py") { s.clone() } else { format!("{s}/**") }).collect();
        // Its requirements are part of its package: a change there repackages and redeploys it.
        if let Some(requirements) = &function.requirements {
            paths.push(requirements.clone());
        }
        if let Some(test) = &function.test {
            paths.push(test.clone());
        }
        let _ = writeln!(out, "[components.{}]\npaths = [{}]", function.name, quoted(&paths));
        if let Some(test) = &function.test {
            let _ = writeln!(
                out,
                "test = {{ run = \"python -m pytest -q -p no:cacheprovider {test}\", timeout = \"5m\" }}"
            );
        }
        out.push('\n');
        infra_deps.push(function.name.clone());
    }
    if let Some((folder, scripts)) = &found.frontend {
        let _ = writeln!(out, "# From {folder}/package.json.");
        let _ = writeln!(
            out,
            "[components.frontend]\npaths = [\"{folder}/**\"]\nexclude = [\"{folder}/dist/**\", \"{folder}/node_modules/**\"]"
        );
        if scripts.contains("build") {
            let _ = writeln!(out, "build = {{ run = \"cd {folder} && npm ci && npm run build\", timeout = \"10m\" }}");
        }
        if scripts.contains("test") {
            let _ = writeln!(out, "test = {{ run = \"cd {folder} && npm test\", timeout = \"10m\" }}");
        }
        out.push('\n');
    }
    if !found.templates.is_empty() {
        let template_dirs: BTreeSet<String> = found
            .templates
            .keys()
            .map(|t| Path::new(t).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        let globs: Vec<String> =
            template_dirs.iter().map(|d| if d.is_empty() { "*.yaml".into() } else { format!("{d}/**") }).collect();
        let _ = writeln!(out, "# The stacks are deployed again when a template or a function changes.");
        let _ =
            writeln!(out, "[components.infra]\npaths = [{}]\ndepends_on = [{}]\n", quoted(&globs), quoted(&infra_deps));
    }
}

/// The `[lambda]` section and one `[lambda.functions.*]` a function.
fn write_lambda(out: &mut String, found: &Found) {
    if found.functions.is_empty() {
        return;
    }
    let _ = writeln!(out, "[lambda]\nruntime = \"python3.12\"\n");
    for function in &found.functions {
        let _ = writeln!(out, "# {} in {}.", function.resource, function.template);
        let _ = writeln!(out, "[lambda.functions.{}]\nsources = [{}]", function.name, quoted(&function.sources));
        if let Some(requirements) = &function.requirements {
            let _ = writeln!(out, "requirements = \"{requirements}\"");
        }
        let _ = writeln!(out, "template = \"{}\"\nresource = \"{}\"\n", function.template, function.resource);
    }
}

/// The `[deploy]` section: one stack a template no other nests, and the dev environment.
fn write_deploy(out: &mut String, found: &Found, name: &str) {
    let nested: BTreeSet<&String> = found.templates.values().flat_map(|t| &t.children).collect();
    let masters: Vec<&String> = found.templates.keys().filter(|t| !nested.contains(t)).collect();
    if masters.is_empty() {
        return;
    }
    let _ =
        writeln!(out, "# Nested templates (local paths or S3 URLs whose key's tail is the file) are uploaded under");
    let _ = writeln!(out, "# content-addressed keys; function code read from S3 keys is uploaded there and updated.");
    let _ = writeln!(
        out,
        "[deploy]\nartifact_bucket = \"{name}-artifacts-{{env}}\"  # TODO: a bucket of each environment's account\n"
    );
    for master in masters {
        write_stack(out, found, name, master);
    }
    let _ = writeln!(out, "[deploy.environments.dev]\nregion = \"us-east-1\"  # TODO\n");
}

/// One `[deploy.stacks.*]`: the template `master`, its parameters, and the capabilities of
/// its whole tree.
fn write_stack(out: &mut String, found: &Found, name: &str, master: &String) {
    let stem = Path::new(master).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stack = kebab(&stem).replace('_', "-");
    let mut capabilities: BTreeSet<&str> = BTreeSet::new();
    let mut buckets = BTreeSet::new();
    for template in tree(found, master) {
        if let Some(t) = found.templates.get(template) {
            capabilities.extend(&t.capabilities);
            buckets.extend(t.bucket_parameters.iter().cloned());
        }
    }
    let parameters: Vec<String> = found.templates[master]
        .required
        .iter()
        .map(|p| {
            if buckets.contains(p) {
                format!("{p} = \"{name}-artifacts-{{env}}\"")
            } else if is_environment(p) {
                format!("{p} = \"{{env}}\"")
            } else {
                format!("{p} = \"TODO\"")
            }
        })
        .collect();
    let _ = writeln!(out, "[deploy.stacks.{stack}]\ntemplate = \"{master}\"\nstack_name = \"{name}-{stack}-{{env}}\"");
    let _ = writeln!(out, "parameters = {{ {} }}", parameters.join(", "));
    let capabilities: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(out, "capabilities = [{}]\ncomponents = [\"infra\"]", quoted(&capabilities));
    if !buckets.is_empty() {
        let _ = writeln!(
            out,
            "# artifact_mode = \"fixed\"  # or upload to the keys the templates read, as the repository's own sync does"
        );
    }
    let _ = writeln!(out);
}

/// A template and the ones it nests, transitively.
fn tree<'a>(found: &'a Found, root: &'a String) -> Vec<&'a String> {
    let mut out = vec![root];
    let mut index = 0;
    while index < out.len() {
        if let Some(template) = found.templates.get(out[index]) {
            for child in &template.children {
                if !out.contains(&child) {
                    out.push(child);
                }
            }
        }
        index += 1;
    }
    out
}

/// `--check`: what each component owns, the files no component owns, what could not be mapped.
fn explain(repo: &Path, files: &[String], found: &Found, text: &str) -> anyhow::Result<String> {
    let path = repo.join("pipeline.toml");
    let config = if path.exists() {
        pipeline_config::ConfigFile::load(&path)?
    } else {
        pipeline_config::ConfigFile::from_text(&path, text)
    };
    let components = source_diff::Components::from_config(&config)?;
    let mut out = String::new();
    let mut owned = BTreeSet::new();
    for component in components.iter().map(|c| c.name.as_str()) {
        let mine: Vec<&String> = files.iter().filter(|f| components.owns(component, f)).collect();
        owned.extend(mine.iter().cloned());
        let _ = writeln!(out, "{component}: {} file(s)", mine.len());
        for file in mine.iter().take(20) {
            let _ = writeln!(out, "  {file}");
        }
    }
    let unowned: Vec<&String> = files.iter().filter(|f| !owned.contains(f) && f.as_str() != "pipeline.toml").collect();
    let _ = writeln!(out, "owned by no component: {} file(s)", unowned.len());
    for file in unowned {
        let _ = writeln!(out, "  {file}");
    }
    out.push_str(&exported_variables(&config.text)?);
    let _ = writeln!(out, "template references not mapped: {}", found.unmapped.len());
    for line in &found.unmapped {
        let _ = writeln!(out, "  {line}");
    }
    Ok(out)
}
