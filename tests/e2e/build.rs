//! build end-to-end tests.
