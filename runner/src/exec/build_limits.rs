//! What a build stage that ran out of its `timeout` tells the user: which buildspec command or
//! image build step was running when the limit struck.
//!
//! The limit itself (CodeBuild's `timeout-in-minutes`: the buildspec's phases and the image
//! build together) is applied by the driver around the whole stage; dropping the stage's work
//! kills the buildspec's process group and closes the build's connection to the daemon.

use std::time::Duration;

use crate::event::Event;
use crate::timeouts::show;

/// The failure message for build stage `stage` stopped after `limit`, naming what was running
/// according to the run's events so far.
pub(crate) fn timed_out(stage: &str, limit: Duration, history: &[Event]) -> String {
    let running = match running(stage, history) {
        Some(Running::Command(command)) => format!(" while buildspec command `{command}` ran"),
        Some(Running::Step(step)) => format!(" while image build step `{step}` ran"),
        None => String::new(),
    };
    format!(
        "the build stage `{stage}` timed out after {}{running}: it was stopped. Raise the \
         stage's `timeout` (default {}, as CodeBuild's) if it needs longer",
        show(limit),
        show(crate::timeouts::BUILD_TIMEOUT)
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Running {
    Command(String),
    Step(String),
}

/// The newest buildspec command or build step of `stage` that had not finished.
fn running(stage: &str, history: &[Event]) -> Option<Running> {
    let mut completed_steps: Vec<&str> = Vec::new();
    for event in history.iter().rev() {
        match event {
            Event::Log { stage: of, line } if of == stage => {
                if let Some(command) = line.strip_prefix("$ ") {
                    return Some(Running::Command(first_line(command)));
                }
                if line.starts_with("phase ") && !line.ends_with(" started") {
                    // A phase finished after its last command: nothing of the buildspec ran.
                    return None;
                }
            }
            Event::BuildStep {
                stage: of,
                step,
                completed,
                ..
            } if of == stage => {
                if *completed {
                    completed_steps.push(step);
                } else if !completed_steps.contains(&step.as_str()) {
                    return Some(Running::Step(step.clone()));
                }
            }
            _ => {}
        }
    }
    None
}

fn first_line(command: &str) -> String {
    match command.split_once('\n') {
        Some((first, _)) => format!("{first} …"),
        None => command.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(line: &str) -> Event {
        Event::Log {
            stage: "build".into(),
            line: line.into(),
        }
    }

    fn step(name: &str, completed: bool) -> Event {
        Event::BuildStep {
            stage: "build".into(),
            step: name.into(),
            cached: false,
            completed,
            seconds: None,
            error: None,
        }
    }

    #[test]
    fn names_the_command_or_step_that_was_running() {
        let history = [log("phase build started"), log("$ curl -s http://x/")];
        assert_eq!(
            running("build", &history),
            Some(Running::Command("curl -s http://x/".into()))
        );
        let history = [
            log("$ make"),
            step("[1/2] FROM base", false),
            step("[1/2] FROM base", true),
            step("[2/2] RUN sleep 99", false),
        ];
        assert_eq!(
            running("build", &history),
            Some(Running::Step("[2/2] RUN sleep 99".into()))
        );
        let history = [log("$ make"), log("phase build SUCCEEDED in 0.1s")];
        assert_eq!(running("build", &history), None);
        assert!(
            timed_out("build", Duration::from_secs(3), &[log("$ sleep 9")]).starts_with(
                "the build stage `build` timed out after 3s while buildspec command `sleep 9` ran"
            )
        );
    }
}
