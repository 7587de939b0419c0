//! Secret scanning of text files.
//!
//! Rules (all [`Severity::Error`] except `S000` and `S002`):
//!
//! - `S000` (warning): a file not scanned in full: over 5 MiB, or binary (a NUL
//!   byte in its first 8 KiB). Its printable runs (16 or more printable ASCII
//!   characters) are still searched for `S001`, `S002` and `S003`, so a key
//!   pair inside a binary or a huge file is an error, not a pass; only `S004`
//!   is left out. (A file that cannot be read at all, or over the read bound, is
//!   an `S000` from [`crate::scan_secrets`].) Positions in such files count bytes.
//!
//! - `S001`: an AWS secret access key (40 base64 characters, mixed case with a
//!   digit) within 5 lines of an access key ID (`AKIA`, `ASIA`, `ABIA`, `ACCA` + 16 upper-case
//!   letters or digits); reported at the secret key.
//! - `S002` (warning): an access key ID with no secret key within 5 lines.
//! - `S003`: a private key block (`-----BEGIN … PRIVATE KEY-----` followed by a
//!   key body), reported at the `BEGIN` line.
//! - `S004`: a generic secret: a literal of at least 12 characters and at
//!   least 3.5 bits of entropy per character, assigned to a name such as
//!   `password`, `secret`, `token`, `api_key`, `access_key`, `private_key` or
//!   `auth…` (with `=`, `:=`, `:`, `=>`, as a JSON/YAML key, or as the `Value`
//!   next to a `Name: DB_PASSWORD`). Placeholders and references are skipped.
//!
//! `S004` skips, besides placeholders (`changeme`, `xxx…`, `<…>`, one repeated
//! character) and references (`${…}`, `{{resolve:…}}`, `!Ref`, `$VAR`,
//! `os.environ[…]`, `process.env.X`, format fields, URLs, ARNs, file paths):
//! values with whitespace (prose; `Bearer <token>` is split), names of things
//! about a secret (`secret_name`, `token_url`, `password_hash`, `author` …),
//! comparisons (`==`), and unquoted code: calls, subscripts, borrows, numbers,
//! and names or paths made of words (`self.token_v2`, `DB_PASSWORD_2`,
//! `Kind::V1Token`), which a random string almost never is.
//!
//! Findings name the kind of secret and what to do; they never contain any
//! part of the secret. A line matched by an allow-list regex yields no finding;
//! for `S001`, an allow-listed line of the key ID or of the secret key is enough.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use run_state::redact::patterns;

use crate::{Finding, Pos, Severity};

/// Files bigger than this are searched only for AWS keys and private keys.
pub const MAX_FULL_SCAN_BYTES: usize = 5 * 1024 * 1024;
/// The most read of one file; a bigger one is not scanned (an `S000` finding).
pub const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;
/// The shortest printable run of a binary or huge file that is searched (an access key ID is 20).
const MIN_RUN: usize = 16;
/// A NUL byte this early means a binary file.
const BINARY_PROBE: usize = 8 * 1024;
/// How far (in lines) an access key ID and its secret key may be apart.
const PAIR_DISTANCE: usize = 5;
/// The shortest generic secret.
const MIN_SECRET_CHARS: usize = 12;
/// The least Shannon entropy (bits per character) of a generic secret.
const MIN_ENTROPY: f64 = 3.5;
/// Names longer than this are left out of messages.
const MAX_NAME_IN_MESSAGE: usize = 64;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in regexes are valid")
}

