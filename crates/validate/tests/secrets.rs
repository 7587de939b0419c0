//! The secret scanner: each rule, what it must not report, the allow-list,
//! odd input, and the sample files under `fixtures/secrets/`.
//!
//! Every scan goes through [`scan`], which also checks that no finding shows
//! any part of the secret it reports.

use validate::secrets::{AllowlistError, SecretScanner};
use validate::{Finding, Severity};

/// AWS's documentation example key pair.
const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// A made-up generic secret: 16 distinct characters, 4 bits per character.
const SECRET: &str = "h7Gk2pQ9xW4mZ8rT";

/// Scans `text` and checks that no finding leaks what it found.
fn scan(scanner: &SecretScanner, path: &str, text: &str) -> Vec<Finding> {
    let findings = scanner.scan(path, text.as_bytes());
    assert_no_leaks(text, &findings);
    findings
}

/// [`scan`] with an empty allow-list.
fn scan_text(text: &str) -> Vec<Finding> {
    scan(&SecretScanner::new("").unwrap(), "app/settings.py", text)
}

/// A finding's rule, line and column.
type At<'a> = (&'a str, u32, u32);

/// Rule, line and column of each finding.
fn found(findings: &[Finding]) -> Vec<At<'_>> {
    findings.iter().map(|f| (f.rule.as_str(), f.pos.line, f.pos.column)).collect()
}

/// The secret text of each finding (the token at its position; for a private
/// key, the key's body), and every AWS key ID in the file: none of it, nor any
/// 8 characters of it, may appear in a finding's message or `Debug` text.
fn assert_no_leaks(text: &str, findings: &[Finding]) {
    let lines: Vec<&str> = text.lines().collect();
    let mut secrets: Vec<String> = Vec::new();
    for line in &lines {
        for prefix in ["AKIA", "ASIA"] {
            for (i, _) in line.match_indices(prefix) {
                secrets.push(line[i..].chars().take(20).collect());
            }
        }
    }
    for f in findings {
        let line = lines[f.pos.line as usize - 1];
        let rest: String = line.chars().skip(f.pos.column as usize - 1).collect();
        if f.rule == "S003" {
            let after_header = rest.split_once("KEY-----").map_or("", |(_, body)| body);
            secrets.push(after_header.to_owned());
            for body in lines[f.pos.line as usize..].iter().take_while(|l| !l.contains("-----END")) {
                secrets.push(body.trim().to_owned());
            }
        } else {
            let token: String =
                rest.chars().take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '`' | ',' | ';')).collect();
            secrets.push(token);
        }
    }
    for f in findings {
        let debug = format!("{f:?}");
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            let chars: Vec<char> = secret.chars().collect();
            for window in chars.windows(8.min(chars.len())) {
                let part: String = window.iter().collect();
                assert!(!debug.contains(&part), "{debug} shows {part:?} of a secret");
                assert!(!f.message.contains(&part), "{} shows {part:?} of a secret", f.message);
            }
        }
    }
}

#[test]
fn s001_key_id_with_a_secret_key_reports_the_secret_key() {
    let text = format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET_KEY}\n");
    let findings = scan_text(&text);
    assert_eq!(found(&findings), [("S001", 3, 25)]);
    let f = &findings[0];
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.path, "app/settings.py");
    assert!(f.message.contains("AWS secret access key"), "{}", f.message);
    assert!(f.message.contains("rotate"), "{}", f.message);
}

#[test]
fn s001_pairs_a_secret_key_up_to_five_lines_away() {
    let filler = "x = 1\n";
    // Before the key ID, five lines down, and on the same line.
    let before = format!("keys = [\n  \"{SECRET_KEY}\",\n]\n{}id = \"{KEY_ID}\"\n", filler.repeat(3));
    assert_eq!(found(&scan_text(&before)), [("S001", 2, 4)]);
    let after = format!("id = \"{KEY_ID}\"\n{}\"{SECRET_KEY}\"\n", filler.repeat(4));
    assert_eq!(found(&scan_text(&after)), [("S001", 6, 2)]);
    let same = format!("creds = (\"{KEY_ID}\", \"{SECRET_KEY}\")\n");
    assert_eq!(found(&scan_text(&same)), [("S001", 1, 35)]);
    // Six lines away: the key ID is alone.
    let far = format!("id = \"{KEY_ID}\"\n{}\"{SECRET_KEY}\"\n", filler.repeat(5));
    assert_eq!(found(&scan_text(&far)), [("S002", 1, 7)]);
}

