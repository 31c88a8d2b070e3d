//! The App Container executor in init: from the pods plan to running, supervised apps.
//!
//! - `exec_plan`: the types every start is decided in ([`exec_plan::ExecPlan`]).

pub mod exec_plan;
