//! pod-shim, the supervisor of one pod sandbox. It runs detached from the front, so the front
//! can crash or be upgraded without touching the pod; it owns the pod's Docker containers and
//! their exit tracking, persists the pod's record, and answers the front over its own socket.
#![deny(unsafe_code)]

pub mod adopt;
pub mod cni;
pub mod config;
pub mod cri;
pub mod cri_stats;
pub mod detach;
pub mod docker;
pub mod error;
pub mod exec;
pub mod exits;
pub mod host;
pub mod inotify;
pub mod kernel_stats;
pub mod lifecycle;
pub mod locks;
pub mod log_position;
pub mod logs;
pub mod memory;
pub mod oom_kills;
pub mod own_log;
pub mod run;
pub mod server;
pub mod spec;
pub mod state;
pub mod streaming;
pub mod title;
