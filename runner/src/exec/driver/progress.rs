//! Progress of the build, buildspec and push stages as the run's events.

use crate::event::Event;
use crate::exec::{build, buildspec as phases, push};

pub(super) fn build_event(stage: &str, progress: build::BuildProgress) -> Option<Event> {
    match progress {
        // A cache that is not there yet fails its import step, not the build.
        build::BuildProgress::Step {
            name,
            error: Some(error),
            ..
        } if name.starts_with(build::CACHE_IMPORT_STEP) => Some(Event::Log {
            stage: stage.to_owned(),
            line: format!("{name}: {error}; the build goes on without that cache"),
        }),
        build::BuildProgress::Step {
            name,
            cached,
            completed,
            duration,
            error,
            ..
        } => Some(Event::BuildStep {
            stage: stage.to_owned(),
            step: name,
            cached,
            completed,
            seconds: duration.map(|d| d.as_secs_f64()),
            error: error.as_deref().map(build::step_reason),
        }),
        build::BuildProgress::Log { line, .. } => Some(Event::Log {
            stage: stage.to_owned(),
            line,
        }),
        build::BuildProgress::Warning { step, message } => Some(Event::Notice {
            stage: Some(stage.to_owned()),
            message: format!("{step}: {message}"),
        }),
        build::BuildProgress::Status { .. } => None,
    }
}

pub(super) fn buildspec_event(stage: &str, progress: phases::BuildspecProgress) -> Option<Event> {
    let line = match progress {
        phases::BuildspecProgress::PhaseStarted { phase } => format!("phase {phase} started"),
        phases::BuildspecProgress::Command { command, .. } => format!("$ {command}"),
        phases::BuildspecProgress::Line { line, .. } => line,
        phases::BuildspecProgress::PhaseFinished {
            phase,
            status,
            seconds,
        } => {
            format!("phase {phase} {status} in {seconds:.1}s")
        }
        phases::BuildspecProgress::Notice { message } => {
            return Some(Event::Notice {
                stage: Some(stage.to_owned()),
                message,
            });
        }
    };
    Some(Event::Log {
        stage: stage.to_owned(),
        line,
    })
}

pub(super) fn push_event(stage: &str, progress: push::PushProgress) -> Option<Event> {
    use push::PushProgress as P;
    let line = match progress {
        P::TagStarted { target, attempt: 1 } => format!("pushing {target}"),
        P::TagStarted { target, attempt } => format!("pushing {target} (attempt {attempt})"),
        P::LayerUploaded => "layer uploaded".to_owned(),
        P::LayerSkipped {
            mounted_from: Some(from),
        } => format!("layer mounted from {from}"),
        P::LayerSkipped { mounted_from: None } => "layer already in the registry".to_owned(),
        P::LayerRetrying { message } => message,
        P::TagPushed { tag, digest } => format!("pushed {tag} as {digest}"),
        P::Retrying {
            target,
            failed_attempt,
            delay,
            reason,
        } => format!(
            "push of {target} failed (attempt {failed_attempt}: {reason}); retrying in {:.1}s",
            delay.as_secs_f64()
        ),
        P::Verified { tag, digest } => format!("registry resolves {tag} to {digest}"),
        P::LayerUploading { .. } => return None,
    };
    Some(Event::Log {
        stage: stage.to_owned(),
        line,
    })
}
