//! A fault-injecting HTTP proxy in front of an endpoint (moto), on loopback: a binary in another
//! process points its `--endpoint-url` at [`FaultProxy::endpoint`], and the test chooses which
//! requests (by their number, counted from 1, and optionally only those whose head contains a
//! text such as `ExecuteChangeSet` or `PUT /bucket/index.html`) get which [`Fault`]: an error
//! status with an AWS-shaped body, a connection reset before or after the request reached the
//! emulator, a truncated answer, or a slow one. Every request is forwarded on a connection of
//! its own, and the proxy keeps each request's first line and what it did, so a test can say
//! which call a fault hit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to a chosen request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answered with this status and an AWS-shaped error (`InternalError` for 500,
    /// `Throttling`/`SlowDown` for 503), never forwarded.
    Status(u16),
    /// The connection is closed before the request is forwarded: the emulator never sees it.
    ResetBefore,
    /// Forwarded (the emulator acts on it), then the connection is closed without an answer:
    /// the caller cannot tell whether it happened.
    ResetAfter,
    /// Forwarded, and only the first half of the answer is sent before the connection closes.
    Truncate,
    /// Forwarded and answered after this delay.
    Slow(Duration),
}

/// Which requests get a fault.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Only requests whose head (request line and headers) contains this text (`None`: all).
    pub matching: Option<String>,
    /// The numbers, among the matching requests, counted from 1, that get the fault.
    pub at: Vec<usize>,
    /// The fault.
    pub fault: Fault,
}

#[derive(Default)]
struct State {
    rules: Vec<(Rule, usize)>,
    seen: Vec<String>,
    /// The bytes of the PUT request bodies seen (S3 uploads), since the last forget.
    put_bytes: u64,
}

/// The proxy: see the module's documentation.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`) with no faults, for the rest of
    /// the test process.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let (state, upstream) = (shared.clone(), upstream.clone());
                std::thread::spawn(move || serve(client, &upstream, &state));
            }
        });
        FaultProxy { endpoint, state }
    }

    /// Replaces the rules (and restarts their counts).
    pub fn set(&self, rules: Vec<Rule>) {
        self.state.lock().unwrap().rules = rules.into_iter().map(|r| (r, 0)).collect();
    }

    /// No fault from now on.
    pub fn clear(&self) {
        self.set(Vec::new());
    }

    /// Each request so far: its first line (and its `Action` when it has one), then ` -> ` and
    /// what the proxy did.
    pub fn seen(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Forgets the requests seen so far.
    pub fn forget(&self) {
        let mut state = self.state.lock().unwrap();
        state.seen.clear();
        state.put_bytes = 0;
    }

    /// The bytes of the PUT request bodies (S3 uploads, as sent) seen since the last forget.
    pub fn put_bytes(&self) -> u64 {
        self.state.lock().unwrap().put_bytes
    }
}

