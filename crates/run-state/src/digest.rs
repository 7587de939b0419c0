//! What an approval covers: one digest per part of what production will receive (each stack's
//! template as sent with its parameters, each function's package, the site's files), recorded
//! with the approval and compared by the deploy that follows it.
//!
//! The parts are named `KIND:NAME` (`stack:master`, `code:api-handler`, `site:frontend`); each
//! deploying stage computes the parts it deploys and compares only those, so a stage never
//! vouches for another's.
//!
//! ```
//! use run_state::ReleaseDigest;
//!
//! let mut approved = ReleaseDigest::default();
//! approved.insert("stack:master", "aa11");
//! approved.insert("code:api", "bb22");
//! let mut now = approved.clone();
//! now.insert("stack:master", "cc33");
//! assert_eq!(approved.differences(&now, "stack:"), ["stack:master changed since the approval"]);
//! assert!(approved.differences(&now, "code:").is_empty());
//! now.insert("code:other", "dd44");
//! assert_eq!(approved.differences(&now, "code:"), ["code:other was not in what was approved"]);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Part name to hex digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReleaseDigest {
    /// `KIND:NAME` to its digest.
    pub parts: BTreeMap<String, String>,
}

impl ReleaseDigest {
    /// Sets one part.
    pub fn insert(&mut self, part: impl Into<String>, digest: impl Into<String>) {
        self.parts.insert(part.into(), digest.into());
    }

    /// Adds every part of `other`.
    pub fn extend(&mut self, other: ReleaseDigest) {
        self.parts.extend(other.parts);
    }

    /// Whether there is no part.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// How `now`'s parts under `prefix` (`stack:`) differ from the approved ones, one line
    /// each: changed since the approval, or not in it. An approved part that `now` lacks is no
    /// difference: deploying less than was approved (a component refused since) deploys
    /// nothing unapproved. Empty when everything `now` would deploy was approved as it is.
    pub fn differences(&self, now: &ReleaseDigest, prefix: &str) -> Vec<String> {
        let approved = self.parts.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix));
        let current = now.parts.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix));
        let approved: BTreeMap<&String, &String> = approved.collect();
        let current: BTreeMap<&String, &String> = current.collect();
        let mut out = Vec::new();
        for (part, digest) in &current {
            match approved.get(part) {
                Some(was) if was == digest => {}
                Some(_) => out.push(format!("{part} changed since the approval")),
                None => out.push(format!("{part} was not in what was approved")),
            }
        }
        out
    }
}
