use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A moto server on loopback, started once per test binary.
///
/// moto's state is global to a server, so tests that share it use unique
/// names (and, where it matters, their own account via `x-moto-account-id`).
/// The server watches the test process and exits when it does, so no server
/// outlives its tests even though a static is never dropped.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Child,
}

/// The Python of the virtual environment `cargo xtask` makes (moto, pytest, pip), or `MOTO_PYTHON`.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_PYTHON") {
        return PathBuf::from(path);
    }
    crate::workspace_root().join("target/py-venv/bin/python")
}

// moto's own entry point, plus a watchdog: exit when the parent (the test binary) is gone, and the
// harness's patches (`moto_harness.py`), passed as the second argument.
const HARNESS: &str = include_str!("moto_harness.py");
const LAUNCHER: &str = r#"
import os, sys, threading, time
HARNESS = sys.argv[2]
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
exec(HARNESS)
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"#;

impl Moto {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static Moto {
        static SERVER: OnceLock<Moto> = OnceLock::new();
        SERVER.get_or_init(Moto::start)
    }

    /// Starts a new server with the tools' Python and waits until it answers.
    pub fn start() -> Moto {
        Moto::start_with(&python())
    }

    /// Starts a new server with this Python (one that has `moto[server]`) and waits until it answers.
    pub fn start_with(python: &std::path::Path) -> Moto {
        assert!(
            python.exists(),
            "moto's Python is missing at {}: run the tests through `cargo xtask test`, which installs it, or set MOTO_PYTHON",
            python.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(python)
            .args(["-c", LAUNCHER, &port.to_string(), HARNESS])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(port))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
        let pid = child.id();
        let moto = Moto { endpoint: format!("http://127.0.0.1:{port}"), _child: child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(port, pid) {
            assert!(Instant::now() < deadline, "moto did not answer on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// The moto server's process id (what [`health`] answers for it).
    pub fn pid(&self) -> u32 {
        self._child.id()
    }

    /// SDK config for this server: test credentials, `us-east-1`, the endpoint set.
    #[cfg(feature = "aws")]
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .test_credentials()
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }
}

/// Where the server's own log goes: `MOTO_LOG_DIR/moto-PORT.log` when that variable names a
/// folder (to read the Python traceback behind an emulator's empty 500), nowhere otherwise.
fn log_file(port: u16) -> Stdio {
    let Some(dir) = std::env::var_os("MOTO_LOG_DIR") else { return Stdio::null() };
    match std::fs::File::create(std::path::Path::new(&dir).join(format!("moto-{port}.log"))) {
        Ok(file) => file.into(),
        Err(_) => Stdio::null(),
    }
}

fn ready(port: u16, pid: u32) -> bool {
    health(&format!("http://127.0.0.1:{port}")) == Some(pid)
}

/// The health route the harness adds (`/moto-harness/health`, answered whatever the server
/// holds): the moto server's pid when a harness moto answers at `endpoint`
/// (`http://127.0.0.1:PORT`), `None` when nothing answers or something else does.
pub fn health(endpoint: &str) -> Option<u32> {
    let addr: std::net::SocketAddr = endpoint.strip_prefix("http://")?.trim_end_matches('/').parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = "GET /moto-harness/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    // Bounded: the answer is a few dozen bytes; something else on the port may send more.
    stream.take(4096).read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
        return None;
    }
    if !body.contains("\"emulator\": \"moto-harness\"") {
        return None;
    }
    let pid = body.split_once("\"pid\": ")?.1;
    pid.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// Gives a command the emulator's test keys and nothing of the machine's AWS setup: no profile,
/// no endpoint from the environment, no config or credentials file. A binary under test then
/// reaches only what its arguments name.
pub fn only_test_credentials(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
}
