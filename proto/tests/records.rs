//! A pod's state file as a shim of an earlier release wrote it (`fixtures/`, captured from a
//! real shim: a pod with an exited and a created container) is read by this release, by the
//! shim's record and by the front's two readers alike. A release that can no longer read it
//! would lose every pod of a node it is upgraded on.

use dockpod_proto::cri::{ContainerState, PodSandboxState};
use dockpod_proto::listing::PodListing;
use dockpod_proto::pod_record::PodRecord;
use dockpod_proto::pod_state::PodSummary;

const PROTOCOL_6: &[u8] = include_bytes!("fixtures/state-v0.1-protocol6.json");
const SANDBOX: &str = "c5692c1f8d9c67fec9077272e0e24372f6d91fa35330d1f35ca5851caf7decc4";
const EXITED: &str = "5117a493b6a975d7a98b13b20154a75370083015a4dd5c9e9c9d7ff9ce3f273d";

#[test]
fn a_record_of_the_previous_release_reads_the_same_through_every_reader() {
    let record: PodRecord = serde_json::from_slice(PROTOCOL_6).expect("the shim's record");
    assert_eq!(record.sandbox_id, SANDBOX);
    assert!(record.ready);
    assert_eq!(record.display_name(), "dockpod-test/fixture-7762-0-5d0fc12");
    assert_eq!(record.containers.len(), 2);
    let exited = &record.containers[EXITED];
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!(exited.exit_code, 3);
    assert!(exited.log_complete);

    let summary = PodSummary::parse(PROTOCOL_6).expect("the front's summary");
    assert_eq!(summary.sandbox_id, SANDBOX);
    assert_eq!(summary.display, record.display_name());
    let mut ids: Vec<String> = record.containers.keys().cloned().collect();
    ids.sort();
    let mut summarised = summary.container_ids.clone();
    summarised.sort();
    assert_eq!(summarised, ids);

    let listing = PodListing::parse(PROTOCOL_6)
        .expect("the front's listing")
        .expect("a sandbox");
    assert_eq!(listing.pod, record.to_cri());
    assert_eq!(listing.pod.state, PodSandboxState::SandboxReady as i32);
    let shim_lists: Vec<_> = record
        .containers
        .values()
        .map(|c| c.to_cri(&record.sandbox_id))
        .collect();
    assert_eq!(listing.containers, shim_lists);

    // What this release writes back reads as what it read.
    let written = serde_json::to_vec(&record).expect("write");
    let again: PodRecord = serde_json::from_slice(&written).expect("read back");
    assert_eq!(again.containers, record.containers);
    assert_eq!(again.config, record.config);
}

#[test]
fn fields_a_record_lacks_or_does_not_know_are_harmless() {
    // An older shim wrote fewer fields; a newer one may write more.
    let sparse = br#"{"sandbox_id":"sb","ready":true,"containers":{"c":{"id":"c","state":1}},"later":{"x":1}}"#;
    let record: PodRecord = serde_json::from_slice(sparse).expect("sparse record");
    assert_eq!(record.sandbox_id, "sb");
    assert!(record.intents.is_empty());
    assert_eq!(
        record.containers["c"].state,
        ContainerState::ContainerRunning as i32
    );
    assert!(PodListing::parse(sparse).expect("listing").is_some());
}
