//! Keeps secrets out of what the store and reports keep: log tails and error messages.

use std::sync::LazyLock;

use regex::Regex;

use crate::record::Details;

static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Private key blocks, whole.
        (r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\z)", "[REDACTED PRIVATE KEY]"),
        // AWS access key ids.
        (r"\b(AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b", "[REDACTED AWS KEY ID]"),
        // name = value pairs whose name says secret.
        (
            r#"(?i)\b([A-Za-z0-9_.-]*(secret|password|passwd|token|api[_-]?key|credential)[A-Za-z0-9_.-]*)(["']?\s*[:=]\s*["']?)[^\s"',;]+"#,
            "$1$3[REDACTED]",
        ),
        // Bearer and basic auth headers.
        (r"(?i)\b(authorization:\s*(bearer|basic)\s+)\S+", "$1[REDACTED]"),
        // Credentials in URLs.
        (r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", "$1[REDACTED]@"),
    ]
    .into_iter()
    .map(|(pattern, replacement)| (Regex::new(pattern).expect("redaction patterns are valid"), replacement))
    .collect()
});

/// `text` with every secret-looking value replaced by `[REDACTED …]`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (pattern, replacement) in PATTERNS.iter() {
        if pattern.is_match(&out) {
            out = pattern.replace_all(&out, *replacement).into_owned();
        }
    }
    out
}

pub(crate) fn details(details: Details) -> Details {
    Details {
        error: details.error.as_deref().map(redact),
        log_tail: details.log_tail.as_deref().map(redact),
        note: details.note.as_deref().map(redact),
        log_path: details.log_path,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_common_secrets_and_keeps_the_rest() {
        let log = "user=alice\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nkey id AKIAIOSFODNN7EXAMPLE used\n\
                   password: hunter2\nAuthorization: Bearer eyJhbGciOi.x.y\nhttps://bob:s3cr3t@example.com/x\n\
                   -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n1 passed";
        let out = redact(log);
        for secret in ["wJalrXUtnFEMI", "AKIAIOSFODNN7EXAMPLE", "hunter2", "eyJhbGciOi", "s3cr3t", "MIIEow"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("user=alice"));
        assert!(out.contains("1 passed"));
        assert!(out.contains("AWS_SECRET_ACCESS_KEY=[REDACTED]"));
    }
}
