//! The Docker daemon's streamed JSON answers (`/build`, `/images/{name}/push`), read through
//! bollard, without a false error at their end.
//!
//! The daemon ends every message with `\r\n` and writes each one whole. bollard 0.21's decoder
//! splits the answer on `\n` only (bollard issue #560; its fix, bollard PR #733, is in no
//! release yet: 0.21.1 is the newest): when a socket read ends right after a message's closing
//! `}`, it takes the message, and the `\r\n` that arrives next leaves a lone `\r` in its
//! buffer. If that was the last message, the complete answer ends in
//! `Err(IOError("bytes remaining on stream"))`: a finished build reported as a failure of the
//! daemon.
//!
//! That error can only mean whitespace here: a connection that drops midway is reported by
//! hyper with its own message, and the daemon never ends an answer inside a message. So
//! [`whole`] ends the stream there instead.

use futures_util::{Stream, StreamExt, future};

/// What tokio-util's framed reader says when an answer ends with bytes its decoder did not take.
const LEFTOVER_AT_END: &str = "bytes remaining on stream";

/// Whether `error` is the leftover `\r` of a complete answer rather than a failure.
fn is_leftover_line_end(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::IOError { err }
            if err.kind() == std::io::ErrorKind::Other && err.to_string() == LEFTOVER_AT_END
    )
}

/// `stream`, ending where bollard reports a complete answer's last line end as leftover bytes.
pub fn whole<T>(
    stream: impl Stream<Item = Result<T, bollard::errors::Error>>,
) -> impl Stream<Item = Result<T, bollard::errors::Error>> {
    stream.take_while(|item| {
        let leftover = matches!(item, Err(error) if is_leftover_line_end(error));
        if leftover {
            tracing::debug!("the Docker daemon's answer ended with a line end bollard left over");
        }
        future::ready(!leftover)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(message: &str) -> bollard::errors::Error {
        std::io::Error::other(message.to_owned()).into()
    }

    #[tokio::test]
    async fn the_leftover_line_end_ends_the_stream_and_other_errors_go_through() {
        let items = vec![Ok(1), Ok(2), Err(io(LEFTOVER_AT_END)), Ok(3)];
        let seen: Vec<_> = whole(futures_util::stream::iter(items)).collect().await;
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(Result::is_ok));

        for error in [
            io("error reading a body from connection"),
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, LEFTOVER_AT_END).into(),
        ] {
            let items = vec![Ok(1), Err(error)];
            let seen: Vec<_> = whole(futures_util::stream::iter(items)).collect().await;
            assert!(matches!(seen.as_slice(), [Ok(1), Err(_)]), "{seen:?}");
        }
    }
}
