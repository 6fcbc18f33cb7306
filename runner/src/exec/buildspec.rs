//! buildspec stage.
