//! Whether a process still runs, read from `/proc`, never guessed.

use std::path::Path;
use std::time::Duration;

/// Whether a process runs, from `/proc/PID/stat`: gone or a zombie is not running. Panics when
/// `/proc` cannot tell, so a test never takes "cannot tell" for "gone".
pub fn running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state.expect("cannot parse /proc/PID/stat"), "Z" | "X" | "x")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(Path::new("/proc/self/stat").exists(), "no /proc: cannot tell whether {pid} runs");
            false
        }
        Err(e) => panic!("cannot tell whether {pid} runs: {e}"),
    }
}

/// Waits, a bounded number of polls, for a process to end; panics when it does not.
pub fn assert_ends(pid: &str, what: &str) {
    for _ in 0..200 {
        if !running(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} (pid {pid}) is still running");
}

/// Reads a line a process writes to a file (a pid, say), a bounded number of polls; panics
/// when it is never written.
pub fn wait_for_file(path: &Path) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} was never written", path.display());
}