/// An AWS access key ID (word boundaries are checked by hand).
static KEY_ID: LazyLock<Regex> = LazyLock::new(|| regex(patterns::AWS_KEY_ID));
/// A maximal run of base64 characters with its padding.
static BASE64_RUN: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z0-9/+]+={0,2}"));
/// The header of a private key block.
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| regex(patterns::PRIVATE_KEY_BEGIN));
/// A key body: a long run of base64.
static KEY_BODY: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Za-z0-9+/=]{40,}"));
/// A name followed by an assignment operator (validated by hand).
static ASSIGNMENT: LazyLock<Regex> =
    LazyLock::new(|| regex(r#"(?P<name>[A-Za-z_$][A-Za-z0-9_.$-]*)(?P<close>\\?["'`]?)\]?[ \t]*(?P<op>=>|:=|=|:)"#));
/// A type annotation before the value: `password: str = `, `const TOKEN: &str = `.
static ANNOTATION: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^[ \t]*[&*:]*[A-Za-z_][A-Za-z0-9_.:<>\[\], |&?']*?[ \t]+=[ \t]*"));
/// `Bearer <token>` and friends, in one string.
static AUTH_SCHEME: LazyLock<Regex> = LazyLock::new(|| regex(r"^(?i:bearer|basic|token|digest)[ \t]+(?P<secret>\S+)$"));
/// A format-string field: `{}`, `{0}`, `{name}`, `{self.x}`.
static FORMAT_FIELD: LazyLock<Regex> = LazyLock::new(|| regex(r"\{[A-Za-z0-9_.:]*\}"));
/// A variable name or a dotted (or `/`, `:`) path, without digits.
static IDENTIFIER_PATH: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^[A-Za-z_$][A-Za-z_$-]*(?:(?:\.|/|::?)[A-Za-z_$][A-Za-z_$-]*)*$"));
/// A URL.
static URL: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z][A-Za-z0-9+.-]*://"));
/// A file path (an absolute one in lower case: base64 may start with `/`).
static FILE_PATH: LazyLock<Regex> = LazyLock::new(|| regex(r"^(?:/[a-z0-9._/-]*|(?:\./|\.\./|~/)[A-Za-z0-9._/-]*)$"));
/// An identifier or a path of them, digits allowed: `DB_PASSWORD_2`, `self.token_v2`, `Kind::V1Token`.
static NAME_LIKE: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(?:::)?[A-Za-z_$][A-Za-z0-9_$-]*(?:(?:::|\.|->)[A-Za-z_$][A-Za-z0-9_$-]*)*$"));
/// The words of an identifier: `Kind`, `V`, `1`, `Token`, `HTTP`.
static NAME_WORD: LazyLock<Regex> = LazyLock::new(|| regex(r"[A-Z]*[a-z]+|[A-Z]+|[0-9]+"));
/// A number in code: `-2146500030i32`, `0x87C5_101E`, `1.5e3`.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"^[-+]?(?:0[xX][0-9A-Fa-f_]+|[0-9][0-9_]*(?:\.[0-9_]+)?(?:[eE][-+]?[0-9]+)?)(?:_?(?:[iu](?:8|16|32|64|128|size)|f32|f64|[uUlL]{1,3}))?$",
    )
});

/// Name words that mean "this holds a secret": the same words the redactor hides values of.
const KEYWORDS: &[&str] = patterns::SECRET_NAME_WORDS;

/// Last words of names that hold something about a secret, not the secret.
const NOT_SECRET_WORDS: &str = "\
    arn arns checksum count description digest dir email enabled endpoint env error expiration expires \
    expiry field file filename format hash header hint id ids kind label len length md5 message method \
    mode msg name names param parameter path pattern policy prompt provider ref regex sha sha1 sha256 \
    size timeout ttl type uri url urls user username var variable version";

/// Values that say "fill me in".
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "replaceme",
    "replace_me",
    "replace-me",
    "placeholder",
    "redacted",
    "dummy",
    "xxxx",
    "***",
    "...",
];

/// Code that reads a secret from somewhere else.
const REFERENCES: &[&str] = &[
    "os.environ",
    "os.getenv",
    "getenv(",
    "process.env",
    "import.meta.env",
    "env::var",
    "std::env",
    "env[",
    "env.fetch",
];

/// Secret scanning of text files; findings never contain the secret.
#[derive(Debug, Clone, Default)]
pub struct SecretScanner {
    /// A line matched by any of these yields no finding.
    allow: Vec<Regex>,
}

