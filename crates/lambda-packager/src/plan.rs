//! Which functions a run packages, and why: decided from values only (the functions, the run's
//! diff, `--only`), before any file is read.

use serde::Serialize;

use crate::{Error, FunctionSpec};

/// What the packaging stage will do with each configured function, in the config's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackagePlan {
    /// Every configured function, with its decision.
    pub functions: Vec<PlannedFunction>,
}

/// One function's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFunction {
    /// The function.
    pub name: String,
    /// What happens to it, and why.
    pub decision: Decision,
}

/// What happens to a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Packaged and listed changed: the deploy stage updates it.
    Changed {
        /// The changed components that cause it: its own, or one whose build output it includes.
        because: Vec<ChangedComponent>,
    },
    /// Packaged and listed changed: its component (named after it by default) is no component
    /// of the diff, so nothing says it did not change.
    NoComponent {
        /// The component looked for.
        component: String,
    },
    /// Packaged (its last zip reused from the cache when its inputs are the same) and listed
    /// unchanged: the deploy stage leaves it as it is. Left out of the packages when an
    /// `include` it ships is not in the checkout (found when the stage runs).
    Unchanged {
        /// Its component, which did not change.
        component: String,
    },
    /// Left out: `--only` does not name it.
    NotSelected,
}

/// A changed component, as the diff says it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedComponent {
    /// The component.
    pub name: String,
    /// Its own changed files.
    pub files: Vec<String>,
    /// The changed components it depends on.
    pub because_of: Vec<String>,
}

impl PackagePlan {
    /// The functions the stage packages (all but those `--only` leaves out).
    pub fn selected(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().filter(|f| f.decision != Decision::NotSelected).map(|f| f.name.as_str())
    }

    /// The packaged functions listed unchanged.
    pub fn unchanged(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().filter(|f| matches!(f.decision, Decision::Unchanged { .. })).map(|f| f.name.as_str())
    }
}

impl run_state::StagePlan for PackagePlan {
    fn describe(&self) -> String {
        let mut out = String::new();
        for function in &self.functions {
            let line = match &function.decision {
                Decision::Changed { because } => {
                    let because: Vec<String> = because.iter().map(ChangedComponent::describe).collect();
                    format!("package   {}: {}", function.name, because.join("; "))
                }
                Decision::NoComponent { component } => {
                    format!(
                        "package   {}: no component `{component}` in the diff, so it counts as changed",
                        function.name
                    )
                }
                Decision::Unchanged { component } => format!(
                    "unchanged {}: component `{component}` unchanged since the base (packaged from the cache when its inputs are the same, listed unchanged)",
                    function.name
                ),
                Decision::NotSelected => format!("skip      {}: not selected (--only)", function.name),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

impl ChangedComponent {
    /// `component `a` changed (a/index.py, a/util.py and 3 more)`.
    fn describe(&self) -> String {
        const SHOWN: usize = 3;
        let mut causes = Vec::new();
        if !self.files.is_empty() {
            let mut files = self.files.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if self.files.len() > SHOWN {
                files.push_str(&format!(" and {} more", self.files.len() - SHOWN));
            }
            causes.push(files);
        }
        if !self.because_of.is_empty() {
            causes.push(format!("because of {}", self.because_of.join(", ")));
        }
        if causes.is_empty() {
            format!("component `{}` changed", self.name)
        } else {
            format!("component `{}` changed ({})", self.name, causes.join("; "))
        }
    }
}

/// `--only` must name configured functions.
pub(crate) fn check_only(functions: &[FunctionSpec], only: &[String]) -> Result<(), Error> {
    match only.iter().find(|name| !functions.iter().any(|f| &f.name == *name)) {
        Some(name) => Err(Error::UnknownFunction {
            name: name.clone(),
            known: functions.iter().map(|f| f.name.clone()).collect(),
        }),
        None => Ok(()),
    }
}

/// Plans the packaging of `functions` (all of `[lambda]`, as configured) for a run whose diff is
/// `diff`, only those of `only` when it names some: pure. A function is changed when its
/// component changed, or a component whose build output it includes did; a function whose
/// `component` was written must name a component of the diff (one named after the function by
/// default that is no component counts as changed). A function `only` leaves out is not looked
/// up in the diff.
pub fn plan(functions: &[FunctionSpec], diff: &source_diff::DiffReport, only: &[String]) -> Result<PackagePlan, Error> {
    check_only(functions, only)?;
    let mut planned = Vec::new();
    for function in functions {
        let decision = if only.is_empty() || only.contains(&function.name) {
            decide(function, diff)?
        } else {
            Decision::NotSelected
        };
        planned.push(PlannedFunction { name: function.name.clone(), decision });
    }
    Ok(PackagePlan { functions: planned })
}

/// One selected function's decision.
fn decide(function: &FunctionSpec, diff: &source_diff::DiffReport) -> Result<Decision, Error> {
    let unknown = |component: &str| Error::UnknownComponent {
        function: function.name.clone(),
        component: component.to_string(),
        known: diff.components.keys().cloned().collect(),
    };
    // A component whose build output the function ships changes the function too.
    let mut because = Vec::new();
    for component in function.sources.iter().filter_map(|s| s.component.as_ref()) {
        let change = diff.components.get(component).ok_or_else(|| unknown(component))?;
        if change.changed && !because.iter().any(|c: &ChangedComponent| &c.name == component) {
            because.push(ChangedComponent::of(component, change));
        }
    }
    let own = diff.components.get(&function.component);
    if !because.is_empty() {
        // Its own component is not required to exist here (as before the plan): only named
        // when it changed too.
        if let Some(change) = own.filter(|c| c.changed)
            && !because.iter().any(|c| c.name == function.component)
        {
            because.insert(0, ChangedComponent::of(&function.component, change));
        }
        return Ok(Decision::Changed { because });
    }
    Ok(match own {
        Some(change) if change.changed => {
            Decision::Changed { because: vec![ChangedComponent::of(&function.component, change)] }
        }
        Some(_) => Decision::Unchanged { component: function.component.clone() },
        None if function.component_explicit => return Err(unknown(&function.component)),
        None => Decision::NoComponent { component: function.component.clone() },
    })
}

impl ChangedComponent {
    fn of(name: &str, change: &source_diff::ComponentChange) -> ChangedComponent {
        ChangedComponent { name: name.to_string(), files: change.files.clone(), because_of: change.because_of.clone() }
    }
}
