//! push stage.