#[test]
fn s001_needs_a_mixed_case_forty_character_secret() {
    // A commit hash (lower-case hex), a 41-character run and a piece of a longer token are not secret keys.
    let text = format!(
        "id = \"{KEY_ID}\"\ncommit = \"0123456789abcdef0123456789abcdef01234567\"\nblob = \"{SECRET_KEY}A\"\n\
         jwt = \"eyJhbGciOiJIUzI1NiJ9.{SECRET_KEY}_x\"\n"
    );
    assert_eq!(found(&scan_text(&text)), [("S002", 1, 7)]);
}

#[test]
fn s002_key_id_alone_is_a_warning() {
    let findings = scan_text("# deploy user\n  key: ASIAY34FZKBOKMUTVV7A # temporary\n");
    assert_eq!(found(&findings), [("S002", 2, 8)]);
    let f = &findings[0];
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.message.contains("AWS access key ID without a secret nearby"), "{}", f.message);
}

#[test]
fn s002_needs_a_whole_key_id() {
    let text =
        "a = \"XAKIAIOSFODNN7EXAMPLE\"\nb = \"AKIAIOSFODNN7EXAMPLE1\"\nc = \"AKIAiosfodnn7example\"\nd = \"AKIA123\"\n";
    assert_eq!(found(&scan_text(text)), []);
}

#[test]
fn s003_private_key_block_at_its_begin_line() {
    let body = "MIIEowIBAAKCAQEAfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKE0123";
    let pem =
        format!("tls:\n  key: |\n    -----BEGIN RSA PRIVATE KEY-----\n    {body}\n    -----END RSA PRIVATE KEY-----\n");
    let findings = scan_text(&pem);
    assert_eq!(found(&findings), [("S003", 3, 5)]);
    assert_eq!(findings[0].severity, Severity::Error);
    assert!(findings[0].message.contains("private key"), "{}", findings[0].message);

    let openssh = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n");
    assert_eq!(found(&scan_text(&openssh)), [("S003", 1, 1)]);
    // One line of JSON with escaped newlines: one finding, not a generic secret too.
    let json =
        format!("{{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----\\n\"}}\n");
    assert_eq!(found(&scan_text(&json)), [("S003", 1, 18)]);
}

#[test]
fn s003_header_without_a_key_body_is_not_reported() {
    let code = "def is_pem(text):\n    return text.startswith(\"-----BEGIN PRIVATE KEY-----\")\n\n\nprint(is_pem(x))\n";
    assert_eq!(found(&scan_text(code)), []);
}

#[test]
fn s004_generic_secret_in_each_form() {
    let cases: &[(&str, u32)] = &[
        ("password = \"h7Gk2pQ9xW4mZ8rT\"", 13),
        ("DB_PASSWORD=h7Gk2pQ9xW4mZ8rT", 13),
        ("export API_TOKEN='h7Gk2pQ9xW4mZ8rT'", 19),
        ("  api_key: h7Gk2pQ9xW4mZ8rT", 12),
        ("{\"client_secret\": \"h7Gk2pQ9xW4mZ8rT\"}", 20),
        ("{\"client_secret\":\"h7Gk2pQ9xW4mZ8rT\"}", 19),
        ("  :auth_token => 'h7Gk2pQ9xW4mZ8rT',", 19),
        ("const apiKey = \"h7Gk2pQ9xW4mZ8rT\";", 17),
        ("access_key := \"h7Gk2pQ9xW4mZ8rT\"", 16),
        ("client = Client(private_key=b\"h7Gk2pQ9xW4mZ8rT\")", 31),
        ("    password: str = \"h7Gk2pQ9xW4mZ8rT\"", 22),
        ("    password: Optional[str] = \"h7Gk2pQ9xW4mZ8rT\"", 32),
        ("const API_TOKEN: &str = \"h7Gk2pQ9xW4mZ8rT\";", 26),
        ("let log = \"password: h7Gk2pQ9xW4mZ8rT\\nuser: x\";", 22),
        ("headers = {\"Authorization\": \"Bearer h7Gk2pQ9xW4mZ8rT\"}", 37),
        ("$ curl -H \"Authorization: Bearer h7Gk2pQ9xW4mZ8rT\" https://api.example.com", 34),
        ("url = \"https://api.example.com/v1?access_token=h7Gk2pQ9xW4mZ8rT\"", 48),
        ("spring.datasource.password=h7Gk2pQ9xW4mZ8rT", 28),
        ("DB_PASSWORD=h7Gk2pQ9xW4mZ8rT # prod", 13),
        // URL-safe base64 is not mistaken for a snake_case name.
        ("API_TOKEN=Xk4_pQ9-vR2mZ8wL7tN3", 11),
    ];
    for &(line, column) in cases {
        let findings = scan_text(&format!("{line}\n"));
        assert_eq!(found(&findings), [("S004", 1, column)], "{line}");
        assert_eq!(findings[0].severity, Severity::Error);
        assert!(findings[0].message.contains("hard-coded secret"), "{}", findings[0].message);
        assert!(findings[0].message.contains("Secrets Manager"), "{}", findings[0].message);
    }
    let message = &scan_text("DB_PASSWORD=h7Gk2pQ9xW4mZ8rT\n")[0].message;
    assert!(message.contains("`DB_PASSWORD`"), "{message}");
}