/// A bad allow-list.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// A line is not a valid regex.
    #[error("secrets allow-list line {line}: invalid regex; fix or remove that line")]
    InvalidRegex {
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: regex::Error,
    },
}

impl SecretScanner {
    /// An allow-list file's text: one regex per line, blank lines and `#` comments ignored; a bad regex is an error naming its line.
    ///
    /// Each line is trimmed; write `\#` for a regex that starts with `#`.
    pub fn new(allowlist: &str) -> Result<SecretScanner, AllowlistError> {
        let mut allow = Vec::new();
        for (index, line) in allowlist.lines().enumerate() {
            let pattern = line.trim();
            if pattern.is_empty() || pattern.starts_with('#') {
                continue;
            }
            let regex =
                Regex::new(pattern).map_err(|source| AllowlistError::InvalidRegex { line: index + 1, source })?;
            allow.push(regex);
        }
        Ok(SecretScanner { allow })
    }

    /// Scans one file's bytes (path is repo-relative, used in findings). Invalid UTF-8 is read lossily.
    ///
    /// A binary file (a NUL byte in the first 8 KiB) or one over 5 MiB is not scanned in full: it
    /// gets an `S000` warning saying so, and its printable runs are searched for AWS keys (`S001`,
    /// `S002`) and private keys (`S003`).
    ///
    /// Findings come sorted by line, column and rule.
    pub fn scan(&self, path: &str, bytes: &[u8]) -> Vec<Finding> {
        self.scan_with_values(path, bytes).0
    }

    /// [`SecretScanner::scan`], and the values it flagged (the secrets themselves: secret access
    /// keys, access key IDs, generic secrets), so that no other finding of the run quotes them.
    pub fn scan_with_values(&self, path: &str, bytes: &[u8]) -> (Vec<Finding>, Vec<String>) {
        let partial = if bytes.len() > MAX_FULL_SCAN_BYTES {
            Some(format!(
                "too large to scan in full ({} bytes, over {} MiB)",
                bytes.len(),
                MAX_FULL_SCAN_BYTES / (1024 * 1024)
            ))
        } else if bytes[..bytes.len().min(BINARY_PROBE)].contains(&0) {
            Some(format!("binary (a NUL byte in the first {} KiB)", BINARY_PROBE / 1024))
        } else {
            None
        };
        if let Some(reason) = partial {
            return self.scan_runs(path, bytes, &reason);
        }
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).collect();
        let mut scan = Scan {
            path,
            lines: &lines,
            allow: &self.allow,
            origin: None,
            claimed: HashMap::new(),
            findings: Vec::new(),
            values: Vec::new(),
        };
        scan.aws_keys();
        scan.private_keys();
        scan.generic_secrets();
        let mut findings = scan.findings;
        findings.sort();
        (findings, scan.values)
    }

    /// A binary or huge file: its printable runs searched for AWS keys and private keys, and an
    /// `S000` warning that the rest was not.
    fn scan_runs(&self, path: &str, bytes: &[u8], reason: &str) -> (Vec<Finding>, Vec<String>) {
        let mut offsets = Vec::new();
        let mut lines = Vec::new();
        let mut start = None;
        for (at, &b) in bytes.iter().chain([&0u8]).enumerate() {
            let printable = b == b'\t' || (0x20..0x7f).contains(&b);
            match (printable, start) {
                (true, None) => start = Some(at),
                (false, Some(from)) => {
                    if at - from >= MIN_RUN {
                        offsets.push(from);
                        // Printable ASCII is UTF-8.
                        lines.push(std::str::from_utf8(&bytes[from..at]).unwrap_or_default());
                    }
                    start = None;
                }
                _ => {}
            }
        }
        let origin = Origin {
            offsets,
            newlines: bytes.iter().enumerate().filter(|&(_, &b)| b == b'\n').map(|(i, _)| i).collect(),
        };
        let mut scan = Scan {
            path,
            lines: &lines,
            allow: &self.allow,
            origin: Some(&origin),
            claimed: HashMap::new(),
            findings: Vec::new(),
            values: Vec::new(),
        };
        if !lines.is_empty() {
            scan.aws_keys();
            scan.private_keys();
        }
        let mut findings = scan.findings;
        findings.push(Finding {
            path: path.to_owned(),
            pos: Pos { line: 1, column: 1 },
            rule: "S000".to_owned(),
            severity: Severity::Warning,
            message: format!(
                "{reason}: not scanned for passwords and tokens, only its text runs for AWS keys and private keys; \
                 check it by hand, or keep such files out of the component"
            ),
            check: None,
        });
        findings.sort();
        (findings, scan.values)
    }
}

