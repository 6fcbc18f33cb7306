//! envelope-runner library.
