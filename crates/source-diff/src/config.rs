//! The `[diff]` and `[components]` sections of `pipeline.toml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use globset::Glob;
use pipeline_config::{ConfigError, Spanned};
use serde::Deserialize;

use crate::globs::{Globs, GlobsBuilder};

/// `[diff]`: settings for choosing the base and for changes that concern every component.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffSettings {
    /// The branch whose merge-base is a fallback base; `main` when unset.
    #[serde(default)]
    pub default_branch: Option<String>,
    /// The environment whose last success is the diff base; `prod` when unset.
    #[serde(default)]
    pub base_environment: Option<String>,
    /// Globs of files that mark every component changed (the pipeline's own config, say).
    #[serde(default)]
    pub global_inputs: Vec<Spanned<String>>,
}

/// `[components.NAME]`: one deployable or testable part of the monorepo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// Globs of repo-relative `/` paths that belong to the component.
    pub paths: Vec<Spanned<String>>,
    /// Globs of paths under `paths` that do not.
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    /// Components whose change marks this one changed too (transitively).
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// The command that tests the component.
    #[serde(default)]
    pub test: Option<StepCommand>,
    /// The command that builds the component.
    #[serde(default)]
    pub build: Option<StepCommand>,
    /// The command that deploys the component.
    #[serde(default)]
    pub deploy: Option<StepCommand>,
    /// The end-to-end command, run against a deployed environment with its stack outputs in
    /// the environment (`step-runner --step e2e --env dev`).
    #[serde(default)]
    pub e2e: Option<StepCommand>,
}

/// A shell command run from the monorepo root for one step of one component.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepCommand {
    /// The command line, run with `sh -c`.
    pub run: String,
    /// How long it may run before it is stopped and marked failed (`"90s"`, `"10m"`).
    #[serde(default, deserialize_with = "pipeline_config::duration")]
    pub timeout: Option<Duration>,
    /// Environment variables for the command, over `[runner] env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The coverage report a `test` command writes and the minimums it must reach.
    #[serde(default)]
    pub coverage: Option<coverage::CoverageSpec>,
}

/// The two sections as written, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    /// `[diff]`.
    pub diff: DiffSettings,
    /// `[components]`, by name.
    pub components: BTreeMap<String, ComponentSettings>,
    /// What `[lambda.functions.*.include]` says: a component (the function's) ships the build
    /// output of others, so it depends on them as `depends_on` says (a change to the site
    /// must repackage, test and deploy the function whose zip carries the site's build).
    pub ships_output_of: BTreeMap<String, Vec<Spanned<String>>>,
}

/// The sections the diff reads, from one reading of the whole document (other sections are
/// their own crates' to check).
#[derive(Debug, Default, Deserialize)]
struct Sections {
    #[serde(default)]
    diff: DiffSettings,
    #[serde(default)]
    components: BTreeMap<String, ComponentSettings>,
    #[serde(default)]
    lambda: LambdaShipping,
}

/// What the diff reads of `[lambda]` (lambda-packager owns and checks the section).
#[derive(Debug, Default, Deserialize)]
struct LambdaShipping {
    #[serde(default)]
    functions: BTreeMap<String, FunctionShipping>,
}

#[derive(Debug, Deserialize)]
struct FunctionShipping {
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    include: Vec<IncludeShipping>,
}

#[derive(Debug, Deserialize)]
struct IncludeShipping {
    #[serde(default)]
    component: Option<Spanned<String>>,
}

/// The components each function's component ships the build output of.
fn ships_output_of(lambda: LambdaShipping) -> BTreeMap<String, Vec<Spanned<String>>> {
    let mut ships: BTreeMap<String, Vec<Spanned<String>>> = BTreeMap::new();
    for (name, function) in lambda.functions {
        let shipped: Vec<Spanned<String>> = function.include.into_iter().filter_map(|i| i.component).collect();
        if !shipped.is_empty() {
            ships.entry(function.component.unwrap_or(name)).or_default().extend(shipped);
        }
    }
    ships
}

/// A checked component catalogue: globs compiled, dependencies known and acyclic.
#[derive(Debug, Clone)]
pub struct Components {
    pub(crate) default_branch: String,
    pub(crate) base_environment: String,
    pub(crate) global_inputs: Globs,
    pub(crate) components: Vec<Component>,
    /// One set for every component's `paths`, `include_owner[i]` naming the component of glob `i`.
    pub(crate) includes: Globs,
    pub(crate) include_owner: Vec<usize>,
    pub(crate) excludes: Globs,
    pub(crate) exclude_owner: Vec<usize>,
    /// For each component, the components that depend on it directly (`affected` walks them
    /// for the indirect ones, so a long chain costs memory in its length, not its square).
    pub(crate) dependents: Vec<Vec<usize>>,
}