/// Where the printable runs of a binary or huge file start, for positions in the file.
struct Origin {
    /// Byte offset of each run.
    offsets: Vec<usize>,
    /// Byte offsets of the file's line feeds.
    newlines: Vec<usize>,
}

impl Origin {
    /// The file's 1-based line and (byte) column of byte `byte` of run `run`.
    fn pos(&self, run: usize, byte: usize) -> (usize, usize) {
        let offset = self.offsets[run] + byte;
        let before = self.newlines.partition_point(|&n| n < offset);
        let line_start = if before == 0 { 0 } else { self.newlines[before - 1] + 1 };
        (before + 1, offset - line_start + 1)
    }
}

/// One file's scan in progress.
struct Scan<'a> {
    path: &'a str,
    lines: &'a [&'a str],
    allow: &'a [Regex],
    /// For the runs of a binary or huge file: where each is in the file.
    origin: Option<&'a Origin>,
    /// Byte spans (per line index) already taken by a specific rule, so `S004` does not report them again.
    claimed: HashMap<usize, Vec<(usize, usize)>>,
    findings: Vec<Finding>,
    /// The secrets reported.
    values: Vec<String>,
}

impl Scan<'_> {
    /// Whether a line (by index) is allow-listed.
    fn allowed(&self, line: usize) -> bool {
        self.allow.iter().any(|re| re.is_match(self.lines[line]))
    }

    /// The file's 1-based line number of a line (by index).
    fn line_number(&self, line: usize) -> usize {
        self.origin.map_or(line + 1, |origin| origin.pos(line, 0).0)
    }

    /// Adds a finding at a byte offset of a line (by index), unless the line is allow-listed.
    fn report(&mut self, line: usize, byte: usize, rule: &str, severity: Severity, message: String) {
        if self.allowed(line) {
            return;
        }
        let (line, column) = match self.origin {
            Some(origin) => origin.pos(line, byte),
            None => (line + 1, self.lines[line][..byte].chars().count() + 1),
        };
        let pos = Pos { line: to_u32(line), column: to_u32(column) };
        self.findings.push(Finding {
            path: self.path.to_owned(),
            pos,
            rule: rule.to_owned(),
            severity,
            message,
            check: None,
        });
    }

    /// [`Scan::report`] of a finding about `value`, which is kept (unless the line is allow-listed).
    fn report_value(&mut self, line: usize, byte: usize, rule: &str, severity: Severity, message: String, value: &str) {
        if !self.allowed(line) {
            self.values.push(value.to_owned());
        }
        self.report(line, byte, rule, severity, message);
    }

    fn claim(&mut self, line: usize, span: (usize, usize)) {
        self.claimed.entry(line).or_default().push(span);
    }

    fn is_claimed(&self, line: usize, (start, end): (usize, usize)) -> bool {
        self.claimed.get(&line).is_some_and(|spans| spans.iter().any(|&(s, e)| start < e && s < end))
    }

    /// `S001` and `S002`.
    fn aws_keys(&mut self) {
        let mut key_ids = Vec::new();
        for (index, line) in self.lines.iter().enumerate() {
            if !patterns::AWS_KEY_ID_PREFIXES.iter().any(|prefix| line.contains(prefix)) {
                continue;
            }
            for m in KEY_ID.find_iter(line) {
                let before = line[..m.start()].chars().next_back();
                let after = line[m.end()..].chars().next();
                if !before.is_some_and(|c| c.is_ascii_alphanumeric())
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric())
                {
                    key_ids.push((index, m.start(), m.end()));
                }
            }
        }
        if key_ids.is_empty() {
            return;
        }
        let mut paired = vec![false; key_ids.len()];
        let first = key_ids[0].0.saturating_sub(PAIR_DISTANCE);
        let last = (key_ids[key_ids.len() - 1].0 + PAIR_DISTANCE).min(self.lines.len() - 1);
        for index in first..=last {
            // Key IDs are in line order: those within reach are a range of them.
            let from = key_ids.partition_point(|&(line, _, _)| line + PAIR_DISTANCE < index);
            let to = key_ids.partition_point(|&(line, _, _)| line <= index + PAIR_DISTANCE);
            let near: Vec<usize> = (from..to).collect();
            if near.is_empty() {
                continue;
            }
            let line = self.lines[index];
            for m in BASE64_RUN.find_iter(line) {
                let run = m.as_str();
                // Next to `-` or `_`, it is a piece of a longer token (URL-safe base64, a JWT …).
                let joined = line[..m.start()].ends_with(['-', '_']) || line[m.end()..].starts_with(['-', '_']);
                if joined
                    || run.len() != 40
                    || !run.bytes().any(|b| b.is_ascii_uppercase())
                    || !run.bytes().any(|b| b.is_ascii_lowercase())
                    || !run.bytes().any(|b| b.is_ascii_digit())
                {
                    continue;
                }
                for &k in &near {
                    paired[k] = true;
                }
                self.claim(index, (m.start(), m.end()));
                if near.iter().any(|&k| self.allowed(key_ids[k].0)) {
                    continue;
                }
                let key_line = near.iter().map(|&k| key_ids[k].0).min_by_key(|&l| l.abs_diff(index)).unwrap_or(index);
                let message = format!(
                    "AWS secret access key in source (its access key ID is on line {}): remove it, rotate the key, \
                     and load it from Secrets Manager or the environment",
                    self.line_number(key_line)
                );
                self.report_value(index, m.start(), "S001", Severity::Error, message, run);
            }
        }
        for (k, &(index, start, end)) in key_ids.iter().enumerate() {
            self.claim(index, (start, end));
            if !paired[k] {
                let message = "AWS access key ID without a secret nearby: remove it; if the key is live, rotate it \
                               and load credentials from the environment or an IAM role"
                    .to_owned();
                let key_id = self.lines[index][start..end].to_owned();
                self.report_value(index, start, "S002", Severity::Warning, message, &key_id);
            }
        }
    }

    /// `S003`.
    fn private_keys(&mut self) {
        for index in 0..self.lines.len() {
            let line = self.lines[index];
            if !line.contains("PRIVATE KEY") {
                continue;
            }
            let headers: Vec<(usize, usize)> = PRIVATE_KEY.find_iter(line).map(|m| (m.start(), m.end())).collect();
            for (start, end) in headers {
                let has_body = KEY_BODY.is_match(&line[end..])
                    || self.lines[index + 1..].iter().take(PAIR_DISTANCE).any(|next| KEY_BODY.is_match(next));
                if !has_body {
                    continue;
                }
                self.claim(index, (start, line.len()));
                let message = "private key in source: remove it, treat the key as compromised and replace it, \
                               and load it from Secrets Manager at run time"
                    .to_owned();
                self.report(index, start, "S003", Severity::Error, message);
            }
        }
    }

    /// `S004`.
    fn generic_secrets(&mut self) {
        // A `Name: DB_PASSWORD` seen on a line, waiting for its `Value:`.
        let mut pending: Option<(String, usize)> = None;
        for index in 0..self.lines.len() {
            let line = self.lines[index];
            if !line.contains(['=', ':']) {
                continue;
            }
            let mut reported: Vec<(usize, usize)> = Vec::new();
            let mut from = 0;
            while let Some(caps) = ASSIGNMENT.captures_at(line, from) {
                let (Some(name), Some(op)) = (caps.name("name"), caps.name("op")) else { break };
                from = op.end();
                let quoted_name = caps.name("close").is_some_and(|c| !c.as_str().is_empty());
                if !is_assignment(line, op.start(), op.as_str(), quoted_name) {
                    continue;
                }
                let name = name.as_str();
                let mut value_from = op.end();
                if op.as_str() == ":"
                    && let Some(m) = ANNOTATION.find(&line[value_from..])
                    && !line[value_from + m.end()..].starts_with(['=', '>'])
                {
                    value_from += m.end();
                }
                let Some(literal) = value_at(line, value_from) else { continue };
                let key = normalize(name);
                let secret_name = if is_secret_name(name) {
                    Some(name.to_owned())
                } else if matches!(key.as_str(), "value" | "parametervalue") {
                    pending.take().filter(|(_, at)| index - at <= 2).map(|(name, _)| name)
                } else {
                    if matches!(key.as_str(), "name" | "key" | "parameterkey" | "parametername") {
                        let value = &line[literal.start..literal.end];
                        pending = is_secret_name(value).then(|| (value.to_owned(), index));
                    }
                    None
                };
                let Some(secret_name) = secret_name else { continue };
                let Some(literal) = secret_part(line, literal) else { continue };
                let span = (literal.start, literal.end);
                let value = &line[literal.start..literal.end];
                if !looks_like_secret(value, literal.quoted, literal.format)
                    || self.is_claimed(index, span)
                    || reported.iter().any(|&(s, e)| s <= span.0 && span.0 < e)
                {
                    continue;
                }
                reported.push(span);
                let message = generic_message(&secret_name, value);
                let value = value.to_owned();
                self.report_value(index, literal.start, "S004", Severity::Error, message, &value);
            }
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The message of an `S004` finding, naming the variable unless that could show part of the secret.
fn generic_message(name: &str, value: &str) -> String {
    let what = "remove it, rotate it, and load it from Secrets Manager, SSM Parameter Store or the environment";
    let plain = name.len() <= MAX_NAME_IN_MESSAGE
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
        && !value.to_ascii_lowercase().contains(&name.to_ascii_lowercase());
    if plain {
        format!("hard-coded secret assigned to `{name}`: {what}")
    } else {
        format!("hard-coded secret assigned to a secret-like name: {what}")
    }
}

/// Whether the operator found by [`ASSIGNMENT`] really assigns (not `==`, `::`, `http:` …).
fn is_assignment(line: &str, at: usize, op: &str, quoted_name: bool) -> bool {
    let bytes = line.as_bytes();
    let next = bytes.get(at + op.len()).copied();
    match op {
        "=" => !matches!(next, Some(b'=' | b'~')),
        ":" => {
            let prev_colon = at > 0 && bytes[at - 1] == b':';
            !prev_colon && next != Some(b':') && (quoted_name || next.is_none_or(|b| b.is_ascii_whitespace()))
        }
        _ => true,
    }
}

/// A value's span (bytes of its line).
#[derive(Debug, Clone, Copy)]
struct Literal {
    start: usize,
    end: usize,
    /// Written in quotes.
    quoted: bool,
    /// A Python f-string.
    format: bool,
}

/// The value after an assignment operator: a quoted string's contents, or a bare word.
fn value_at(line: &str, from: usize) -> Option<Literal> {
    let rest = line[from..].trim_start_matches([' ', '\t']);
    let start = line.len() - rest.len();
    let prefix =
        rest.bytes().take_while(|b| matches!(b, b'b' | b'B' | b'r' | b'R' | b'u' | b'U' | b'f' | b'F')).count();
    if prefix <= 2
        && let Some(&quote) = rest.as_bytes().get(prefix)
        && matches!(quote, b'"' | b'\'' | b'`')
    {
        let body = start + prefix + 1;
        let mut escaped = false;
        for (i, c) in line[body..].char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == char::from(quote) {
                let format = rest[..prefix].contains(['f', 'F']);
                return Some(Literal { start: body, end: body + i, quoted: true, format });
            }
        }
        return None;
    }
    // A backslash ends it too: an escape inside a string of code (`"token: x\nuser: y"`).
    let len = rest
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '"' | '\'' | '`' | '\\'))
        .unwrap_or(rest.len());
    let word = rest[..len].trim_end_matches([')', ']', '}']);
    (!word.is_empty()).then_some(Literal { start, end: start + word.len(), quoted: false, format: false })
}

