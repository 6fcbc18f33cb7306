//! source end-to-end tests.
