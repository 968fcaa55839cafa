//! shim-manager, dockpod's front: serves the kubelet's CRI calls on a unix socket, answers
//! image calls from dockerd directly, and (as the pod lifecycle lands) routes pod-scoped calls
//! to each pod's own `pod-shim` process.
#![deny(unsafe_code)]

pub mod config;
pub mod cri;
pub mod docker;
pub mod error;
pub mod image_ref;
pub mod imagefs;
pub mod network;
pub mod server;
pub mod state;