/// The secret inside a value: the token of `Bearer <token>`, or the value itself.
fn secret_part(line: &str, literal: Literal) -> Option<Literal> {
    let value = &line[literal.start..literal.end];
    if literal.quoted {
        return Some(match AUTH_SCHEME.captures(value).and_then(|caps| caps.name("secret")) {
            Some(secret) => Literal { start: literal.start + secret.start(), ..literal },
            None => literal,
        });
    }
    let scheme = ["bearer", "basic", "token", "digest"].iter().any(|s| value.eq_ignore_ascii_case(s));
    if scheme {
        return value_at(line, literal.end).filter(|next| next.start > literal.end);
    }
    Some(literal)
}

/// Lower case, letters and digits only.
fn normalize(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether a variable or key name says it holds a secret.
/// Whether a name (a variable, a key, a property such as `MasterUserPassword`) says its value
/// is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let key = normalize(name);
    let keyword = KEYWORDS.iter().any(|k| key.contains(k)) || mentions_auth(&key);
    keyword && {
        let last = last_word(name);
        !NOT_SECRET_WORDS.split_whitespace().any(|w| w == last)
    }
}

/// `auth`, `oauth`, `authorization`, but not `author` or `authority`.
fn mentions_auth(key: &str) -> bool {
    key.match_indices("auth").any(|(i, _)| {
        let rest = &key[i + 4..];
        !rest.starts_with("or") || rest.starts_with("oriz")
    })
}

