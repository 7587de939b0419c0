//! The approval: what production will receive (shown to the approver and covered by the
//! record), and the decision recorded through [`gate::approval`].

use frontend_publisher::PublishConfig;
use run_state::{RunDir, StageContext, Store};

use crate::Error;
use crate::aws::env_lookup;

/// What was decided about production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody has answered yet: the run stops here (a resume continues it).
    Waiting,
    /// Approved by this person, this way (`--approve`, the prompt).
    Approved {
        /// Who.
        by: String,
        /// How (`--approve`, `prompt`).
        how: &'static str,
    },
    /// Refused by this person, this way (`--refuse`, the prompt).
    Refused {
        /// Who.
        by: String,
        /// How (`--refuse`, `prompt`).
        how: &'static str,
    },
}

/// Records the run's `approval` step through [`gate::approval`]: pending while waiting (with
/// `waiting`, how to continue, as its summary), passed or failed with who decided, how as the
/// comment, and when. `digest` is what production will receive as the approver is shown it:
/// the approval covers exactly that, and the prod deploy refuses anything changed since.
pub fn record_approval(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    decision: &Decision,
    digest: run_state::ReleaseDigest,
    waiting: &str,
) -> Result<(), Error> {
    use gate::approval;
    match decision {
        Decision::Waiting => {
            let summary = format!("waiting for approval: `{waiting}` (or --refuse)");
            approval::request_covering(store, run_id, commit, &summary, Some(digest))?;
        }
        Decision::Approved { by, how } => {
            // A resumed run's approval covers what its request showed (carried over).
            let records = store.run(run_id)?;
            let requested = records.iter().any(|r| r.step == run_state::Step::Approval && r.details.digest.is_some());
            let comment = format!("approved with {how}");
            if requested {
                approval::approve(store, run_id, by, Some(&comment))?;
            } else {
                approval::approve_covering(store, run_id, by, Some(&comment), digest)?;
            }
        }
        Decision::Refused { by, how } => {
            approval::refuse(store, run_id, by, Some(&format!("refused with {how}")))?;
        }
    }
    Ok(())
}

/// The stack plan `stack-deployer --env ENV` would make for this run (before its deploy decision).
fn stack_plan(context: &StageContext, run: &RunDir, env: &str) -> Result<stack_deployer::Plan, stack_deployer::Error> {
    let options = stack_deployer::StageOptions::new(env);
    stack_deployer::plan_stage(context, run, &options, None, &env_lookup).map(|(_, plan)| plan)
}

/// The configured site as it is in dist, when there is a `[publish]` section.
fn site(
    context: &StageContext,
) -> Option<(PublishConfig, Result<frontend_publisher::Site, frontend_publisher::Error>)> {
    let publish = context.required_config().ok().and_then(|c| PublishConfig::from_config(c).ok().flatten())?;
    let site = frontend_publisher::read_site(&publish, &context.root.join(&publish.dist), Vec::new());
    Some((publish, site))
}

/// What the prod deploy would do, as the approval prompt shows it (the stack plan, as
/// `stack-deployer --env prod --dry-run` prints it, and the site's files; what the publish
/// uploads is decided against the bucket once the stacks exist), and the same, part by part
/// ([`run_state::ReleaseDigest`]), for the approval to cover: one plan and one read of the site
/// for both, so the approval covers exactly what was shown. A part that cannot be planned or
/// read is shown as such and left out of the digest, so the deploy that needs it is refused.
pub fn production_view(context: &StageContext, run: &RunDir, env: &str) -> (String, run_state::ReleaseDigest) {
    let mut digest = run_state::ReleaseDigest::default();
    let mut text = match stack_plan(context, run, env) {
        Ok(plan) => {
            digest.extend(plan.digest(&env_lookup));
            plan.describe()
        }
        Err(error) => format!("stacks: cannot plan ({})\n", run_state::error_chain(&error)),
    };
    match site(context) {
        Some((publish, Ok(site))) => {
            text.push_str(&format!("site ({}), {} file(s):\n", publish.dist.display(), site.files.len()));
            for (path, file) in &site.files {
                text.push_str(&format!("  {path} ({})\n", frontend_publisher::human_bytes(file.size)));
            }
            digest.extend(frontend_publisher::site_digest(&publish.component, &site));
        }
        Some((_, Err(error))) => text.push_str(&format!("site: cannot read ({})\n", run_state::error_chain(&error))),
        None => {}
    }
    (text, digest)
}
