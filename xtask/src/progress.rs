//! Renders pipeline events: a live view on a terminal, one line per event otherwise (CI logs).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use step_runner::{Event, Outcome};

pub enum Progress {
    Live { bars: MultiProgress, running: Mutex<HashMap<String, ProgressBar>> },
    Lines,
}

impl Progress {
    pub fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::Live { bars: MultiProgress::new(), running: Mutex::new(HashMap::new()) }
        } else {
            Progress::Lines
        }
    }

    /// A line about the pipeline itself.
    pub fn stage(&self, message: &str) {
        match self {
            Progress::Live { bars, .. } => {
                let _ = bars.println(format!("▸ {message}"));
            }
            Progress::Lines => eprintln!("pipeline: {message}"),
        }
    }

    /// A step-runner event.
    pub fn job(&self, step: &str, event: &Event<'_>) {
        match (self, event) {
            (Progress::Live { bars, running }, Event::Started(job)) => {
                let bar = bars.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("  {spinner} {msg} {elapsed}").expect("valid template"));
                bar.set_message(format!("{} {step}", job.component));
                bar.enable_steady_tick(Duration::from_millis(100));
                running.lock().unwrap_or_else(|e| e.into_inner()).insert(job.component.clone(), bar);
            }
            (Progress::Live { bars, running }, Event::Finished(result)) => {
                if let Some(bar) = running.lock().unwrap_or_else(|e| e.into_inner()).remove(&result.job.component) {
                    bar.finish_and_clear();
                    bars.remove(&bar);
                }
                let mark = if result.outcome == Outcome::Passed { "✔" } else { "✘" };
                let _ = bars.println(format!("  {mark} {} {step}: {}", result.job.component, result.outcome));
            }
            (Progress::Lines, Event::Started(job)) => eprintln!("pipeline: started {} {step}", job.component),
            (Progress::Lines, Event::Finished(result)) => {
                eprintln!("pipeline: finished {} {step}: {}", result.job.component, result.outcome)
            }
        }
    }
}
