//! pod-shim, the supervisor of one pod sandbox. It runs detached from the front, so the front
//! can crash or be upgraded without touching the pod, and answers the front over its own unix
//! socket.
#![deny(unsafe_code)]

pub mod config;
pub mod server;
