//! What the end-to-end tests share: the helpers that drive the `envelope-runner` binary and
//! read what it recorded (re-exported here), and the fixtures, one module each. A fixture that
//! starts something (a process, a container, an ECS cluster, an image) stops or removes it
//! when dropped, so a failing test leaves nothing running. Proxies serve on tasks of the
//! test's own runtime and end with it.

mod cli;
mod example_app;
mod project;

pub mod agents;
pub mod cleanup;
pub mod counting_proxy;
pub mod cutting_proxy;
pub mod docker;
pub mod docker_config;
pub mod ecs;
pub mod fault_proxy;
pub mod health_endpoint;
pub mod http;
pub mod line_end_proxy;
pub mod private_daemon;
pub mod private_ministack;
pub mod process;
pub mod process_tree;
pub mod registry;
pub mod sns;
pub mod sqlite_locker;
pub mod target_health_proxy;
pub mod test_image;
pub mod tls_daemon;
pub mod webhook;

pub use cli::{run_id, runner, stage, status_json, status_json_with_store, text};
pub use example_app::{App, TOKEN, example_app, example_app_with};
pub use project::{APPROVAL_AND_DEPLOY, project, project_with};
