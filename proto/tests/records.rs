//! A pod's state file as a shim of an earlier release wrote it (`fixtures/`, captured from a
//! real shim: a pod with an exited and a created container) is read by this release, by the
//! shim's record and by the front's two readers alike. A release that can no longer read it
//! would lose every pod of a node it is upgraded on.

use dockpod_proto::cri::{ContainerState, PodSandboxState};
use dockpod_proto::listing::PodListing;
use dockpod_proto::pod_record::PodRecord;
use dockpod_proto::pod_state::PodSummary;
use dockpod_proto::{layout, state_journal};

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

/// An earlier release left the base alone (it replaced the whole file on every save): this
/// release reads it, and its first save there goes on from it.
#[test]
fn a_pod_directory_of_the_previous_release_reads_and_saves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(layout::STATE_FILE), PROTOCOL_6).expect("base");
    let read = state_journal::read(dir.path()).expect("read");
    assert_eq!(read.as_deref(), Some(PROTOCOL_6));
    let summary = PodSummary::load(dir.path()).expect("load").expect("a pod");
    assert_eq!(summary.sandbox_id, SANDBOX);

    let mut record: PodRecord = serde_json::from_slice(PROTOCOL_6).expect("record");
    record.containers.remove(EXITED);
    let mut journal = state_journal::Journal::new(dir.path(), 0o600);
    for _ in 0..2 {
        let bytes = serde_json::to_vec(&record).expect("write");
        journal.save(&bytes).expect("save");
        let summary = PodSummary::load(dir.path()).expect("load").expect("a pod");
        assert_eq!(summary.container_ids.len(), 1);
        record.ready = false;
    }
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

/// The fuzz seed of a journal, framed by an independent CRC-32 (Python's zlib) around this
/// release's record fixture: the frame format is the one documented, not merely one this
/// crate agrees with itself on.
#[test]
fn a_journal_framed_elsewhere_reads_as_its_last_frame() {
    let journal = include_bytes!("../../fuzz/seeds/state_journal/two-frames");
    let (last, end) = state_journal::last_frame(journal);
    let last: PodRecord = serde_json::from_slice(last.expect("a frame")).expect("a record");
    assert_eq!(last.sandbox_id, SANDBOX);
    assert!(!last.ready, "the second frame, not the first");
    assert_eq!(
        end,
        journal.len() - 256,
        "the zeros after the frames are no frame"
    );
    let torn = include_bytes!("../../fuzz/seeds/state_journal/torn-last-frame");
    let (first, _) = state_journal::last_frame(torn);
    assert_eq!(
        first,
        Some(PROTOCOL_6),
        "a torn frame reads as the one before"
    );
}
