//! Execution: one module per stage kind, each talking to the outside world through a thin,
//! endpoint-configurable client.

pub mod aws_target;
pub mod build;
pub(crate) mod build_limits;
pub mod buildspec;
pub mod docker_config;
pub mod docker_host;
pub mod docker_stream;
pub mod driver;
pub mod ecs;
pub mod lease;
pub mod notify;
pub mod push;
pub mod run_notice;
pub mod source;
pub mod verify;
