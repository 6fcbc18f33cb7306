//! One line for an error and its causes: clients such as reqwest and the AWS SDK put the
//! useful part ("connection refused", "invalid peer certificate") in a source, not in the
//! error's own message.

/// `error: cause: cause …`, skipping a cause whose text the line already holds.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    #[test]
    fn causes_follow_on_one_line_without_repeats() {
        let error = Layer {
            text: "error sending request",
            source: Some(Box::new(Layer {
                text: "client error (Connect)",
                source: Some(Box::new(Layer {
                    text: "Connect",
                    source: Some(Box::new(Layer {
                        text: "connection refused",
                        source: None,
                    })),
                })),
            })),
        };
        assert_eq!(
            error_chain(&error),
            "error sending request: client error (Connect): connection refused"
        );
    }
}
