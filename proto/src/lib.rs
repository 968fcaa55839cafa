//! What both dockpod binaries agree on: the `dockpod.shim.v1` protocol spoken between the
//! front (`shim-manager`) and each pod's supervisor (`pod-shim`), the Kubernetes naming and
//! label convention on Docker objects, request validation, the on-disk layout, and the helpers
//! for unix sockets, durable files and `/proc` readings that both sides use.
#![deny(unsafe_code)]

pub mod authority;
pub mod closing_stream;
pub mod cni_conf;
pub mod cri;
pub mod cri_stream;
pub mod docker_errors;
pub mod docker_socket;
pub mod engine_api;
pub mod failpoints;
pub mod files;
pub mod filters;
pub mod flights;
pub mod labels;
pub mod layout;
pub mod listing;
pub mod metrics;
pub mod name_holder;
pub mod owner;
pub mod panics;
pub mod pod_record;
pub mod pod_state;
pub mod process;
pub mod procfs;
pub mod shim_log;
pub mod sockets;
pub mod state_journal;
pub mod streaming;
pub mod tasks;
pub mod validate;
pub mod wire;

/// Generated `dockpod.shim.v1` messages, client and server.
pub mod shim {
    tonic::include_proto!("dockpod.shim.v1");
}

/// Generated `dockpod.manager.v1`: the operator's calls to a running front, beside the CRI
/// on its socket.
pub mod manager {
    tonic::include_proto!("dockpod.manager.v1");
}

/// Revision of `dockpod.shim.v1` this build speaks. Raised when a call or field is added, or
/// when the streaming hand-over's framing changes (3: the framing carries its version), so
/// the front can tell whether an older shim understands what it is about to ask (4:
/// CheckNetwork; 5: Processes and restart counts; 6: the CRI of cri-api 0.36, whose new
/// fields a shim of 5 would drop unread).
pub const PROTOCOL_VERSION: u32 = 6;

/// Largest gRPC message the front and the shims send: an ExecSync answer carries up to 16 MiB
/// of stdout and 16 MiB of stderr.
pub const MAX_MESSAGE: usize = 33 * 1024 * 1024;

/// Most calls one client connection may have in flight at once (HTTP/2 concurrent streams) on
/// the CRI socket and on a shim's socket; more wait for a slot. The kubelet uses one
/// connection, and its busiest moments (a node-wide relist beside every pod's probes) stay
/// far below this.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
