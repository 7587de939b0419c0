//! The functions as the templates declare them: `Handler`, `Runtime`, `Architectures` and where
//! the code comes from, read from `AWS::Lambda::Function` and `AWS::Serverless::Function`
//! resources with validate's positioned parser.
//!
//! A template resource declares a `[lambda.functions.NAME]` in one of two ways:
//!
//! - by the config: `template = "cfn/lambdas.yaml"` and `resource = "ApiHandlerFunction"`;
//! - by its code path: in a template matched by `[lambda] templates`, a function resource whose
//!   `CodeUri` (SAM) or `Code` (a local path, as `aws cloudformation package` takes it), resolved
//!   against the template's folder, is one of the function's `sources`.
//!
//! Values that are not literal (`!Ref Runtime`) are not checked. A missing `Architectures` is
//! `x86_64`, as Lambda reads it; SAM's `Globals: Function:` fills what a serverless function
//! leaves out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use cfn_template::Node;

use crate::Error;
use crate::config::FunctionSpec;

/// The most a template may hold (CloudFormation takes 1 MB from S3; SAM templates are local).
const MAX_TEMPLATE_BYTES: u64 = 16 * 1024 * 1024;

/// One function resource of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The template, relative to the monorepo root.
    pub template: String,
    /// The resource's logical ID.
    pub resource: String,
    /// The resource's line.
    pub line: u32,
    /// `Handler` and its line, when literal.
    pub handler: Option<(String, u32)>,
    /// `Runtime` and its line, when literal.
    pub runtime: Option<(String, u32)>,
    /// `Architectures` (its one item) and its line; `x86_64` at the resource's line when absent.
    pub architecture: Option<(String, u32)>,
    /// `CodeUri` or `Code` as a local path, relative to the monorepo root.
    pub code_path: Option<String>,
}

impl Declaration {
    /// `ApiHandlerFunction at cfn/lambdas.yaml:177`.
    pub fn at(&self, line: u32) -> String {
        format!("{} at {}:{line}", self.resource, self.template)
    }
}

/// Every template declaration of each function, by function name.
pub fn declarations(repo: &Path, functions: &[FunctionSpec]) -> Result<BTreeMap<String, Vec<Declaration>>, Error> {
    let mut parsed: BTreeMap<String, Vec<Declaration>> = BTreeMap::new();
    let mut found: BTreeMap<String, Vec<Declaration>> = BTreeMap::new();
    for function in functions {
        let Some((template, resource)) = &function.template else { continue };
        let key = format!("lambda.functions.{}.template", function.name);
        if !parsed.contains_key(template) {
            parsed.insert(template.clone(), read(repo, template, &key)?);
        }
        let declaration =
            parsed[template].iter().find(|d| &d.resource == resource).ok_or_else(|| Error::UnknownResource {
                function: function.name.clone(),
                template: template.clone(),
                resource: resource.clone(),
            })?;
        found.entry(function.name.clone()).or_default().push(declaration.clone());
    }
    let globs: BTreeSet<&String> = functions.iter().flat_map(|f| &f.template_globs).collect();
    if globs.is_empty() {
        return Ok(found);
    }
    let glob_error = |source| Error::TemplateGlobs {
        globs: globs.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", "),
        source,
    };
    let mut builder = globset::GlobSetBuilder::new();
    for glob in &globs {
        // Checked when the config was read.
        builder.add(pipeline_config::glob(glob).map_err(glob_error)?);
    }
    let set = builder.build().map_err(glob_error)?;
    for template in search(repo, &set)? {
        if !parsed.contains_key(&template) {
            parsed.insert(template.clone(), read(repo, &template, "lambda.templates")?);
        }
        for declaration in &parsed[&template] {
            let Some(code) = &declaration.code_path else { continue };
            for function in functions {
                let named = function.sources.iter().any(|s| s.to.is_none() && &s.from == code);
                let already = found
                    .get(&function.name)
                    .is_some_and(|d| d.iter().any(|d| d.template == template && d.resource == declaration.resource));
                if named && !already {
                    found.entry(function.name.clone()).or_default().push(declaration.clone());
                }
            }
        }
    }
    Ok(found)
}

/// The templates under `repo` matching `set`, sorted; hidden folders (`.git`, `.pipeline`) and
/// `node_modules` are not searched.
fn search(repo: &Path, set: &globset::GlobSet) -> Result<Vec<String>, Error> {
    let mut templates = Vec::new();
    let walk = walkdir::WalkDir::new(repo).sort_by_file_name().into_iter().filter_entry(|e| {
        e.depth() == 0 || {
            let name = e.file_name().to_string_lossy();
            !(e.file_type().is_dir() && (name.starts_with('.') || name == "node_modules"))
        }
    });
    for item in walk {
        let item = item.map_err(|source| Error::Walk { path: repo.to_path_buf(), source })?;
        if !item.file_type().is_file() {
            continue;
        }
        let Some(relative) = item.path().strip_prefix(repo).ok().and_then(|p| p.to_str()) else { continue };
        if set.is_match(relative) {
            templates.push(relative.to_string());
        }
    }
    Ok(templates)
}

/// The function resources of one template.
fn read(repo: &Path, template: &str, key: &str) -> Result<Vec<Declaration>, Error> {
    let path = repo.join(template);
    let bytes = pipeline_config::fs::read_regular(&path, MAX_TEMPLATE_BYTES)
        .map_err(|source| Error::TemplateUnreadable { template: template.to_string(), key: key.to_string(), source })?;
    let limits = cfn_template::Limits { max_bytes: MAX_TEMPLATE_BYTES as usize, ..Default::default() };
    let root = cfn_template::parse_bytes(&bytes, &limits).map_err(|source| Error::TemplateParse {
        template: template.to_string(),
        key: key.to_string(),
        source,
    })?;
    let folder = Path::new(template).parent().unwrap_or(Path::new(""));
    Ok(function_resources(&root, template, folder))
}

