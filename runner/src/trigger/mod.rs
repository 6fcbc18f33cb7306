//! Where runs come from when the command line does not say everything: the trigger context a
//! CI system provides. Today that is GitHub Actions ([`actions`]).

pub mod actions;
