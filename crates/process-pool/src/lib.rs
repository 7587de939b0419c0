//! Running commands: a bounded pool of `sh -c` processes, each in its own
//! process group so that nothing it started outlives its job.
//!
//! How a job's processes end with it:
//! - when the shell exits, whatever is left of its process group is stopped
//!   (SIGTERM, then SIGKILL after a grace), and the job's note and log say so;
//! - at a timeout or a cancel, the whole group is stopped the same way;
//! - when the runner itself dies (even SIGKILL), the shell gets SIGKILL from the
//!   kernel (`PR_SET_PDEATHSIG`), and a watchdog process per job, which reads
//!   a pipe only the runner holds, sees it close and stops the whole group.
//!
//! A job's stdout and stderr reach its log through a pipe and a
//! [`RedactingWriter`], so the log on disk never holds the secrets a command
//! printed. A tool's machine-readable stdout (`stdout_path`) is kept as it was printed.
//!
//! Used by step-runner (each component's commands) and validate (the external
//! linters); it knows nothing of steps or components beyond the names it logs.
//!
//! ```
//! use std::time::Duration;
//! let dir = tempfile::tempdir()?;
//! let cancel = std::sync::atomic::AtomicBool::new(false);
//! let runner = process_pool::Runner {
//!     workdir: dir.path().to_path_buf(),
//!     parallelism: 2,
//!     path_prefix: Vec::new(),
//!     cancel: &cancel,
//! };
//! let job = process_pool::Job {
//!     component: "api".into(),
//!     command: "echo hello".into(),
//!     timeout: Duration::from_secs(10),
//!     log_path: dir.path().join("api.log"),
//!     config_key: "components.api.test".into(),
//!     stdout_path: None,
//!     env: Vec::new(),
//! };
//! let results = runner.run(vec![job], &|_event| {});
//! assert_eq!(results[0].outcome, process_pool::Outcome::Passed);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{PipeReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use run_state::redact::RedactingWriter;

/// How many commands run at once when the config sets no bound: the number of CPUs.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// How long a command may run when the config sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One command to run for one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The component it belongs to.
    pub component: String,
    /// The command line, for `sh -c`.
    pub command: String,
    /// How long it may run.
    pub timeout: Duration,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
    /// The config key of the command, named in errors (`components.api.test`).
    pub config_key: String,
    /// Where stdout goes when it is kept apart from the log (a tool's machine-readable report);
    /// `None`: stdout and stderr both go to the log.
    pub stdout_path: Option<PathBuf>,
    /// Environment variables set for the command (`env = { … }` in config).
    pub env: Vec<(String, String)>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Passed,
    /// A non-zero exit, a signal, or a command that could not start; the message says which.
    Failed(String),
    /// Exit 127: the shell could not find a command. `program` is the word the shell named in
    /// its message (`sh: 1: vitest: not found`), when it printed one.
    NotFound {
        /// The command the shell could not find.
        program: Option<String>,
        /// The config key of the command line, named in the message.
        config_key: String,
    },
    /// Stopped at its timeout.
    TimedOut(Duration),
    /// Stopped, or never started, because the run was cancelled.
    Cancelled,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Passed => f.write_str("passed"),
            Outcome::Failed(message) => write!(f, "failed: {message}"),
            Outcome::NotFound { .. } => write!(f, "failed: {}", self.message().unwrap_or_default()),
            Outcome::TimedOut(after) => write!(f, "timed out after {}", humantime::format_duration(*after)),
            Outcome::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl Outcome {
    /// Why it did not pass, on one line (`None` when it passed).
    pub fn message(&self) -> Option<String> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed(message) => Some(message.clone()),
            Outcome::NotFound { program: Some(program), config_key } => {
                Some(format!("command not found: `{program}` (exit 127); install it or fix {config_key}.run"))
            }
            Outcome::NotFound { program: None, config_key } => {
                Some(format!("exit 127: a command was not found (see the log); install it or fix {config_key}.run"))
            }
            Outcome::TimedOut(after) => Some(format!("timed out after {}", humantime::format_duration(*after))),
            Outcome::Cancelled => Some("cancelled".into()),
        }
    }
}

