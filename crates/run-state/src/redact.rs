//! Keeps secrets out of what the store and reports keep: log tails and error messages.

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

/// The secret patterns the redactor and validate's scanner share, so they agree on what a secret looks like.
pub mod patterns {
    /// The prefixes of AWS access key IDs (long-term, temporary, and the other issued kinds).
    pub const AWS_KEY_ID_PREFIXES: &[&str] = &["AKIA", "ASIA", "ABIA", "ACCA"];
    /// An AWS access key ID (word boundaries are the caller's).
    pub const AWS_KEY_ID: &str = r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}";
    /// The header line of a private key block.
    pub const PRIVATE_KEY_BEGIN: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----";
    /// The footer line of a private key block.
    pub const PRIVATE_KEY_END: &str = r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----";
    /// Words that, inside a name (`DB_PASSWORD`, `apiKey`, `--auth-token`), say its value is a secret;
    /// compared with the name lower-cased and stripped of `_`, `-` and `.`.
    pub const SECRET_NAME_WORDS: &[&str] =
        &["password", "passwd", "secret", "token", "apikey", "accesskey", "privatekey", "credential"];
}

/// A regex alternation matching any [`patterns::SECRET_NAME_WORDS`] with optional `_`/`-` between its words.
fn secret_word_alternation() -> String {
    patterns::SECRET_NAME_WORDS
        .iter()
        .map(|word| match *word {
            "apikey" => "api[_-]?key".to_string(),
            "accesskey" => "access[_-]?key".to_string(),
            "privatekey" => "private[_-]?key".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let words = secret_word_alternation();
    let name = format!(r"[A-Za-z0-9_.-]*(?:{words})[A-Za-z0-9_.-]*");
    [
        // Private key blocks, whole.
        (
            format!(r"(?s){}.*?({}|\z)", patterns::PRIVATE_KEY_BEGIN, patterns::PRIVATE_KEY_END),
            "[REDACTED PRIVATE KEY]",
        ),
        // AWS access key ids.
        (format!(r"\b{}\b", patterns::AWS_KEY_ID), "[REDACTED AWS KEY ID]"),
        // `aws configure set aws_secret_access_key VALUE` and the like, as `set -x` prints them.
        (format!(r#"(?i)\b(configure\s+set\s+{name}\s+)[^\s"']+"#), "$1[REDACTED]"),
        // Command-line flags whose name says secret, with the value after a space: `--password X`
        // (on the same line: `--password-stdin` ending a line takes nothing from the next).
        (format!(r#"(?i)(\s--?{name})([ \t]+["']?)[^\s"'=-][^\s"']*"#), "$1$2[REDACTED]"),
        // A password glued to `-p`, as the MySQL clients and sshpass take it: `mysql -u root -pX`.
        // Only for those commands, and only on their own command line (not past `;`, `&`, `|`),
        // so `mkdir -pv dir` keeps its flags.
        (
            r#"\b((?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlpump|mysqlsh|mariadb(?:-[a-z]+)?|sshpass)\b[^\n;&|]*?\s-p["']?)[^\s"']+"#.to_string(),
            "$1[REDACTED]",
        ),
        // A registry password after `-p`: `docker login -u me -p X` (podman, nerdctl, buildah,
        // skopeo, `helm registry login` alike), only on the login's own command line.
        (
            r#"\b((?:docker|podman|nerdctl|buildah|skopeo|helm\s+registry)\s+login\b[^\n;&|]*?\s-p\s*["']?)[^\s"']+"#
                .to_string(),
            "$1[REDACTED]",
        ),
        // A quoted assignment, as `set -x` prints one whose value has spaces: `+ export 'TOKEN=a b'`.
        (format!(r#"(?i)'({name})=[^'\n]*'"#), "'$1=[REDACTED]'"),
        (format!(r#"(?i)"({name})=[^"\n]*""#), "\"$1=[REDACTED]\""),
        // name = value pairs whose name says secret (`--password=X`, `TOKEN: X`, `"apiKey": "X"`).
        (format!(r#"(?i)\b({name})(["']?\s*[:=]\s*["']?)[^\s"',;]+"#), "$1$2[REDACTED]"),
        // Bearer and basic auth headers.
        (r"(?i)\b(authorization:\s*(bearer|basic)\s+)\S+".to_string(), "$1[REDACTED]"),
        // Credentials in URLs.
        (r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@".to_string(), "$1[REDACTED]@"),
    ]
    .into_iter()
    .map(|(pattern, replacement)| (Regex::new(&pattern).expect("redaction patterns are valid"), replacement))
    .collect()
});

/// Every pattern of [`PATTERNS`] at once: no match means [`redact`] changes nothing.
static ANY_PATTERN: LazyLock<regex::RegexSet> = LazyLock::new(|| {
    regex::RegexSet::new(PATTERNS.iter().map(|(pattern, _)| pattern.as_str())).expect("redaction patterns are valid")
});

static KEY_BEGIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(patterns::PRIVATE_KEY_BEGIN).expect("the key header pattern is valid"));
static KEY_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(patterns::PRIVATE_KEY_END).expect("the key footer pattern is valid"));

/// `text` with every secret-looking value replaced by `[REDACTED …]`.
pub fn redact(text: &str) -> String {
    // One pass over the text for all patterns: most log lines hold no secret at all.
    if !ANY_PATTERN.is_match(text) {
        return text.to_string();
    }
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
    let mut file = crate::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
    let mut read = || -> std::io::Result<String> {
        let start = file.metadata()?.len().saturating_sub(READ_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        (&mut file).take(READ_BYTES).read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        // Read from the middle of a line: drop that partial line.
        let text = if start > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
        Ok(log_tail(text))
    };
    read().map_err(|e| Error::io(path, e))
}

/// A writer that redacts what passes through it, line by line, before it reaches `inner`:
/// a step's log is kept redacted on disk, not only in the record.
///
/// A line is written once its newline arrives (or at [`RedactingWriter::finish`]); a line
/// longer than 64 KiB is written in pieces, each redacted. Lines inside a private key block
/// are replaced whole, so a key printed over many writes never reaches the file.
#[derive(Debug)]
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
    in_private_key: bool,
}

/// The longest line kept whole before it is written in pieces.
const MAX_LINE: usize = 64 * 1024;

impl<W: std::io::Write> RedactingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner, pending: Vec::new(), in_private_key: false }
    }

    fn emit(&mut self, line: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let out = if self.in_private_key {
            if KEY_END.is_match(&text) {
                self.in_private_key = false;
            }
            if line.ends_with(b"\n") { "[REDACTED PRIVATE KEY]\n".to_string() } else { String::new() }
        } else if KEY_BEGIN.is_match(&text) && !KEY_END.is_match(&text) {
            self.in_private_key = true;
            let start = KEY_BEGIN.find(&text).map_or(0, |m| m.start());
            format!("{}[REDACTED PRIVATE KEY]\n", redact(&text[..start]))
        } else {
            redact(&text)
        };
        self.inner.write_all(out.as_bytes())
    }

    /// Writes what is left (a last line without its newline) and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        // Every whole line, then one drain: draining line by line would move the rest of the
        // buffer once per line (quadratic on output of many short lines).
        let pending = std::mem::take(&mut self.pending);
        let mut start = 0;
        while let Some(at) = pending[start..].iter().position(|&b| b == b'\n') {
            let result = self.emit(&pending[start..=start + at]);
            start += at + 1;
            if let Err(error) = result {
                self.pending = pending[start..].to_vec();
                return Err(error);
            }
        }
        self.pending = pending;
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE {
            let piece = std::mem::take(&mut self.pending);
            self.emit(&piece)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn details(details: Details) -> Details {
    Details {
        error: details.error.as_deref().map(redact),
        log_tail: details.log_tail.as_deref().map(redact),
        note: details.note.as_deref().map(redact),
        log_path: details.log_path,
        runner: details.runner,
        runner_process: details.runner_process,
        by: details.by.as_deref().map(|by| Box::new(redact(by))),
        coverage: details.coverage,
        // Hex digests and part names only.
        digest: details.digest,
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

    #[test]
    fn hides_what_set_x_prints() {
        let log = "+ mysql --password hunter2xyz -h db\n+ aws configure set aws_secret_access_key wJalrXUtnFEMIK7MDENG\n\
                   + curl --api-key 'abc123def' https://x\n+ deploy --token=t0k3nvalue --verbose\n+ mkdir -p build";
        let out = redact(log);
        for secret in ["hunter2xyz", "wJalrXUtnFEMIK7MDENG", "abc123def", "t0k3nvalue"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("-h db") && out.contains("--verbose") && out.contains("mkdir -p build"), "{out}");
    }

    #[test]
    fn the_streaming_writer_redacts_across_writes() {
        use std::io::Write;
        let mut writer = super::RedactingWriter::new(Vec::new());
        for piece in [
            "ok 1\npass",
            "word=hunter2",
            "2\n-----BEGIN RSA PRIVATE KEY-----\nMIIEo",
            "wAAA\n-----END RSA PRIVATE KEY-----\nkey AKIAIOSFODNN7EXAMPLE",
            "\nlast",
        ] {
            writer.write_all(piece.as_bytes()).unwrap();
        }
        let out = String::from_utf8(writer.finish().unwrap()).unwrap();
        for secret in ["hunter2", "MIIEo", "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.starts_with("ok 1\npassword=[REDACTED]\n"), "{out}");
        assert!(out.ends_with("\nlast"), "{out}");
    }

    #[test]
    fn hides_attached_passwords_exports_and_aws_configure_as_set_x_prints_them() {
        let log = "+ mysql -u root -pHunter2Secret -h db\n+ export DB_PASSWORD=x\n\
                   + aws configure set aws_secret_access_key wJalrXUtnFEMIK7MDENGbPx\n\
                   + export 'API_TOKEN=two words'\n+ mysqldump --user=root -pS3cr3tPass db\n\
                   + mkdir -p dir\n+ mkdir -pv out/dir\n+ mysql -u root -p -h db\n+ cp -pr a b\n\
                   + mysql -u root -p < dump.sql && mkdir -pv logs";
        let out = redact(log);
        for secret in ["Hunter2Secret", "DB_PASSWORD=x", "wJalrXUtnFEMIK7MDENGbPx", "two words", "S3cr3tPass"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        for kept in
            ["mkdir -p dir", "mkdir -pv out/dir", "mysql -u root -p -h db", "cp -pr a b", "-h db", "mkdir -pv logs"]
        {
            assert!(out.contains(kept), "{kept} was redacted in {out}");
        }
    }

    #[test]
    fn hides_a_registry_login_password_after_p_and_keeps_other_p_flags() {
        assert_eq!(
            redact("+ docker login -u ci -p hunter2 reg.example.com"),
            "+ docker login -u ci -p [REDACTED] reg.example.com"
        );
        assert_eq!(redact("docker login -p 'hunter2' reg"), "docker login -p '[REDACTED]' reg");
        assert_eq!(redact("+ helm registry login -u me -phunter2 reg"), "+ helm registry login -u me -p[REDACTED] reg");
        for kept in ["docker run -p 8080:80 nginx", "docker login reg; mkdir -p out"] {
            assert_eq!(redact(kept), kept);
        }
        // A failing step's log, written through the same writer.
        let mut writer = super::RedactingWriter::new(Vec::new());
        std::io::Write::write_all(&mut writer, b"+ docker login -u ci -p hunter2 reg\nLogin failed\n").unwrap();
        let log = String::from_utf8(writer.finish().unwrap()).unwrap();
        assert_eq!(log, "+ docker login -u ci -p [REDACTED] reg\nLogin failed\n");
    }
}
