//! What an approval of this environment covers, from a plan (pure): one part per stack (its
//! template as sent, its parameters, capabilities and tags) and per function code update (its
//! package), so the deploy after an approval can refuse anything that changed since.

use sha2::{Digest, Sha256};

use crate::config::ParameterValue;
use crate::plan::Plan;

/// The part prefixes this crate deploys and so compares.
pub const PARTS: [&str; 2] = ["stack:", "code:"];

impl Plan {
    /// The plan's parts: `stack:NAME` and `code:FUNCTION`. A parameter taken from the
    /// environment counts with its value (`lookup`), hashed like the rest, so no value is kept.
    pub fn digest(&self, lookup: &dyn Fn(&str) -> Option<String>) -> run_state::ReleaseDigest {
        let mut digest = run_state::ReleaseDigest::default();
        for stack in &self.stacks {
            let mut hasher = Sha256::new();
            let mut field = |name: &str, value: &str| {
                hasher.update(name.as_bytes());
                hasher.update([0]);
                hasher.update(value.as_bytes());
                hasher.update([0]);
            };
            field("stack_name", &stack.stack_name);
            field("template", &stack.template_sha256);
            for (name, value) in &stack.parameters {
                let value = match value {
                    ParameterValue::Literal(text) => format!("literal:{text}"),
                    ParameterValue::Output { output } => format!("output:{output}"),
                    ParameterValue::Env { env } => format!("env:{env}={}", lookup(env).unwrap_or_default()),
                };
                field(&format!("parameter:{name}"), &value);
            }
            for capability in &stack.capabilities {
                field("capability", capability);
            }
            for (key, value) in &stack.tags {
                field(&format!("tag:{key}"), value);
            }
            for (key, sha256) in &stack.fixed_templates {
                field(&format!("nested:{key}"), sha256);
            }
            digest.insert(format!("stack:{}", stack.name), hex::encode(hasher.finalize()));
            for update in &stack.code_updates {
                digest.insert(format!("code:{}", update.function), update.package.sha256.clone());
            }
        }
        digest
    }
}