/// The command a shell said it could not find, from the end of its output: `sh: 1: X: not found`
/// (dash, busybox), `bash: line 1: X: command not found`, `X: command not found`, `zsh: command not found: X`.
pub fn missing_program(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let line = line.trim();
        if let Some(program) = line.strip_prefix("zsh: command not found: ") {
            return Some(program.trim().to_string());
        }
        let rest = line.strip_suffix(": command not found").or_else(|| line.strip_suffix(": not found"))?;
        // The program is the last `: `-separated field before the suffix.
        let program = rest.rsplit(": ").next()?.trim();
        (!program.is_empty() && !program.contains(' ')).then(|| program.to_string())
    })
}

/// What went wrong in the runner's own I/O for a job (its log, its shell, its watchdog); the
/// `io::Error` is the [`source`](std::error::Error::source), never repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log's folder could not be made.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log (or the kept stdout) could not be written, or its pipe made.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `sh` could not be started for the command.
    #[error("cannot start `sh` for {config_key}")]
    Spawn {
        /// The config key of the command.
        config_key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The job's watchdog (`sh`) could not be started; the job was stopped.
    #[error("cannot start the watchdog of {config_key} (`sh`)")]
    Watchdog {
        /// The config key of the command.
        config_key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The job's shell could not be waited for; its group was stopped.
    #[error("cannot wait for {config_key}")]
    Wait {
        /// The config key of the command.
        config_key: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Copying the job's output into its log failed part way.
    #[error("the log is incomplete")]
    LogIncomplete {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The job.
    pub job: Job,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started (`None` if it never did).
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub ended_at: SystemTime,
    /// The last lines of its log.
    pub log_tail: String,
    /// What the runner had to do beyond running the command (processes it left behind
    /// stopped, output not logged), on one line; also at the end of the log.
    pub note: Option<String>,
    /// The runner's own I/O error for this job, its cause kept: why the job could not start or
    /// be waited for (the outcome is then [`Outcome::Failed`] with the error and its cause on one line), or why
    /// its log is incomplete (said in the note too).
    pub error: Option<Arc<Error>>,
}

/// What the runner reports while it works.
#[derive(Debug)]
pub enum Event<'a> {
    /// A job's process started.
    Started(&'a Job),
    /// A job ended.
    Finished(&'a JobResult),
}

/// Runs jobs with a bound on how many run at once.
#[derive(Debug)]
pub struct Runner<'a> {
    /// The folder commands run in (the monorepo root).
    pub workdir: PathBuf,
    /// How many jobs at once.
    pub parallelism: usize,
    /// Folders put in front of `PATH` for the commands.
    pub path_prefix: Vec<PathBuf>,
    /// Set to stop: running jobs are killed, waiting ones never start.
    pub cancel: &'a AtomicBool,
}

/// How long a process group gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

impl Runner<'_> {
    /// Runs every job and returns their results in the order given.
    pub fn run(&self, jobs: Vec<Job>, on_event: &(dyn Fn(Event<'_>) + Sync)) -> Vec<JobResult> {
        let count = jobs.len();
        let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
        let results = Mutex::new(Vec::with_capacity(count));
        let path = self.path_env();
        std::thread::scope(|scope| {
            for _ in 0..self.parallelism.clamp(1, count.max(1)) {
                scope.spawn(|| {
                    loop {
                        let Some((index, job)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                            break;
                        };
                        let result = if self.cancel.load(Ordering::SeqCst) {
                            JobResult {
                                job,
                                outcome: Outcome::Cancelled,
                                started_at: None,
                                ended_at: SystemTime::now(),
                                log_tail: String::new(),
                                note: None,
                                error: None,
                            }
                        } else {
                            self.run_one(job, path.as_ref(), on_event)
                        };
                        on_event(Event::Finished(&result));
                        results.lock().unwrap_or_else(|e| e.into_inner()).push((index, result));
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().map(|(_, result)| result).collect()
    }

    fn path_env(&self) -> Option<OsString> {
        if self.path_prefix.is_empty() {
            return None;
        }
        let existing = std::env::var_os("PATH").unwrap_or_default();
        let paths = self.path_prefix.iter().cloned().chain(std::env::split_paths(&existing));
        std::env::join_paths(paths).ok()
    }

    fn run_one(&self, job: Job, path: Option<&OsString>, on_event: &(dyn Fn(Event<'_>) + Sync)) -> JobResult {
        let started_at = SystemTime::now();
        let (outcome, note, error) = match self.spawn(&job, path) {
            Ok(running) => {
                on_event(Event::Started(&job));
                self.wait(running, &job)
            }
            Err(error) => (Outcome::Failed(run_state::error_chain(&error)), None, Some(error)),
        };
        let log_tail = run_state::redact::read_log_tail(&job.log_path).unwrap_or_default();
        let outcome = match outcome {
            Outcome::NotFound { config_key, .. } => {
                Outcome::NotFound { program: missing_program(&log_tail), config_key }
            }
            other => other,
        };
        let error = error.map(Arc::new);
        JobResult { job, outcome, started_at: Some(started_at), ended_at: SystemTime::now(), log_tail, note, error }
    }

    fn spawn(&self, job: &Job, path: Option<&OsString>) -> Result<RunningJob, Error> {
        let cannot_write = |path: &std::path::Path, source| Error::Write { path: path.to_path_buf(), source };
        if let Some(parent) = job.log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| Error::CreateDir { path: parent.to_path_buf(), source })?;
        }
        let log = File::create(&job.log_path).map_err(|e| cannot_write(&job.log_path, e))?;
        let stdout_file = match &job.stdout_path {
            Some(path) => Some(File::create(path).map_err(|e| cannot_write(path, e))?),
            None => None,
        };
        // One pipe for stdout and stderr keeps their order in the log, as one file did.
        let (reader, writer) = std::io::pipe().map_err(|e| cannot_write(&job.log_path, e))?;
        let stdout = match stdout_file {
            Some(file) => Stdio::from(file),
            None => Stdio::from(writer.try_clone().map_err(|e| cannot_write(&job.log_path, e))?),
        };
        let logger = Logger::start(reader, log).map_err(|e| cannot_write(&job.log_path, e))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&job.command)
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(writer)
            // Its own process group, so a timeout kills what the shell started too.
            .process_group(0);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        command.envs(job.env.iter().map(|(k, v)| (k, v)));
        end_with_this_process(&mut command);
        let spawned = command.spawn();
        // The runner's copies of the pipe's write end go here, so the log ends when the job's processes do.
        drop(command);
        let mut child = spawned.map_err(|source| Error::Spawn { config_key: job.config_key.clone(), source })?;
        let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let watchdog = match Watchdog::start(group) {
            Ok(watchdog) => watchdog,
            Err(source) => {
                stop_group(group, Some(&mut child));
                return Err(Error::Watchdog { config_key: job.config_key.clone(), source });
            }
        };
        Ok(RunningJob { child, group, watchdog, logger })
    }

    /// Waits for the job, then stops what it left and finishes its log: the outcome, the note,
    /// and the runner's own error (waiting, or the log).
    fn wait(&self, running: RunningJob, job: &Job) -> (Outcome, Option<String>, Option<Error>) {
        let RunningJob { mut child, group, watchdog, logger } = running;
        let deadline = Instant::now() + job.timeout;
        let mut pause = Duration::from_millis(2);
        let mut error = None;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) => break exit_outcome(status, job),
                Ok(None) => {}
                Err(source) => {
                    stop_group(group, Some(&mut child));
                    let failed = Error::Wait { config_key: job.config_key.clone(), source };
                    let outcome = Outcome::Failed(run_state::error_chain(&failed));
                    error = Some(failed);
                    break outcome;
                }
            }
            let cancelled = self.cancel.load(Ordering::SeqCst);
            if cancelled || Instant::now() >= deadline {
                stop_group(group, Some(&mut child));
                break if cancelled { Outcome::Cancelled } else { Outcome::TimedOut(job.timeout) };
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        let mut notes = Vec::new();
        // The shell is gone; whatever it left in its group goes too.
        if group_exists(group) {
            let how = if stop_group(group, None) { "SIGTERM" } else { "SIGKILL" };
            notes.push(format!(
                "the command left processes running in its process group; they were stopped ({how}) when it ended"
            ));
        }
        watchdog.stop();
        let mut log = match logger.finish() {
            Ok(log) => Some(log),
            Err(LogError::StillOpen) => {
                notes.push(
                    "a process outside the job's process group still holds its output; what it prints is not logged"
                        .into(),
                );
                None
            }
            Err(LogError::Io(source)) => {
                let incomplete = Error::LogIncomplete { source };
                notes.push(run_state::error_chain(&incomplete));
                // A failed wait is the error that matters; the log's is in the note.
                error = error.or(Some(incomplete));
                None
            }
        };
        if notes.is_empty() {
            return (outcome, None, error);
        }
        let note = notes.join("; ");
        let log = log.take().or_else(|| std::fs::OpenOptions::new().append(true).open(&job.log_path).ok());
        if let Some(mut log) = log {
            // The note is the runner's own line: best effort, the record keeps it anyway.
            let _ = writeln!(log, "[step-runner] {note}");
        }
        (outcome, Some(note), error)
    }
}

/// A started job: its shell, the shell's process group, its watchdog and its log writer.
struct RunningJob {
    child: Child,
    group: Pid,
    watchdog: Watchdog,
    logger: Logger,
}

/// Asks the kernel to SIGKILL the job's shell when the runner dies (`PR_SET_PDEATHSIG`).
///
/// The signal follows the death of the *thread* that forked; a job is spawned and waited for
/// by the same worker thread, which outlives it, so the thread is as long-lived as the job.
/// If the runner died between `fork` and the `prctl`, the parent is already someone else:
/// the child then exits at once instead of running unwatched.
#[allow(unsafe_code)]
fn end_with_this_process(command: &mut Command) {
    let runner = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It makes two system calls, prctl(2) and
    // getppid(2), both async-signal-safe; it takes no lock, does not allocate (an `Errno`
    // becomes an `io::Error` as a raw OS error code, without allocating) and touches no state
    // shared with the parent; `runner` is a plain integer copied into the closure.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != runner {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// A process per job that stops the job's process group if the runner dies: it waits for
/// EOF on a pipe whose only write end the runner holds (the kernel closes it however the
/// runner ends), then sends SIGTERM and, after a grace, SIGKILL to the group. It ignores
/// the terminal's signals and runs in its own group, so a Ctrl-C meant for the runner does
/// not take it away. When the job ends normally, the runner kills it first.
struct Watchdog {
    child: Child,
    _runner_end: ChildStdin,
}

/// The watchdog's script: `$1` is the job's process group.
const WATCHDOG: &str = "trap '' INT TERM HUP QUIT\n\
    while read -r _line; do :; done\n\
    kill -s TERM -- \"-$1\" 2>/dev/null || exit 0\n\
    sleep 3\n\
    kill -s KILL -- \"-$1\" 2>/dev/null\n";

impl Watchdog {
    fn start(group: Pid) -> std::io::Result<Watchdog> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("step-runner-watchdog")
            .arg(group.as_raw().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let runner_end = child.stdin.take().ok_or_else(|| std::io::Error::other("no pipe to the watchdog"))?;
        Ok(Watchdog { child, _runner_end: runner_end })
    }

    /// Kills the watchdog before it could act (the job's group was already stopped).
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The thread that copies a job's output into its log, redacting each line.
struct Logger {
    done: mpsc::Receiver<std::io::Result<File>>,
}

enum LogError {
    /// Something still holds the output pipe after the job's group ended.
    StillOpen,
    Io(std::io::Error),
}

/// How much of a job's output its log keeps from the start, and from the end: a command that
/// prints without end must not fill the disk, and the end is where the failure usually is.
pub const LOG_HEAD_BYTES: usize = 8 << 20;
/// See [`LOG_HEAD_BYTES`].
pub const LOG_TAIL_BYTES: usize = 8 << 20;

/// Keeps the first [`LOG_HEAD_BYTES`] written, then only the last [`LOG_TAIL_BYTES`] in memory;
/// [`finish`](Self::finish) writes a line saying how much was cut, then that tail.
struct CappedWriter<W: Write> {
    inner: W,
    head_left: usize,
    tail: Vec<u8>,
    cut: u64,
}

impl<W: Write> CappedWriter<W> {
    fn new(inner: W) -> Self {
        CappedWriter { inner, head_left: LOG_HEAD_BYTES, tail: Vec::new(), cut: 0 }
    }

    fn finish(mut self) -> std::io::Result<W> {
        let over = self.tail.len().saturating_sub(LOG_TAIL_BYTES);
        self.tail.drain(..over);
        self.cut += over as u64;
        if self.cut > 0 {
            writeln!(
                self.inner,
                "\n[process-pool] {} bytes of output cut here: the log keeps the first {} MiB and the last {} MiB",
                self.cut,
                LOG_HEAD_BYTES >> 20,
                LOG_TAIL_BYTES >> 20
            )?;
        }
        self.inner.write_all(&self.tail)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let head = buf.len().min(self.head_left);
        self.inner.write_all(&buf[..head])?;
        self.head_left -= head;
        self.tail.extend_from_slice(&buf[head..]);
        // Dropped from the front only once the tail holds twice its bound: one move per
        // LOG_TAIL_BYTES written, not one per write.
        if self.tail.len() > 2 * LOG_TAIL_BYTES {
            let over = self.tail.len() - LOG_TAIL_BYTES;
            self.tail.drain(..over);
            self.cut += over as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How long the log may take to drain once every process of the job has ended.
const LOG_DRAIN: Duration = Duration::from_secs(3);

impl Logger {
    fn start(mut reader: PipeReader, log: File) -> std::io::Result<Logger> {
        let (send, done) = mpsc::channel();
        std::thread::Builder::new().name("step-log".into()).spawn(move || {
            let mut writer = RedactingWriter::new(CappedWriter::new(log));
            let result =
                std::io::copy(&mut reader, &mut writer).and_then(|_| writer.finish()).and_then(CappedWriter::finish);
            let _ = send.send(result);
        })?;
        Ok(Logger { done })
    }

    /// Waits for the output to end (every write end closed) and returns the log file.
    /// A process that left the job's group can hold the pipe open for ever: past a short
    /// wait the thread is left to log what still comes, and the caller notes it.
    fn finish(self) -> Result<File, LogError> {
        match self.done.recv_timeout(LOG_DRAIN) {
            Ok(result) => result.map_err(LogError::Io),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(LogError::StillOpen),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(LogError::Io(std::io::Error::other("the log writer stopped")))
            }
        }
    }
}

fn exit_outcome(status: std::process::ExitStatus, job: &Job) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Passed,
        // The shell's own message names the missing word; it is read from the log afterwards.
        (Some(127), _) => Outcome::NotFound { program: None, config_key: job.config_key.clone() },
        (Some(126), _) => Outcome::Failed(format!("command not executable (exit 126); check {}.run", job.config_key)),
        (Some(code), _) => Outcome::Failed(format!("exit code {code}")),
        (None, Some(signal)) => Outcome::Failed(format!("killed by signal {signal}")),
        (None, None) => Outcome::Failed("ended without an exit code".into()),
    }
}

/// Whether a live process (not a zombie) is still in the group.
///
/// A member that ended but is not reaped yet (an orphan waiting for a slow init) still
/// counts for `kill(-group, 0)`, so a hit there is checked against `/proc`; where `/proc`
/// cannot be read, the signal's answer stands (cannot tell is not gone).
fn group_exists(group: Pid) -> bool {
    // EPERM: a process is there, it just is not ours to signal.
    if matches!(killpg(group, None), Err(Errno::ESRCH)) {
        return false;
    }
    live_member_in_proc(group).unwrap_or(true)
}

/// Whether `/proc` lists a live member of the group (`None`: `/proc` cannot be read).
fn live_member_in_proc(group: Pid) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let wanted = group.as_raw().to_string();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        // A process that ends while we read is simply not there.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `PID (COMM) STATE PPID PGRP …`: fields after the last `)`, as COMM may hold anything.
        let Some((_, fields)) = stat.rsplit_once(')') else { continue };
        let mut fields = fields.split_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (fields.next(), fields.next(), fields.next()) else { continue };
        if pgrp == wanted && !matches!(state, "Z" | "X" | "x") {
            return Some(true);
        }
    }
    Some(false)
}

/// Reaps members of the group that are this process's children (when the runner is the
/// reaper of orphans: pid 1 in a container, or a subreaper). The caller has reaped the
/// shell already, so no `Child` loses its status to this.
fn reap_group(group: Pid) {
    let any_in_group = Pid::from_raw(-group.as_raw());
    while let Ok(status) = waitpid(any_in_group, Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// Stops the whole group: SIGTERM, then SIGKILL after a grace period unless the shell (when
/// given) and every other member ended. Returns whether SIGTERM was enough.
fn stop_group(group: Pid, mut shell: Option<&mut Child>) -> bool {
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    let mut shell_done = shell.is_none();
    loop {
        if !shell_done && let Some(child) = shell.as_deref_mut() {
            shell_done = !matches!(child.try_wait(), Ok(None));
        }
        if shell_done {
            reap_group(group);
            if !group_exists(group) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    if let Some(child) = shell {
        let _ = child.wait();
    }
    // Bounded: a zombie nobody reaps (no reaping init) would keep the group for ever.
    let deadline = Instant::now() + Duration::from_secs(1);
    while group_exists(group) && Instant::now() < deadline {
        reap_group(group);
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{CappedWriter, Error, Job, LOG_HEAD_BYTES, LOG_TAIL_BYTES, Outcome, Runner, missing_program};
    use std::io::Write;

    #[test]
    fn a_job_that_cannot_start_keeps_the_io_error_as_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        // The log's folder would be under a file: it cannot be made.
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, "").unwrap();
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let runner =
            Runner { workdir: dir.path().to_path_buf(), parallelism: 1, path_prefix: Vec::new(), cancel: &cancel };
        let job = Job {
            component: "api".into(),
            command: "true".into(),
            timeout: std::time::Duration::from_secs(10),
            log_path: blocker.join("logs").join("api.log"),
            config_key: "components.api.test".into(),
            stdout_path: None,
            env: Vec::new(),
        };
        let result = runner.run(vec![job], &|_| {}).remove(0);
        let error = result.error.as_deref().expect("the runner's error is kept");
        let Error::CreateDir { path, source } = error else { panic!("{error:?}") };
        assert_eq!(path, &blocker.join("logs"));
        let cause = source.to_string();
        let message = error.to_string();
        assert!(!message.contains(&cause), "the cause is the source, not in the message: {message}");
        assert!(std::error::Error::source(error).is_some());
        assert_eq!(result.outcome, Outcome::Failed(format!("{message}: {cause}")), "the outcome says both, as before");
    }

    #[test]
    fn a_log_keeps_its_start_and_its_end_and_says_what_was_cut() {
        let mut writer = CappedWriter::new(Vec::new());
        writer.write_all(b"START\n").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..20 {
            writer.write_all(&chunk).unwrap();
        }
        writer.write_all(b"\nEND\n").unwrap();
        let log = writer.finish().unwrap();
        let written = 6 + 20 * (1 << 20) + 5;
        let cut = written - LOG_HEAD_BYTES - LOG_TAIL_BYTES;
        let text = String::from_utf8(log).unwrap();
        assert!(text.starts_with("START\n") && text.ends_with("\nEND\n"));
        assert!(text.contains(&format!("[process-pool] {cut} bytes of output cut here")), "the marker says how much");
        assert!(text.len() < LOG_HEAD_BYTES + LOG_TAIL_BYTES + 200);

        let mut small = CappedWriter::new(Vec::new());
        small.write_all(b"short").unwrap();
        assert_eq!(small.finish().unwrap(), b"short", "a short log is kept whole, with no marker");
    }

    #[test]
    fn the_missing_program_is_the_word_the_shell_named() {
        assert_eq!(missing_program("> test\n> vitest run\n\nsh: 1: vitest: not found\n").as_deref(), Some("vitest"));
        assert_eq!(missing_program("bash: line 1: cfn-lintx: command not found").as_deref(), Some("cfn-lintx"));
        assert_eq!(missing_program("zsh: command not found: foo").as_deref(), Some("foo"));
        assert_eq!(missing_program("npm ERR! missing script\nexit 127"), None);
        assert_eq!(missing_program("error: the file was not found"), None);
    }
}
