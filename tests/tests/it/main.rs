//! dockpod's integration tests, one test binary (one link, one harness start-up) with a module
//! per capability. Each test starts its own `shim-manager` on a temporary socket and state
//! directory against the real dockerd.

mod adopt;
mod cgroups;
mod cli;
mod clients;
mod containers;
mod cut;
mod disk;
mod docker_requests;
mod doctor;
mod hostile;
mod images;
mod logs;
mod network;
mod pod_shim;
mod pods;
mod readme;
mod retries;
mod runtime_info;
mod security;
mod server_lifecycle;
mod stats;
mod streaming;
mod stuck;
mod systemd;
mod todays_cri;
