//! push end-to-end tests.
