//! A TCP relay in front of an endpoint (moto) that keeps every byte each way, per connection, so
//! a test can read what a binary in another process sent (its SigV4 signatures) and what it was
//! answered (the keys STS issued it).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The bytes one way of one connection, as they pass.
type Log = Arc<Mutex<Vec<u8>>>;

/// One signed request: the access key id, region and service of its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The access key id.
    pub key: String,
    /// The region it was signed for.
    pub region: String,
    /// The service (`s3`, `cloudformation`, `sts` …).
    pub service: String,
    /// The request's first line (`PUT /bucket/key?tagging HTTP/1.1`): which call it was.
    pub request: String,
}

/// The relay: point a binary's `--endpoint-url` at [`Relay::endpoint`].
pub struct Relay {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    connections: Arc<Mutex<Vec<(Log, Log)>>>,
}

impl Relay {
    /// Starts a relay to `upstream` (`http://127.0.0.1:PORT`), for the rest of the test process.
    pub fn start(upstream: &str) -> Relay {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let connections: Arc<Mutex<Vec<(Log, Log)>>> = Arc::default();
        let kept = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&upstream) else { break };
                let (sent, answered): (Log, Log) = (Arc::default(), Arc::default());
                kept.lock().unwrap().push((sent.clone(), answered.clone()));
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), sent);
                pipe(server, client, answered);
            }
        });
        Relay { endpoint, connections }
    }

    /// Every signed request so far, in the order of its connection.
    pub fn signatures(&self) -> Vec<Signature> {
        let mut out = Vec::new();
        for (sent, _) in self.connections.lock().unwrap().iter() {
            let original = String::from_utf8_lossy(&sent.lock().unwrap()).into_owned();
            let lower = original.to_ascii_lowercase();
            let mut from = 0;
            while let Some(at) = lower[from..].find("\r\nauthorization:") {
                let start = from + at + 2;
                let line = &original[start..];
                let line = &line[..line.find("\r\n").unwrap_or(line.len())];
                let credential = line.split("Credential=").nth(1).unwrap_or_default();
                let parts: Vec<&str> = credential.split(['/', ',']).collect();
                assert!(parts.len() >= 4, "an Authorization header without a SigV4 credential: {line}");
                let head = &original[..start];
                let request = head
                    .rfind(" HTTP/1.1\r\n")
                    .map(|end| &head[head[..end].rfind("\r\n").map_or(0, |i| i + 2)..end])
                    .unwrap_or_default();
                out.push(Signature {
                    key: parts[0].to_owned(),
                    region: parts[2].to_owned(),
                    service: parts[3].to_owned(),
                    request: request.to_owned(),
                });
                from = start;
            }
        }
        out
    }

    /// Every byte sent through the relay so far (requests' headers and bodies), as text, in
    /// the order of the connections: a test reads a request's parameters from it.
    pub fn sent(&self) -> String {
        let connections = self.connections.lock().unwrap();
        connections.iter().map(|(sent, _)| String::from_utf8_lossy(&sent.lock().unwrap()).into_owned()).collect()
    }

    /// The access key ids STS handed out so far (`<AccessKeyId>` in its answers).
    pub fn issued_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, answered) in self.connections.lock().unwrap().iter() {
            let text = String::from_utf8_lossy(&answered.lock().unwrap()).into_owned();
            for piece in text.split("<AccessKeyId>").skip(1) {
                out.push(piece.split('<').next().unwrap_or_default().trim().to_owned());
            }
        }
        out
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, log: Log) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().unwrap().extend_from_slice(&buffer[..n]);
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
