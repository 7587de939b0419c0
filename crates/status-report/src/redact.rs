//! Keeps secrets out of what the store and reports keep: log tails and error messages.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::Error;
use crate::record::Details;

/// The most lines a log tail keeps.
pub const TAIL_LINES: usize = 40;
/// The most bytes a log tail keeps.
pub const TAIL_BYTES: usize = 4096;
/// How much of the end of a log file [`read_log_tail`] reads: enough that a
/// multi-line secret (a private key block) ending in the tail starts inside it.
const READ_BYTES: u64 = 64 * 1024;

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

/// The end of a log, secrets redacted: at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes.
///
/// Redacts before cutting, so a cut never leaves half a secret that the
/// patterns no longer recognise. Whole lines are kept unless the last line
/// alone is longer than the limit.
pub fn log_tail(log: &str) -> String {
    let redacted = redact(log);
    let lines: Vec<&str> = redacted.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if tail.len() > TAIL_BYTES {
        let mut cut = tail.len() - TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        // Start at the next whole line when there is one inside the limit.
        let start = match tail[cut..].find('\n') {
            Some(at) if cut + at + 1 < tail.len() => cut + at + 1,
            _ => cut,
        };
        tail.drain(..start);
    }
    tail
}

/// [`log_tail`] of a log file, reading only its end so huge logs cost little.
pub fn read_log_tail(path: &Path) -> Result<String, Error> {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let start = file.metadata()?.len().saturating_sub(READ_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        // Read from the middle of a line: drop that partial line.
        let text = if start > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
        Ok(log_tail(text))
    };
    read().map_err(|e| Error::io(path, e))
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
    use super::{TAIL_BYTES, TAIL_LINES, log_tail, redact};

    #[test]
    fn tail_keeps_the_last_lines_within_the_byte_limit() {
        let log: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let tail = log_tail(&log);
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("line 61\n") && tail.ends_with("line 100"), "{tail}");

        let wide: String = (1..=40).map(|i| format!("{i:03} {}\n", "é".repeat(100))).collect();
        let tail = log_tail(&wide);
        assert!(tail.len() <= TAIL_BYTES);
        // Whole lines only: the first kept line starts with its number.
        assert!(tail.lines().all(|l| l.len() == 204), "{tail}");
        assert!(tail.ends_with(&"é".repeat(100)));

        let one_line = "x".repeat(10_000);
        assert_eq!(log_tail(&one_line).len(), TAIL_BYTES);
    }

    #[test]
    fn tail_redacts_before_cutting() {
        let log = format!("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI{}\nok", "K".repeat(5000));
        let tail = log_tail(&log);
        assert!(!tail.contains("KKKK"), "{tail}");
        assert!(tail.contains("AWS_SECRET_ACCESS_KEY=[REDACTED]"));
    }

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