/// One request's head and body as the client sent them.
struct Request {
    head: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    // A client that asks before sending its body (the aws CLI's S3 uploads) is answered here,
    // as a server would, instead of waiting its second for an answer that never comes; the
    // request goes on without the header, so the upstream's interim answer is not relayed.
    if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        reader.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
        head = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("expect:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { head, body })
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The fault for this request, counting it against every rule it matches.
fn choose(state: &Mutex<State>, head: &str) -> Option<Fault> {
    let mut state = state.lock().unwrap();
    let mut chosen = None;
    for (rule, count) in state.rules.iter_mut() {
        if rule.matching.as_deref().is_none_or(|text| head.contains(text)) {
            *count += 1;
            if chosen.is_none() && rule.at.contains(count) {
                chosen = Some(rule.fault.clone());
            }
        }
    }
    chosen
}

fn serve(client: TcpStream, upstream: &str, state: &Mutex<State>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some(request) = read_request(&mut reader) {
        let mut first = request.head.lines().next().unwrap_or_default().to_owned();
        // The operation, for query-protocol calls (CloudFormation, STS, SNS): `Action=` in the body.
        if let Some(action) = String::from_utf8_lossy(&request.body).split('&').find_map(|p| p.strip_prefix("Action="))
        {
            first.push_str(&format!(" {action}"));
        }
        if first.starts_with("PUT ") {
            state.lock().unwrap().put_bytes += request.body.len() as u64;
        }
        let fault = choose(state, &request.head);
        let note = |what: &str| state.lock().unwrap().seen.push(format!("{first} -> {what}"));
        match &fault {
            Some(Fault::Status(code)) => {
                note(&format!("{code}"));
                let (code_name, text) = match code {
                    503 => ("Throttling", "Service Unavailable"),
                    _ => ("InternalError", "Internal Server Error"),
                };
                let body = format!(
                    "<ErrorResponse><Error><Type>Receiver</Type><Code>{code_name}</Code><Message>injected by the fault proxy</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
                );
                let answer = format!(
                    "HTTP/1.1 {code} {text}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::ResetBefore) => {
                note("reset before");
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            _ => {}
        }
        let Some(answer) = forward(upstream, &request) else {
            note("upstream failed");
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        match fault {
            Some(Fault::ResetAfter) => {
                note("reset after");
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Truncate) => {
                note("truncated");
                let _ = client.write_all(&answer[..answer.len() / 2]);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Slow(delay)) => {
                note(&format!("slow {delay:?}"));
                std::thread::sleep(delay);
            }
            _ => note("forwarded"),
        }
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

/// Sends the request on a connection of its own (`Connection: close`) and returns the whole
/// answer, re-framed with its length so the client's connection can carry the next request.
fn forward(upstream: &str, request: &Request) -> Option<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).ok()?;
    let mut head: String = request
        .head
        .lines()
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    head.push_str("Connection: close\r\n\r\n");
    server.write_all(head.as_bytes()).ok()?;
    server.write_all(&request.body).ok()?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let (answer_head, body) = answer.split_at(split);
    let answer_head = String::from_utf8_lossy(answer_head);
    let body = if header(&answer_head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        unchunk(body)?
    } else {
        body.to_vec()
    };
    let mut out: String = answer_head
        .lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            !l.is_empty()
                && !lower.starts_with("content-length:")
                && !lower.starts_with("transfer-encoding:")
                && !lower.starts_with("connection:")
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    Some(bytes)
}

fn unchunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..line_end]).split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every request with its request line, keeping the connection
    /// open as a keep-alive server would not: the proxy must still frame each answer.
    fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    if let Some(request) = read_request(&mut reader) {
                        let line = request.head.lines().next().unwrap_or_default().to_owned();
                        let body = format!("{line} {}", request.body.len());
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                            body.len()
                        );
                    }
                });
            }
        });
        address
    }

    fn ask(endpoint: &str, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(endpoint.trim_start_matches("http://"))?;
        write!(stream, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")?;
        let mut answer = String::new();
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "closed"));
        }
        answer.push_str(&line);
        let mut length = 0;
        loop {
            let mut header_line = String::new();
            reader.read_line(&mut header_line)?;
            if header_line == "\r\n" {
                break;
            }
            if let Some(v) = header_line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        answer.push_str(&String::from_utf8_lossy(&body));
        Ok(answer)
    }

    #[test]
    fn chosen_requests_get_their_fault_and_the_rest_pass_through() {
        let proxy = FaultProxy::start(&echo_server());
        proxy.set(vec![
            Rule { matching: Some("/second".into()), at: vec![1], fault: Fault::Status(503) },
            Rule { matching: None, at: vec![3], fault: Fault::ResetAfter },
        ]);
        let first = ask(&proxy.endpoint, "/first").unwrap();
        assert!(first.starts_with("HTTP/1.1 200") && first.ends_with("POST /first HTTP/1.1 3"), "{first}");
        let second = ask(&proxy.endpoint, "/second").unwrap();
        assert!(second.starts_with("HTTP/1.1 503") && second.contains("<Code>Throttling</Code>"), "{second}");
        assert!(ask(&proxy.endpoint, "/third").is_err(), "reset after forwarding");
        assert!(ask(&proxy.endpoint, "/fourth").unwrap().ends_with("/fourth HTTP/1.1 3"));
        let seen = proxy.seen();
        assert_eq!(
            seen,
            [
                "POST /first HTTP/1.1 -> forwarded",
                "POST /second HTTP/1.1 -> 503",
                "POST /third HTTP/1.1 -> reset after",
                "POST /fourth HTTP/1.1 -> forwarded"
            ]
        );
    }
    /// A client that waits for `100 Continue` before its body (the aws CLI's S3 uploads) gets
    /// it from the proxy, the upstream sees the request without `Expect`, and the PUT's body is
    /// counted as uploaded (a POST's is not).
    #[test]
    fn an_upload_that_asks_first_is_told_to_continue_and_counted() {
        let proxy = FaultProxy::start(&echo_server());
        let mut stream = TcpStream::connect(proxy.endpoint.trim_start_matches("http://")).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "PUT /bucket/key HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut interim = String::new();
        reader.read_line(&mut interim).unwrap();
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n");
        let mut blank = String::new();
        reader.read_line(&mut blank).unwrap();
        assert_eq!(blank, "\r\n");
        stream.write_all(b"hello").unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        ask(&proxy.endpoint, "/not-an-upload").unwrap();
        assert_eq!(proxy.put_bytes(), 5);
        proxy.forget();
        assert_eq!(proxy.put_bytes(), 0);
    }
}
