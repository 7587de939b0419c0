//! What an approval of this environment covers of the site (pure): one part, `site:COMPONENT`,
//! over every file's path and SHA-256. The runtime config is left out: it is made from the
//! environment's own stack outputs at publish time, and scanned for secrets then.

use sha2::{Digest, Sha256};

use crate::local::{Kind, Site};

/// The part prefix this crate deploys and so compares.
pub const PART: &str = "site:";

/// The site's part of a release digest.
pub fn site_digest(component: &str, site: &Site) -> run_state::ReleaseDigest {
    let mut hasher = Sha256::new();
    for (path, file) in site.files.iter().filter(|(_, f)| f.kind != Kind::RuntimeConfig) {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(file.sha256.as_bytes());
        hasher.update([0]);
    }
    let mut digest = run_state::ReleaseDigest::default();
    digest.insert(format!("{PART}{component}"), hex::encode(hasher.finalize()));
    digest
}