fn function_resources(root: &Node, template: &str, folder: &Path) -> Vec<Declaration> {
    let globals = root.get("Globals").and_then(|g| g.get("Function"));
    let mut found = Vec::new();
    for (key, resource) in root.get("Resources").map(Node::entries).unwrap_or_default() {
        let serverless = match resource.get("Type").and_then(Node::as_str) {
            Some("AWS::Lambda::Function") => false,
            Some("AWS::Serverless::Function") => true,
            _ => continue,
        };
        let properties = resource.get("Properties");
        let property = |name: &str| {
            properties
                .and_then(|p| p.get(name))
                .or_else(|| if serverless { globals.and_then(|g| g.get(name)) } else { None })
        };
        if property("PackageType").and_then(Node::as_str) == Some("Image") {
            continue;
        }
        let literal =
            |name: &str| property(name).and_then(|node| node.as_str().map(|value| (value.to_string(), node.pos.line)));
        let architecture = match property("Architectures") {
            None => Some(("x86_64".to_string(), key.pos.line)),
            Some(node) => match node.items() {
                [one] => one.as_str().map(|value| (value.to_string(), one.pos.line)),
                _ => None,
            },
        };
        let code = if serverless { literal("CodeUri") } else { literal("Code") };
        let code_path = code
            .map(|(value, _)| value)
            .filter(|value| !value.contains("://") && !Path::new(value).is_absolute())
            .and_then(|value| normalise(&folder.join(value)));
        found.push(Declaration {
            template: template.to_string(),
            resource: key.name.clone(),
            line: key.pos.line,
            handler: literal("Handler"),
            runtime: literal("Runtime"),
            architecture,
            code_path,
        });
    }
    found
}

/// `a/./b/../c/` → `a/c`; `None` when it climbs out of the monorepo.
fn normalise(path: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Checks a function's declarations against each other and against the config; gives the handler
/// to look for (and where it was declared), if any.
pub fn check(function: &FunctionSpec, declared: &[Declaration]) -> Result<Option<(String, String)>, Error> {
    let section = format!("[lambda.functions.{}]", function.name);
    for declaration in declared {
        if let Some((runtime, line)) = &declaration.runtime
            && runtime != &function.runtime
        {
            return Err(Error::TemplateDisagrees {
                function: function.name.clone(),
                at: declaration.at(*line),
                property: "Runtime",
                declared: runtime.as_str().into(),
                configured: function.runtime.as_str().into(),
            });
        }
        if let Some((architecture, line)) = &declaration.architecture
            && architecture != function.architecture.as_str()
        {
            return Err(Error::TemplateDisagrees {
                function: function.name.clone(),
                at: declaration.at(*line),
                property: "Architectures",
                declared: architecture.as_str().into(),
                configured: function.architecture.as_str().into(),
            });
        }
    }
    let mut handlers: Vec<(String, String)> = Vec::new();
    if let Some(handler) = &function.handler {
        handlers.push((handler.clone(), format!("pipeline.toml {section} handler")));
    }
    for declaration in declared {
        if let Some((handler, line)) = &declaration.handler {
            crate::config::check_handler(handler).map_err(|message| Error::BadHandler {
                function: function.name.clone(),
                at: declaration.at(*line),
                message,
            })?;
            handlers.push((handler.clone(), declaration.at(*line)));
        }
    }
    if let Some(other) = handlers.iter().find(|(h, _)| h != &handlers[0].0) {
        return Err(Error::HandlerDisagrees {
            function: function.name.clone(),
            handlers: Box::new([handlers[0].clone(), other.clone()]),
        });
    }
    Ok(handlers.into_iter().next())
}

/// The files that can hold a handler's module at the zip's root: `pkg/mod.py` or
/// `pkg/mod/__init__.py` for `pkg.mod.handler` (or `pkg/mod.handler`).
pub fn module_files(handler: &str) -> [String; 2] {
    let module = handler.rsplit_once('.').map_or(handler, |(module, _)| module).replace('.', "/");
    [format!("{module}.py"), format!("{module}/__init__.py")]
}

/// Whether a zip holding `names` has the handler's module (a compiled module counts too).
pub fn has_module<'a>(names: impl IntoIterator<Item = &'a str>, handler: &str) -> bool {
    let [file, package] = module_files(handler);
    let stem = file.trim_end_matches(".py");
    names.into_iter().any(|name| {
        name == file
            || name == package
            || name
                .strip_prefix(stem)
                .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".so") && !rest.contains('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_as_files_packages_or_compiled() {
        assert!(has_module(["index.py"], "index.handler"));
        assert!(has_module(["app/__init__.py"], "app.handler"));
        assert!(has_module(["pkg/mod.py"], "pkg.mod.handler"));
        assert!(has_module(["pkg/mod.py"], "pkg/mod.handler"));
        assert!(has_module(["fast.cpython-312-x86_64-linux-gnu.so"], "fast.handler"));
        assert!(!has_module(["lib/index.py", "index.pyc", "indexer.py"], "index.handler"));
    }

    #[test]
    fn code_paths_resolve_against_the_template_folder() {
        assert_eq!(normalise(Path::new("cfn/../lambda/api/")), Some("lambda/api".into()));
        assert_eq!(normalise(Path::new("./src/./fn")), Some("src/fn".into()));
        assert_eq!(normalise(Path::new("../outside")), None);
    }
}