/// The last word of a name in any case style, in lower case.
fn last_word(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut start = 0;
    for i in 1..chars.len() {
        let (prev, c) = (chars[i - 1], chars[i]);
        if !c.is_ascii_alphanumeric() {
            start = i + 1;
        } else if c.is_ascii_uppercase() && (prev.is_ascii_lowercase() || prev.is_ascii_digit()) {
            start = i;
        }
    }
    chars[start.min(chars.len())..].iter().collect::<String>().to_ascii_lowercase()
}

/// Whether a value is a long, random-looking literal rather than a placeholder or a reference.
fn looks_like_secret(value: &str, quoted: bool, format: bool) -> bool {
    value.chars().count() >= MIN_SECRET_CHARS
        && !value.chars().any(char::is_whitespace)
        && !is_placeholder_or_reference(value, quoted, format)
        && entropy(value) >= MIN_ENTROPY
}

/// Whether a value is a placeholder, a reference to a secret kept elsewhere, or code rather than a literal.
fn is_placeholder_or_reference(value: &str, quoted: bool, format: bool) -> bool {
    let lower = value.to_ascii_lowercase();
    let mut chars = value.chars();
    let first = chars.next();
    let second = chars.next();
    // Unquoted, it may be code: `!req.headers.auth`, `token_future.await?`, `super::Foundation::`.
    let code = if quoted { value } else { value.trim_start_matches('!').trim_end_matches(['!', '?', ':']) };
    // Interpolation and templates: `${X}`, `{{resolve:…}}`, `%(x)s`, `{name}`, f-strings.
    lower.contains("${")
        || lower.contains("{{")
        || lower.contains("%(")
        || lower.contains("%{")
        || FORMAT_FIELD.is_match(value)
        || (format && value.contains('{'))
        // `$DB_PASSWORD`, `$(cat file)`.
        || (first == Some('$') && second.is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '('))
        // YAML tags: `!Ref`, `!Sub`, `!GetAtt`.
        || (first == Some('!') && second.is_some_and(|c| c.is_ascii_uppercase()))
        || REFERENCES.iter().any(|r| lower.contains(r))
        || (value.starts_with('<') && value.ends_with('>'))
        || lower.starts_with("your")
        || lower.starts_with("xxx")
        || PLACEHOLDERS.iter().any(|p| lower.contains(p))
        || value.chars().all(|c| Some(c) == first)
        // Code, not a literal: `get_secret("x")`, `config["token"]`, `LazyLock<Regex>`, `&self.token`.
        || (!quoted && value.contains(['(', ')', '[', ']', '{', '}', '<', '>']))
        || (!quoted && value.starts_with(['&', '*']))
        || (!quoted && NUMBER.is_match(value))
        || IDENTIFIER_PATH.is_match(code)
        || looks_like_a_name(code)
        || URL.is_match(value)
        || lower.starts_with("arn:")
        || FILE_PATH.is_match(value)
}