/// One checked component.
#[derive(Debug, Clone)]
pub struct Component {
    /// The name under `[components]`.
    pub name: String,
    /// The prefix of its flags: the name with every character outside `[A-Za-z0-9_]` as `_`.
    pub flag_prefix: String,
    /// Direct dependencies.
    pub depends_on: Vec<String>,
    /// Its test command.
    pub test: Option<StepCommand>,
    /// Its build command.
    pub build: Option<StepCommand>,
    /// Its deploy command.
    pub deploy: Option<StepCommand>,
    /// Its end-to-end command.
    pub e2e: Option<StepCommand>,
}

impl Component {
    /// The per-component steps it has a command for, in pipeline order.
    pub fn steps(&self) -> Vec<run_state::Step> {
        use run_state::Step;
        [(Step::Build, &self.build), (Step::Test, &self.test), (Step::Deploy, &self.deploy), (Step::E2e, &self.e2e)]
            .into_iter()
            .filter(|(_, command)| command.is_some())
            .map(|(step, _)| step)
            .collect()
    }

    /// Its command for a per-component step (`build`, `test`, `deploy`, `e2e`).
    pub fn command(&self, step: run_state::Step) -> Option<&StepCommand> {
        match step {
            run_state::Step::Build => self.build.as_ref(),
            run_state::Step::Test => self.test.as_ref(),
            run_state::Step::Deploy => self.deploy.as_ref(),
            run_state::Step::E2e => self.e2e.as_ref(),
            _ => None,
        }
    }
}

impl Components {
    /// Reads and checks `[diff]` and `[components]` of a `pipeline.toml`.
    pub fn load(file: &Path) -> Result<Components, ConfigError> {
        Components::from_config(&pipeline_config::ConfigFile::load(file)?)
    }

    /// Checks `[diff]` and `[components]` of a config read once.
    pub fn from_config(config: &pipeline_config::ConfigFile) -> Result<Components, ConfigError> {
        Components::parse(&config.path, &config.text)
    }