#[test]
fn s004_value_under_a_secret_name_entry() {
    // ECS task definitions, Kubernetes env lists, CloudFormation parameters.
    let yaml =
        "env:\n  - Name: DB_PASSWORD\n    Value: h7Gk2pQ9xW4mZ8rT\n  - name: LOG_LEVEL\n    value: h7Gk2pQ9xW4mZ8rT\n";
    assert_eq!(found(&scan_text(yaml)), [("S004", 3, 12)]);
    // The last name wins: a value after `LOG_LEVEL` is not a password.
    let yaml = "- Name: DB_PASSWORD\n- Name: LOG_LEVEL\n  Value: h7Gk2pQ9xW4mZ8rT\n";
    assert_eq!(found(&scan_text(yaml)), []);
    let json = "[{\"name\": \"API_TOKEN\", \"value\": \"h7Gk2pQ9xW4mZ8rT\"}]\n";
    assert_eq!(found(&scan_text(json)), [("S004", 1, 34)]);
}

#[test]
fn s004_skips_placeholders_and_references() {
    let lines = [
        "password = \"${DB_PASSWORD}\"",
        "password = \"${DB_PASSWORD:-h7Gk2pQ9xW4mZ8rT}\"",
        "password: \"{{resolve:secretsmanager:prod/db:SecretString:password}}\"",
        "MasterUserPassword: !Ref DbPassword",
        "MasterUserPassword: !Sub '{{resolve:ssm-secure:/prod/db/password2:1}}'",
        "MasterUserPassword: !GetAtt Secret7.SecretString",
        "password = os.environ[\"DB_PASSWORD_2\"]",
        "password = os.environ.get(\"DB_PASSWORD_2\", \"\")",
        "token = os.getenv(\"API_TOKEN_2\")",
        "const token = process.env.API_TOKEN_2;",
        "let token = std::env::var(\"API_TOKEN_2\")?;",
        "password=$DB_PASSWORD_2",
        "token: ${{ secrets.GITHUB_TOKEN }}",
        "api_key = \"<your-api-key-here>\"",
        "api_key: <API_KEY_FROM_CONSOLE_2>",
        "password = \"changeme-please-2024\"",
        "password = \"CHANGE_ME_1234567\"",
        "secret = \"your_secret_here_42\"",
        "token = \"xxxxxxxxxxxxxxxxxxxx\"",
        "token = \"xxx-9Qz7Lm2Kp4Wn\"",
        "api_key = \"sk-****************\"",
        "api_key = \"sk-12ab...89yz\"",
        "secret = \"ZZZZZZZZZZZZZZZZZZZZ\"",
        "password = settings.database.password",
        "client_secret = self.clientSecretValue",
        "password = get_password(user, \"prod-database-7\")",
        "secret = config[\"secret\"][\"value2\"]",
        "authToken: getAuthToken(session2),",
        "auth_token = f\"{prefix}-{suffix}-abcdef0123\"",
        "token = \"Bearer {}\".format(tok)",
        "password = \"%(db_password)s-1234567\"",
        "token_source = \"https://oauth2.example.com/token?x=1\"",
        "auth = \"arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf\"",
        "password_file: /run/secrets/db_password_2",
        "secret = \"/run/secrets/prod-db-password2\"",
        "secretKey: \"prod-payments-stripe-api-key\"",
    ];
    for line in lines {
        assert_eq!(found(&scan_text(&format!("{line}\n"))), [], "{line}");
    }
}