/// Whether a value with digits still reads as a name made of words (`AWS_S3_BUCKET`, `self.auth_code2`,
/// `Kind::V1Token`, `x-amz-security-token-2`) rather than a random string: it has a separator and its
/// words (runs of one case or of digits, a capital may start a lower-case run) average 3 characters or more.
/// Whether a value quoted by another tool (a linter's message) could be a secret: long, random
/// (the entropy of `S004`), with letters and digits, and not a name, a path, an ARN or a type.
/// Such values are hidden from findings even though nothing names them a secret.
pub fn could_be_secret(value: &str) -> bool {
    looks_like_secret(value, true, false)
        && !looks_like_a_name(value)
        && !value.contains([':', '/', '.', '$', '{'])
        && !made_of_words(value)
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_alphabetic())
}

/// Whether a value found in a template is a high-entropy literal that could be a secret, even
/// with no digit (`could_be_secret` without that condition): long, random, not a name, a path,
/// an ARN, a URL or a reference. Such values are never quoted in a finding.
pub fn high_entropy(value: &str) -> bool {
    looks_like_secret(value, true, false)
        && !looks_like_a_name(value)
        && !value.contains([':', '/', '.', '$', '{'])
        && !made_of_words(value)
        && value.chars().any(|c| c.is_ascii_alphabetic())
}

