//! Running commands: a bounded pool of `sh -c` processes, each in its own
//! process group so a timeout or a cancel stops everything it started.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
        let outcome = match self.spawn(&job, path) {
            Ok(child) => {
                on_event(Event::Started(&job));
                self.wait(child, &job)
            }
            Err(message) => Outcome::Failed(message),
        };
        let log_tail = run_state::redact::read_log_tail(&job.log_path).unwrap_or_default();
        let outcome = match outcome {
            Outcome::NotFound { config_key, .. } => {
                Outcome::NotFound { program: missing_program(&log_tail), config_key }
            }
            other => other,
        };
        JobResult { job, outcome, started_at: Some(started_at), ended_at: SystemTime::now(), log_tail }
    }

    fn spawn(&self, job: &Job, path: Option<&OsString>) -> Result<Child, String> {
        if let Some(parent) = job.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let log = File::create(&job.log_path).map_err(|e| format!("cannot write {}: {e}", job.log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("cannot write {}: {e}", job.log_path.display()))?;
        let stdout = match &job.stdout_path {
            Some(path) => File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?,
            None => log,
        };
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&job.command)
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_err)
            // Its own process group, so a timeout kills what the shell started too.
            .process_group(0);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        command.envs(job.env.iter().map(|(k, v)| (k, v)));
        command.spawn().map_err(|e| format!("cannot start `sh` for {}: {e}", job.config_key))
    }

    fn wait(&self, mut child: Child, job: &Job) -> Outcome {
        let deadline = Instant::now() + job.timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return exit_outcome(status, job),
                Ok(None) => {}
                Err(e) => return Outcome::Failed(format!("cannot wait for {}: {e}", job.config_key)),
            }
            let cancelled = self.cancel.load(Ordering::SeqCst);
            if cancelled || Instant::now() >= deadline {
                stop_group(&mut child);
                return if cancelled { Outcome::Cancelled } else { Outcome::TimedOut(job.timeout) };
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
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

/// SIGTERM to the whole group, then SIGKILL after a grace period.
fn stop_group(child: &mut Child) {
    let Ok(id) = i32::try_from(child.id()) else { return };
    let group = Pid::from_raw(id);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // The shell is gone; make sure nothing it started lingers.
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::missing_program;

    #[test]
    fn the_missing_program_is_the_word_the_shell_named() {
        assert_eq!(missing_program("> test\n> vitest run\n\nsh: 1: vitest: not found\n").as_deref(), Some("vitest"));
        assert_eq!(missing_program("bash: line 1: cfn-lintx: command not found").as_deref(), Some("cfn-lintx"));
        assert_eq!(missing_program("zsh: command not found: foo").as_deref(), Some("foo"));
        assert_eq!(missing_program("npm ERR! missing script\nexit 127"), None);
        assert_eq!(missing_program("error: the file was not found"), None);
    }
}
