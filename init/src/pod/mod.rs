//! The App Container executor in init: from the pods plan to running, supervised apps.
//!
//! - `exec_plan`: the types every start is decided in ([`exec_plan::ExecPlan`]).
//! - `plan`: the pod plan, the image manifest and the declaration's overrides into ExecPlans.
//! - `images`: each app's image made ready: verified from the payload into the store, rendered.
//! - `pending`: the pods that wait for images init fetches at boot.
//! - `runtime`: the executor's host side and the [`crate::supervise::Launcher`] it gives.
//! - `sys`: carrying a plan out (namespaces, mounts, user, capabilities, seccomp, cgroups).

pub mod exec_plan;
pub mod images;
pub mod pending;
pub mod plan;
pub mod runtime;
pub mod sys;