/// `MyBucketPolicy2`, `DBSubnetGroup01`: words of three letters or more on average, as names
/// are; `Sup3rS3cretPassw0rd` breaks into short runs.
fn made_of_words(value: &str) -> bool {
    let (words, chars) = NAME_WORD.find_iter(value).fold((0usize, 0usize), |(w, c), m| (w + 1, c + m.len()));
    words > 0 && chars == value.len() && chars >= 3 * words
}

fn looks_like_a_name(value: &str) -> bool {
    if !NAME_LIKE.is_match(value) || !value.contains(['_', '-', '.', ':']) {
        return false;
    }
    let (words, chars) = NAME_WORD.find_iter(value).fold((0usize, 0usize), |(w, c), m| (w + 1, c + m.len()));
    words > 0 && chars >= 3 * words
}

/// Shannon entropy in bits per character.
fn entropy(value: &str) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    let mut total = 0usize;
    for c in value.chars() {
        *counts.entry(c).or_default() += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_allowlist_regex_keeps_its_cause_in_source_only() {
        let err = SecretScanner::new("ok\nAKIA[A-Z\n").unwrap_err();
        let top = err.to_string();
        assert_eq!(top, "secrets allow-list line 2: invalid regex; fix or remove that line");
        let source = std::error::Error::source(&err).expect("a source");
        let cause = source.downcast_ref::<regex::Error>().expect("the regex error");
        assert!(!top.contains(&cause.to_string()), "{top}");
        assert!(!top.contains("unclosed"), "{top}");
    }

    #[test]
    fn entropy_of_simple_strings() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn last_words() {
        assert_eq!(last_word("secretName"), "name");
        assert_eq!(last_word("DB_PASSWORD"), "password");
        assert_eq!(last_word("api-key"), "key");
        assert_eq!(last_word("x"), "x");
    }

    #[test]
    fn secret_names() {
        for name in ["password", "DB_PASSWORD", "apiKey", "x-api-key", "client_secret", "Authorization", "oauth_token"]
        {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["author", "authority", "secret_name", "SecretArn", "token_url", "username", "value"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
