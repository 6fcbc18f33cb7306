//! One module per stage kind: what `Driver::run_step` runs for each step of the plan.

mod approval;
#[cfg(test)]
mod approval_tests;
mod build;
mod copy;
mod ecs;
mod push;
mod source;

pub use approval::approval_deadline;
pub(crate) use source::local_head;
