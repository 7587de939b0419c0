//! Keeping secrets out of findings: the values the run knows are secret (what the secret
//! scanner flagged in any file, `NoEcho` parameters' defaults, values of properties whose name
//! says they are secret, high-entropy literals of the templates) are shown as `[REDACTED]` in
//! every finding, native or a tool's, and so in every report format and in `validate.json`.

use std::collections::BTreeSet;

use crate::node::{Node, Value};
use crate::{Finding, secrets};

/// What a masked value is shown as.
pub const REDACTED: &str = "[REDACTED]";

/// The shortest value masked wherever it appears; a shorter one is masked only where a message
/// quotes it whole (`'abc1'`), so that a short default does not eat ordinary words.
const MIN_ANYWHERE: usize = 6;
/// The shortest value masked at all.
const MIN_QUOTED: usize = 4;
/// Messages quote at most this many characters of a value, then `…` (see `rules::schema`).
const QUOTED_PREFIX: usize = 60;

/// The secret values of a run.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a value containing another is masked whole.
    values: Vec<String>,
}

impl Masker {
    /// A masker for these values (too short ones are left out).
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        let set: BTreeSet<String> =
            values.into_iter().map(|v| v.trim().to_string()).filter(|v| v.chars().count() >= MIN_QUOTED).collect();
        let mut values: Vec<String> = set.into_iter().collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Masker { values }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known secret replaced by [`REDACTED`].
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if value.chars().count() >= MIN_ANYWHERE {
                if out.contains(value.as_str()) {
                    out = out.replace(value.as_str(), REDACTED);
                }
                // A long value quoted cut short: `'<first 60 characters>…'`.
                if value.chars().count() > QUOTED_PREFIX {
                    let prefix: String = value.chars().take(QUOTED_PREFIX).collect();
                    let cut = format!("{prefix}…");
                    if out.contains(&cut) {
                        out = out.replace(&cut, REDACTED);
                    }
                }
            } else {
                for (open, close) in [('\'', '\''), ('"', '"'), ('`', '`')] {
                    let quoted = format!("{open}{value}{close}");
                    if out.contains(&quoted) {
                        out = out.replace(&quoted, &format!("{open}{REDACTED}{close}"));
                    }
                }
            }
        }
        out
    }

    /// Masks the messages of findings in place.
    pub fn apply(&self, findings: &mut [Finding]) {
        if self.is_empty() {
            return;
        }
        for finding in findings {
            finding.message = self.mask(&finding.message);
        }
    }
}

/// The values of a parsed template that no finding may quote: `NoEcho` parameters' defaults,
/// literal values of properties (at any depth) whose name says they are secret
/// (`MasterUserPassword`, `ApiKey`, `Token` …; [`secrets::is_secret_name`]), and string
/// literals of high entropy ([`secrets::high_entropy`]).
pub fn template_secrets(root: &Node) -> Vec<String> {
    let mut found = Vec::new();
    for (_, parameter) in root.get("Parameters").map(Node::entries).unwrap_or(&[]) {
        let no_echo = parameter.get("NoEcho").is_some_and(|n| matches!(n.as_str(), Some("true" | "True" | "TRUE")));
        if no_echo && let Some(default) = parameter.get("Default").and_then(Node::as_str) {
            found.push(default.to_string());
        }
    }
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    if secrets::is_secret_name(&key.name) {
                        collect_literals(value, &mut found);
                    }
                    stack.push(value);
                }
            }
            Value::Seq(items) => stack.extend(items),
            Value::String(text) if secrets::high_entropy(text) => found.push(text.clone()),
            _ => {}
        }
    }
    found
}

/// The string literal a secret-named key holds (or the items of a list it holds), unless it is a
/// reference (`{{resolve:…}}`, `${…}`). Not deeper: under `GenerateSecretString` sit settings
/// (`GenerateStringKey: password`), not secrets.
fn collect_literals(node: &Node, found: &mut Vec<String>) {
    let values: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    for value in values {
        if let Value::String(text) = &value.value
            && !text.contains("{{resolve:")
            && !text.contains("${")
        {
            found.push(text.clone());
        }
    }
}

#[cfg(test)]
mod template_tests {
    use super::template_secrets;

    #[test]
    fn settings_under_a_secret_named_map_are_not_secrets() {
        let root = crate::parse(
            "Parameters:\n  Pw:\n    Type: String\n    NoEcho: true\n    Default: letmein-2024\nResources:\n  S:\n    Type: AWS::SecretsManager::Secret\n    Properties:\n      GenerateSecretString:\n        GenerateStringKey: password\n  D:\n    Type: AWS::RDS::DBInstance\n    Properties:\n      MasterUserPassword: opensesame-77\n      MasterUsername: !Sub '${AWS::StackName}'\n",
        )
        .unwrap();
        let mut found = template_secrets(&root);
        found.sort();
        assert_eq!(found, ["letmein-2024", "opensesame-77"]);
    }
}

#[cfg(test)]
mod tests {
    use super::{Masker, REDACTED};

    #[test]
    fn long_values_are_masked_anywhere_short_ones_only_quoted_whole() {
        let masker = Masker::new(["Pw9xQ7zLk2Vb".to_string(), "abc1".to_string(), "ab".to_string()]);
        assert_eq!(masker.mask("'Pw9xQ7zLk2Vb' does not match"), format!("'{REDACTED}' does not match"));
        assert_eq!(masker.mask("x=Pw9xQ7zLk2Vb;"), format!("x={REDACTED};"));
        assert_eq!(masker.mask("'abc1' is not"), format!("'{REDACTED}' is not"));
        assert_eq!(masker.mask("abc12 and ab"), "abc12 and ab");
    }

    #[test]
    fn a_long_value_cut_short_in_a_message_is_masked() {
        let secret: String = "k3Y9".repeat(20);
        let shown: String = secret.chars().take(60).collect();
        let masker = Masker::new([secret]);
        assert_eq!(masker.mask(&format!("'{shown}…' is longer than 64")), format!("'{REDACTED}' is longer than 64"));
    }
}