    /// Parses and checks the sections from `text`; `file` only names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Components, ConfigError> {
        // The three sections in one reading of the document; when it does not read, each
        // section on its own, so the error names its key and line as `parse_section` does.
        let raw = match toml::from_str::<Sections>(text) {
            Ok(sections) => RawConfig {
                diff: sections.diff,
                components: sections.components,
                ships_output_of: ships_output_of(sections.lambda),
            },
            Err(_) => RawConfig {
                diff: pipeline_config::parse_section(file, text, "diff")?,
                components: pipeline_config::parse_section(file, text, "components")?,
                ships_output_of: ships_output_of(pipeline_config::parse_section(file, text, "lambda")?),
            },
        };
        Components::check(file, text, raw)
    }

    /// Checks parsed sections: globs compile, names are unique as flags, dependencies exist and have no cycle.
    pub fn check(file: &Path, text: &str, raw: RawConfig) -> Result<Components, ConfigError> {
        let names: Vec<&String> = raw.components.keys().collect();
        let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

        let mut includes = GlobsBuilder::default();
        let mut include_owner = Vec::new();
        let mut excludes = GlobsBuilder::default();
        let mut exclude_owner = Vec::new();
        let mut flag_owner: BTreeMap<String, &str> = BTreeMap::new();
        let mut components = Vec::with_capacity(names.len());
        let mut edges: Vec<Vec<(usize, &Spanned<String>)>> = vec![Vec::new(); names.len()];

        for (i, (name, settings)) in raw.components.iter().enumerate() {
            let key = format!("components.{name}");
            check_component_name(file, text, &key, name, settings)?;
            for pattern in &settings.paths {
                includes.add(pattern.get_ref(), compile(file, text, pattern, &format!("{key}.paths"))?);
                include_owner.push(i);
            }
            for pattern in &settings.exclude {
                excludes.add(pattern.get_ref(), compile(file, text, pattern, &format!("{key}.exclude"))?);
                exclude_owner.push(i);
            }
            edges[i] = dependency_edges(file, text, &key, settings, &index)?;
            let mut depends_on: Vec<String> = settings.depends_on.iter().map(|d| d.get_ref().clone()).collect();
            // An unknown shipped component is lambda-packager's error to report, not the diff's.
            for shipped in raw.ships_output_of.get(name.as_str()).into_iter().flatten() {
                let Some(&target) = index.get(shipped.get_ref().as_str()).filter(|&&t| t != i) else { continue };
                if !depends_on.contains(shipped.get_ref()) {
                    depends_on.push(shipped.get_ref().clone());
                    edges[i].push((target, shipped));
                }
            }
            let flag_prefix: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
            if let Some(other) = flag_owner.insert(flag_prefix.clone(), name) {
                let span = settings.paths[0].span();
                return Err(ConfigError::at(
                    file,
                    text,
                    span,
                    key,
                    format!("`{name}` and `{other}` give the same flag name `{flag_prefix}_…`; rename one"),
                ));
            }
            check_coverage(file, text, &key, settings)?;
            components.push(Component {
                name: name.clone(),
                flag_prefix,
                depends_on,
                test: settings.test.clone(),
                build: settings.build.clone(),
                deploy: settings.deploy.clone(),
                e2e: settings.e2e.clone(),
            });
        }
        if let Some(cycle) = find_cycle(&edges) {
            return Err(cycle_error(file, text, &names, &cycle));
        }

        let mut global = GlobsBuilder::default();
        for pattern in &raw.diff.global_inputs {
            global.add(pattern.get_ref(), compile(file, text, pattern, "diff.global_inputs")?);
        }
        let build = |b: GlobsBuilder, key: &str| {
            b.build().map_err(|e| ConfigError::caused(file, key, "the globs cannot be built into one set", e))
        };
        let dependents = direct_dependents(&edges);
        Ok(Components {
            default_branch: raw.diff.default_branch.unwrap_or_else(|| "main".into()),
            base_environment: raw.diff.base_environment.unwrap_or_else(|| run_state::DEFAULT_SUCCESS_ENV.into()),
            global_inputs: build(global, "diff.global_inputs")?,
            includes: build(includes, "components")?,
            include_owner,
            excludes: build(excludes, "components")?,
            exclude_owner,
            dependents,
            components,
        })
    }

    /// Whether `path` (repo-relative) belongs to the component: one of its `paths` matches it
    /// and none of its `exclude`.
    pub fn owns(&self, name: &str, path: &str) -> bool {
        let Some(index) = self.components.iter().position(|c| c.name == name) else { return false };
        let matched = |set: &Globs, owner: &[usize]| {
            let mut globs = Vec::new();
            set.matches_into(path, &mut globs);
            globs.iter().any(|&glob| owner[glob] == index)
        };
        matched(&self.includes, &self.include_owner) && !matched(&self.excludes, &self.exclude_owner)
    }

    /// The components, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Component> {
        self.components.iter()
    }

    /// A component by name.
    pub fn get(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The branch whose merge-base is a fallback base.
    pub fn default_branch(&self) -> &str {
        &self.default_branch
    }

    /// The environment whose last success is the default base (`[diff] base_environment`,
    /// `prod` when unset): the last commit that reached it.
    pub fn base_environment(&self) -> &str {
        &self.base_environment
    }
}

/// `coverage` is checked where it is written: only on `test`, its report path and globs sound.
fn check_coverage(file: &Path, text: &str, key: &str, settings: &ComponentSettings) -> Result<(), ConfigError> {
    for (step, command) in [("build", &settings.build), ("deploy", &settings.deploy), ("e2e", &settings.e2e)] {
        if command.as_ref().is_some_and(|c| c.coverage.is_some()) {
            return Err(ConfigError {
                file: file.to_path_buf(),
                line: None,
                key: format!("{key}.{step}.coverage"),
                message: "coverage is read after a test step only; move it to the component's `test` command".into(),
                source: None,
            });
        }
    }
    if let Some(spec) = settings.test.as_ref().and_then(|t| t.coverage.as_ref())
        && let Err(e) = spec.check_written()
    {
        let key = format!("{key}.test.coverage.{}", e.key);
        return Err(match e.span {
            Some(span) => ConfigError::at(file, text, span, key, e.message),
            None => ConfigError { file: file.to_path_buf(), line: None, key, message: e.message, source: None },
        });
    }
    Ok(())
}

/// A component's name can become a flag, a log file name and a report key (nothing that could
/// escape a folder), and it has at least one glob in `paths`.
fn check_component_name(
    file: &Path,
    text: &str,
    key: &str,
    name: &str,
    settings: &ComponentSettings,
) -> Result<(), ConfigError> {
    if let Err(message) = pipeline_config::check_name(name) {
        return Err(match settings.paths.first() {
            Some(path) => ConfigError::at(file, text, path.span(), key, message),
            None => ConfigError { file: file.to_path_buf(), line: None, key: key.to_string(), message, source: None },
        });
    }
    if settings.paths.is_empty() {
        return Err(ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: format!("{key}.paths"),
            message: "a component needs at least one glob in `paths`".into(),
            source: None,
        });
    }
    Ok(())
}

