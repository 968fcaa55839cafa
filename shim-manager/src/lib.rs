//! shim-manager, dockpod's front: serves the kubelet's CRI calls on a unix socket, answers
//! image calls from dockerd directly, starts one `pod-shim` process per pod and routes every
//! pod-scoped call to it.
#![deny(unsafe_code)]

pub mod activation;
pub mod adopt;
pub mod cli;
pub mod config;
pub mod cri;
pub mod daemon;
pub mod deadline;
pub mod docker;
pub mod error;
pub mod events;
pub mod fallback;
pub mod image_ref;
pub mod imagefs;
pub mod listing;
pub mod manage;
pub mod metrics;
pub mod network;
pub mod route;
pub mod server;
pub mod shim;
pub mod spawn;
pub mod state;
pub mod strays;
pub mod streaming;
pub mod supervise;
