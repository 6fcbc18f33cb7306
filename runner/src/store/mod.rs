//! Run state store.
