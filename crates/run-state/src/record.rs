//! The records a run is made of.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A pipeline step, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Resolve the commit to build.
    Source,
    /// Work out what changed.
    Diff,
    /// Lint and check.
    Validate,
    /// Build and package.
    Build,
    /// Run tests.
    Test,
    /// Deploy to the test environment.
    Deploy,
    /// Wait for a human.
    Approval,
    /// End-to-end tests.
    E2e,
    /// Dynamic security tests.
    Dast,
    /// Deploy to production.
    ProdDeploy,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Planned, not started.
    Pending,
    /// Started, not finished.
    Running,
    /// Finished well.
    Passed,
    /// Finished badly.
    Failed,
    /// Not needed for this change.
    Skipped,
    /// Stopped before it finished.
    Cancelled,
}

impl Status {
    /// Whether the step has ended, one way or another.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }
}

macro_rules! text_enum {
    ($ty:ty, $what:literal, $($variant:ident = $text:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            /// The name used in files and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(<$ty>::$variant),)+
                    _ => Err(format!(concat!("unknown ", $what, " `{}`; expected one of: {}"), s, [$($text),+].join(", "))),
                }
            }
        }
    };
}

text_enum!(
    Step,
    "step",
    Source = "source",
    Diff = "diff",
    Validate = "validate",
    Build = "build",
    Test = "test",
    Deploy = "deploy",
    Approval = "approval",
    E2e = "e2e",
    Dast = "dast",
    ProdDeploy = "prod-deploy"
);
text_enum!(
    Status,
    "status",
    Pending = "pending",
    Running = "running",
    Passed = "passed",
    Failed = "failed",
    Skipped = "skipped",
    Cancelled = "cancelled"
);

/// The component name of steps that concern the whole pipeline rather than one component.
pub const PIPELINE: &str = "pipeline";

/// The state of one step of one component in one run. Recording it again replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: String,
    /// The commit the run builds.
    pub commit: String,
    /// The component, or [`PIPELINE`].
    pub component: String,
    /// The step.
    pub step: Step,
    /// Where it is.
    pub status: Status,
    /// When it started.
    #[serde(default, with = "time_opt")]
    pub started_at: Option<SystemTime>,
    /// When it ended.
    #[serde(default, with = "time_opt")]
    pub ended_at: Option<SystemTime>,
    /// What a reader needs to act on it.
    #[serde(default)]
    pub details: Details,
}

/// Free-form details of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// Why it failed, on one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of its log, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Where its full log is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// A short note (why it was skipped, the base of a diff …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl StepRecord {
    /// A record for `component`/`step` of a run, with no times or details yet.
    pub fn new(run_id: &str, commit: &str, component: &str, step: Step, status: Status) -> StepRecord {
        StepRecord {
            run_id: run_id.into(),
            commit: commit.into(),
            component: component.into(),
            step,
            status,
            started_at: None,
            ended_at: None,
            details: Details::default(),
        }
    }

    /// How long it ran, when it has both times.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.ended_at?.duration_since(self.started_at?).ok()
    }
}

/// RFC 3339 timestamps in files, so people can read them.
pub(crate) mod time_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