/// A component's `depends_on`, each entry the index of a defined component.
fn dependency_edges<'a>(
    file: &Path,
    text: &str,
    key: &str,
    settings: &'a ComponentSettings,
    index: &BTreeMap<&str, usize>,
) -> Result<Vec<(usize, &'a Spanned<String>)>, ConfigError> {
    let mut edges = Vec::new();
    for dep in &settings.depends_on {
        let Some(&target) = index.get(dep.get_ref().as_str()) else {
            return Err(ConfigError::at(
                file,
                text,
                dep.span(),
                format!("{key}.depends_on"),
                format!(
                    "depends on `{}`, which is not a component; define [components.{}] or remove it",
                    dep.get_ref(),
                    dep.get_ref()
                ),
            ));
        };
        edges.push((target, dep));
    }
    Ok(edges)
}

/// The error for a dependency cycle, at its first edge, naming the whole cycle.
fn cycle_error(file: &Path, text: &str, names: &[&String], cycle: &[(usize, &Spanned<String>)]) -> ConfigError {
    let path: Vec<&str> =
        cycle.iter().map(|&(from, _)| names[from].as_str()).chain([names[cycle[0].0].as_str()]).collect();
    let (from, dep) = cycle[0];
    ConfigError::at(
        file,
        text,
        dep.span(),
        format!("components.{}.depends_on", names[from]),
        format!("dependency cycle {}; remove one of these depends_on entries", path.join(" -> ")),
    )
}

/// Globs match repo-relative `/` paths; `*` stays within a folder and `**` spans folders.
fn compile(file: &Path, text: &str, pattern: &Spanned<String>, key: &str) -> Result<Glob, ConfigError> {
    pipeline_config::glob(pattern.get_ref()).map_err(|e| {
        ConfigError::at(
            file,
            text,
            pattern.span(),
            key,
            format!("`{}` is not a valid glob: {}", pattern.get_ref(), e.kind()),
        )
    })
}

/// The first cycle found, as the edges that form it. Iterative: a chain of thousands of
/// components must not overflow the stack.
fn find_cycle<'a>(edges: &[Vec<(usize, &'a Spanned<String>)>]) -> Option<Vec<(usize, &'a Spanned<String>)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // The open path: each node with the index of its next edge to follow, and the edges taken.
        let mut frames: Vec<(usize, usize)> = vec![(start, 0)];
        let mut taken: Vec<(usize, &'a Spanned<String>)> = Vec::new();
        marks[start] = Mark::Open;
        while let Some(&mut (node, ref mut next_edge)) = frames.last_mut() {
            let Some(&(next, dep)) = edges[node].get(*next_edge) else {
                marks[node] = Mark::Done;
                frames.pop();
                taken.pop();
                continue;
            };
            *next_edge += 1;
            match marks[next] {
                Mark::Open => {
                    taken.push((node, dep));
                    let from = taken.iter().position(|&(from, _)| from == next).unwrap_or(0);
                    return Some(taken[from..].to_vec());
                }
                Mark::New => {
                    taken.push((node, dep));
                    marks[next] = Mark::Open;
                    frames.push((next, 0));
                }
                Mark::Done => {}
            }
        }
    }
    None
}

/// For each component, the components that depend on it directly.
fn direct_dependents(edges: &[Vec<(usize, &Spanned<String>)>]) -> Vec<Vec<usize>> {
    let mut direct: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    for (from, deps) in edges.iter().enumerate() {
        for &(to, _) in deps {
            direct[to].push(from);
        }
    }
    direct
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_of_the_document_gives_what_each_section_read_alone_gives() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/monorepo/pipeline.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let sections: Sections = toml::from_str(&text).unwrap();
        let diff: DiffSettings = pipeline_config::parse_section(&file, &text, "diff").unwrap();
        let components: BTreeMap<String, ComponentSettings> =
            pipeline_config::parse_section(&file, &text, "components").unwrap();
        let lambda: LambdaShipping = pipeline_config::parse_section(&file, &text, "lambda").unwrap();
        assert!(!components.is_empty() && !diff.global_inputs.is_empty());
        assert_eq!(format!("{:?}", sections.diff), format!("{diff:?}"));
        assert_eq!(format!("{:?}", sections.components), format!("{components:?}"));
        assert_eq!(format!("{:?}", ships_output_of(sections.lambda)), format!("{:?}", ships_output_of(lambda)));
    }
}