#[test]
fn s004_skips_short_and_low_entropy_values() {
    let lines = [
        "password = \"Tr0ub4dor&3\"",
        "password = \"aaaabbbbaaaabbbb1\"",
        "token = \"1234567890123456\"",
        "secret = \"abababababababab12\"",
        "token_ttl = 86400123456789",
        "password = \"correct horse battery staple 42\"",
        "password_prompt = \"Enter the password for 2FA:\"",
        "password = \"\"",
        "password: true",
    ];
    for line in lines {
        assert_eq!(found(&scan_text(&format!("{line}\n"))), [], "{line}");
    }
}

#[test]
fn s004_skips_names_that_are_not_secret_holders() {
    let lines = [
        "author = \"h7Gk2pQ9xW4mZ8rT\"",
        "authority = \"h7Gk2pQ9xW4mZ8rT\"",
        "secret_name = \"prod/db-credentials-2024\"",
        "SecretArn: h7Gk2pQ9xW4mZ8rT",
        "token_url = \"h7Gk2pQ9xW4mZ8rT\"",
        "password_hash = \"h7Gk2pQ9xW4mZ8rT\"",
        "username = \"h7Gk2pQ9xW4mZ8rT\"",
        "checksum = \"h7Gk2pQ9xW4mZ8rT\"",
        // Comparisons, not assignments.
        "if password == \"h7Gk2pQ9xW4mZ8rT\":",
        "if (token === 'h7Gk2pQ9xW4mZ8rT') {",
        "ok = password != \"h7Gk2pQ9xW4mZ8rT\"",
        // Types, not values.
        "static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| compile(\"h7Gk2pQ9xW4mZ8rT\"));",
        "secret: Box<dyn Fn(h7Gk2pQ9xW4mZ8rT)>,",
        "    private_key_ops: &p384::PRIVATE_KEY_OPS,",
        "let traffic_secret = TLS13_CHACHA20_POLY1305_SHA256_INTERNAL;",
        "pub const SESSION_AUTH: &str = \"AWS_S3_DISABLE_EXPRESS_SESSION_AUTH\";",
        "const METADATA_TOKEN: &str = \"x-aws-ec2-metadata-token\";",
        "    auth_code2: self.authentication_code2,",
        "\"v1Token\" => GlobalEndpointTokenVersion::V1Token,",
        "let token = token_future2.await?;",
        "this._noAuthorization = !req.headers.authorization2;",
        "auth: poly1305::Context,",
        "pub const AUTH_FAILED: HRESULT = -2144272236i32;",
        // Paths, not keys.
        "let x = secret::h7Gk2pQ9xW4mZ8rT();",
    ];
    for line in lines {
        assert_eq!(found(&scan_text(&format!("{line}\n"))), [], "{line}");
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "{\"café\": \"ok\", \"api_token\": \"h7Gk2pQ9xW4mZ8rT\"}\n";
    assert_eq!(found(&scan_text(text)), [("S004", 1, 30)]);
    let text = format!("# clé → {KEY_ID}\n");
    assert_eq!(found(&scan_text(&text)), [("S002", 1, 9)]);
}

#[test]
fn crlf_line_endings() {
    let text = format!("id = {KEY_ID}\r\nsecret = {SECRET_KEY}\r\npassword = {SECRET}\r\n");
    assert_eq!(found(&scan_text(&text)), [("S001", 2, 10), ("S004", 3, 12)]);
}

#[test]
fn findings_are_sorted_and_carry_the_path() {
    let text = format!("token = \"{SECRET}\"\nid = \"{KEY_ID}\"\n");
    let findings = scan(&SecretScanner::new("").unwrap(), "services/api/config.py", &text);
    assert_eq!(found(&findings), [("S004", 1, 10), ("S002", 2, 7)]);
    assert!(findings.iter().all(|f| f.path == "services/api/config.py"));
}

#[test]
fn allowlist_suppresses_matching_lines_only() {
    let allowlist = "# Known fakes.\n\nAKIAIOSFODNN7EXAMPLE\n   \n  nosecret  \n";
    let scanner = SecretScanner::new(allowlist).unwrap();
    let text = format!(
        "id = \"{KEY_ID}\"\nkey = \"{SECRET_KEY}\"\n\n\n\n\n\n\npassword = \"{SECRET}\"  # nosecret\ntoken = \"{SECRET}\"\n"
    );
    // The key pair is allowed through its key ID's line; only the last line is left.
    assert_eq!(found(&scan(&scanner, "a.py", &text)), [("S004", 10, 10)]);
    // Without the allow-list, all three.
    assert_eq!(found(&scan_text(&text)), [("S001", 2, 8), ("S004", 9, 13), ("S004", 10, 10)]);
}

#[test]
fn allowlist_applies_to_the_secret_key_line_and_private_keys() {
    let scanner = SecretScanner::new("EXAMPLEKEY\\b\n^-----BEGIN RSA").unwrap();
    let text = format!("id = \"{KEY_ID}\"\nkey = \"{SECRET_KEY}\"\n");
    assert_eq!(found(&scan(&scanner, "a.py", &text)), []);
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKE\n-----END RSA PRIVATE KEY-----\n";
    assert_eq!(found(&scan(&scanner, "a.py", pem)), []);
    assert_eq!(found(&scan_text(pem)), [("S003", 1, 1)]);
}

#[test]
fn bad_allowlist_regex_names_its_line() {
    let err = SecretScanner::new("# fakes\n\nAKIA[A-Z\nEXAMPLE\n").unwrap_err();
    let AllowlistError::InvalidRegex { line, .. } = &err;
    assert_eq!(*line, 3);
    let text = err.to_string();
    assert!(text.contains("line 3"), "{text}");
    assert!(SecretScanner::new("ok\n(unclosed").unwrap_err().to_string().contains("line 2"));
}

/// The findings of a scan of bytes, checked for leaks against their printable text.
fn scan_bytes(path: &str, bytes: &[u8]) -> Vec<Finding> {
    let findings = SecretScanner::new("").unwrap().scan(path, bytes);
    let text: String =
        bytes.iter().map(|&b| if b == b'\n' || (0x20..0x7f).contains(&b) { b as char } else { ' ' }).collect();
    // `S000` is about the whole file, at 1:1: no token there is its secret, and none may be in it.
    let (s000, rest): (Vec<Finding>, Vec<Finding>) = findings.iter().cloned().partition(|f| f.rule == "S000");
    assert_no_leaks(&text, &rest);
    for f in &s000 {
        for secret in [KEY_ID, SECRET_KEY, SECRET, "EXAMPLE", "fakeFAKE"] {
            assert!(!format!("{f:?}").contains(secret), "{f:?}");
        }
    }
    findings
}

/// The `S000` finding of a partial scan: a warning at 1:1 saying why.
fn partial_scan_reason(findings: &[Finding]) -> &str {
    let s000: Vec<&Finding> = findings.iter().filter(|f| f.rule == "S000").collect();
    assert_eq!(s000.len(), 1, "{findings:#?}");
    assert_eq!((s000[0].severity, s000[0].pos.line, s000[0].pos.column), (Severity::Warning, 1, 1));
    &s000[0].message
}

#[test]
fn binary_files_are_said_and_their_key_pairs_and_private_keys_found() {
    // Once: a NUL byte in the first 8 KiB made the file pass with no finding at all.
    let mut bytes = format!("password = \"{SECRET}\"\n").into_bytes();
    bytes.push(0);
    let findings = scan_bytes("logo.png", &bytes);
    assert_eq!(found(&findings), [("S000", 1, 1)]);
    let reason = partial_scan_reason(&findings);
    assert!(reason.starts_with("binary (a NUL byte in the first 8 KiB): not scanned for passwords"), "{reason}");

    // A key pair and a private key among binary noise: errors, at their place in the file.
    let mut bytes = vec![0u8, 1, 2, 0xff, 0xfe];
    bytes.extend_from_slice(format!("{KEY_ID}\0\x05\x07{SECRET_KEY}\0\0").as_bytes());
    bytes.extend_from_slice(
        b"\n\x01-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKE\n\0",
    );
    let findings = scan_bytes("app.bin", &bytes);
    assert_eq!(found(&findings), [("S000", 1, 1), ("S001", 1, 29), ("S003", 2, 2)]);
    assert!(findings[1].message.contains("its access key ID is on line 1"), "{}", findings[1].message);

    // Short printable runs, or a key ID alone, are what they would be in text.
    let findings = scan_bytes("a.bin", format!("\0x=1\0{KEY_ID}\0").as_bytes());
    assert_eq!(found(&findings), [("S000", 1, 1), ("S002", 1, 6)]);

    // A NUL byte after the first 8 KiB does not make a file binary.
    let scanner = SecretScanner::new("").unwrap();
    let mut late = format!("password = \"{SECRET}\"\n").into_bytes();
    late.resize(8 * 1024, b' ');
    late.push(0);
    assert_eq!(found(&scanner.scan("dump.txt", &late)), [("S004", 1, 13)]);
}

#[test]
fn files_over_five_mib_are_said_and_their_key_pairs_found() {
    let scanner = SecretScanner::new("").unwrap();
    let mut bytes = format!("password = \"{SECRET}\"\n").into_bytes();
    bytes.resize(5 * 1024 * 1024, b'\n');
    assert_eq!(found(&scanner.scan("big.txt", &bytes)), [("S004", 1, 13)]);
    // Once: one byte more and the file passed with no finding at all.
    bytes.push(b'\n');
    let findings = scanner.scan("big.txt", &bytes);
    assert_eq!(found(&findings), [("S000", 1, 1)]);
    let reason = partial_scan_reason(&findings);
    assert!(reason.starts_with("too large to scan in full (5242881 bytes, over 5 MiB)"), "{reason}");
    // An AWS key pair deep inside: an error at its line, allow-list honoured.
    let mut bytes = vec![b'\n'; 6 * 1024 * 1024];
    bytes.extend_from_slice(format!("aws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET_KEY}\n").as_bytes());
    let line = 6 * 1024 * 1024 + 2;
    let findings = scan_bytes("dump.sql", &bytes);
    assert_eq!(found(&findings), [("S000", 1, 1), ("S001", line, 25)]);
    assert!(findings[1].message.contains(&format!("its access key ID is on line {}", line - 1)));
    let allowed = SecretScanner::new("EXAMPLE").unwrap().scan("dump.sql", &bytes);
    assert_eq!(found(&allowed), [("S000", 1, 1)]);
}

#[test]
fn invalid_utf8_is_read_lossily() {
    let scanner = SecretScanner::new("").unwrap();
    let mut bytes = b"\xff\xfe\xc3(\n\xffpassword=".to_vec();
    bytes.extend_from_slice(SECRET.as_bytes());
    bytes.extend_from_slice(b"\n\xe2\x82 trailing \xf0\x9f\x92\n");
    let findings = scanner.scan("odd.txt", &bytes);
    assert_no_leaks(&String::from_utf8_lossy(&bytes), &findings);
    assert_eq!(found(&findings), [("S004", 2, 11)]);
    // Garbage of every byte value except NUL.
    let garbage: Vec<u8> = (1..=255u8).cycle().take(20_000).collect();
    assert_eq!(scanner.scan("garbage.bin", &garbage), [], "garbage holds no secret");
    // A secret inside garbage is still found, and not shown.
    let mut with_secret = garbage.clone();
    with_secret.extend_from_slice(format!("\npassword={SECRET}\n").as_bytes());
    with_secret.extend_from_slice(&garbage);
    let findings = scanner.scan("garbage.bin", &with_secret);
    assert_eq!(findings.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(), ["S004"], "{findings:?}");
    assert_no_leaks(&String::from_utf8_lossy(&with_secret), &findings);
}

#[test]
fn empty_files_give_nothing() {
    let scanner = SecretScanner::default();
    assert_eq!(scanner.scan("empty", b""), []);
    assert_eq!(scanner.scan("newline", b"\n"), []);
}

#[test]
fn fixtures_give_the_expected_findings() {
    let dir = test_support::workspace_root().join("fixtures/secrets");
    let expected: &[(&str, &[At])] = &[
        ("leaky.py", &[("S001", 7, 26), ("S004", 9, 16), ("S003", 12, 18), ("S004", 26, 38), ("S002", 29, 15)]),
        ("clean.py", &[]),
        ("config.yaml", &[("S004", 6, 13), ("S004", 19, 17), ("S003", 24, 5)]),
    ];
    let scanner = SecretScanner::new("").unwrap();
    for &(file, want) in expected {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let path = format!("fixtures/secrets/{file}");
        let findings = scan(&scanner, &path, &text);
        assert_eq!(found(&findings), want, "{file}");
        assert!(findings.iter().all(|f| f.path == path));
    }
}
