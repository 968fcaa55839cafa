//! The pod as its shim knows it: the sandbox and its containers, persisted as one record (the
//! pod's state file, `layout::STATE_FILE`), and the pure rules that turn what Docker reports
//! into CRI states, statuses and events. The one schema of that file: the shim writes it, the
//! front reads it (`pod_state`, `listing`) through this same type. Nothing here talks to
//! Docker, so it is tested without one.

use std::collections::BTreeMap;

use crate::cri::{
    Container, ContainerConfig, ContainerEventType, ContainerResources, ContainerState,
    ContainerStatus, ImageSpec, LinuxContainerResources, LinuxPodSandboxStatus, Namespace, PodIp,
    PodSandbox, PodSandboxConfig, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use serde::{Deserialize, Serialize};

/// Everything the shim persists about its pod. Every field may be missing (a record of an
/// older shim reads, its new fields empty) and unknown fields are ignored (an older front
/// reads a newer shim's record).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PodRecord {
    pub shim_id: String,
    /// Docker ID of the sandbox container; empty until it is created.
    pub sandbox_id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub ready: bool,
    /// Pod IPs, primary first.
    pub ips: Vec<String>,
    /// The CNI network the sandbox is attached to (its cached attachment is what DEL uses);
    /// empty when it has none or it was torn down.
    #[serde(default)]
    pub network: String,
    pub containers: BTreeMap<String, ContainerRecord>,
    /// The pod was created by cri-dockerd and adopted (see `adopt`): its containers carry
    /// none of dockpod's labels.
    #[serde(default)]
    pub adopted: bool,
    /// An adopted pod's sandbox checkpoint in cri-dockerd's root directory, removed with the
    /// pod; empty for none.
    #[serde(default)]
    pub cri_dockerd_checkpoint: String,
    /// Docker mutations begun and not yet settled, saved before the call: by Docker name for
    /// a create, by container ID for a removal. A shim that starts finds here what a
    /// predecessor was doing when it died (see `reconcile`).
    #[serde(default)]
    pub intents: BTreeMap<String, Intent>,
    /// For a container's create intent, by the same Docker name: the record its outcome will
    /// hold, but for what Docker decides (the ID, the image ID, the creation time). A shim
    /// that finds the intent and Docker's container of that name records the container as
    /// this, so the disk implies a create's outcome once its intent is there, as it does a
    /// removal's. An intent without it (a sandbox's, or one a shim before this field saved)
    /// is a create whose container is removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub creating: BTreeMap<String, ContainerRecord>,
    /// The pod's resources as the kubelet last gave them (UpdatePodSandboxResources, on every
    /// in-place resize): None until it first does.
    #[serde(default)]
    pub sandbox_resources: Option<SandboxResources>,
}

/// A pod's resources: its overhead (RuntimeClass) and its containers' sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxResources {
    pub overhead: Option<LinuxContainerResources>,
    pub resources: Option<LinuxContainerResources>,
}

/// A Docker mutation the shim is making.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Creating the container of this name: settled in the save that records it.
    Create,
    /// Removing this recorded container: settled in the save that forgets it.
    Remove,
}

/// What a starting shim does to bring the record and Docker in step again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Containers labelled with this shim that the record does not hold: a create cut
    /// between Docker's answer and the record. They are removed (the kubelet retries the
    /// create; cri-dockerd removes such a container too).
    pub orphans: Vec<String>,
    /// Of the orphans, those a create intent names: logged as such.
    pub cut_creates: Vec<String>,
    /// Recorded containers whose removal was begun: the removal is finished.
    pub unfinished_removals: Vec<String>,
    /// Containers of a create cut after Docker made them, whose intent was saved with the
    /// record the create would make (`creating`), as (ID, name): recorded as that create
    /// would have recorded them.
    pub finished_creates: Vec<(String, String)>,
}

impl PodRecord {
    /// Whether the sandbox's own fields (all but the containers and the intents) are the same
    /// in both records.
    pub fn same_pod(&self, other: &PodRecord) -> bool {
        // Taken apart field by field, so a field added later is not left out unseen.
        let PodRecord {
            shim_id,
            sandbox_id,
            config,
            runtime_handler,
            created_at,
            ready,
            ips,
            network,
            containers: _,
            adopted,
            cri_dockerd_checkpoint,
            intents: _,
            creating: _,
            sandbox_resources,
        } = self;
        *shim_id == other.shim_id
            && *sandbox_id == other.sandbox_id
            && *config == other.config
            && *runtime_handler == other.runtime_handler
            && *created_at == other.created_at
            && *ready == other.ready
            && *ips == other.ips
            && *network == other.network
            && *adopted == other.adopted
            && *cri_dockerd_checkpoint == other.cri_dockerd_checkpoint
            && *sandbox_resources == other.sandbox_resources
    }

    /// The sandbox's own fields, with no containers and no intents.
    pub fn without_containers(&self) -> PodRecord {
        PodRecord {
            shim_id: self.shim_id.clone(),
            sandbox_id: self.sandbox_id.clone(),
            config: self.config.clone(),
            runtime_handler: self.runtime_handler.clone(),
            created_at: self.created_at,
            ready: self.ready,
            ips: self.ips.clone(),
            network: self.network.clone(),
            containers: Default::default(),
            adopted: self.adopted,
            cri_dockerd_checkpoint: self.cri_dockerd_checkpoint.clone(),
            intents: Default::default(),
            creating: Default::default(),
            sandbox_resources: self.sandbox_resources.clone(),
        }
    }

    /// Compares the record with Docker's containers labelled with this shim, as (ID, name).
    pub fn reconcile(&self, labelled: &[(String, String)]) -> Reconciliation {
        let mut plan = Reconciliation::default();
        for (id, name) in labelled {
            if *id == self.sandbox_id || self.containers.contains_key(id) {
                continue;
            }
            if self.intents.get(name) == Some(&Intent::Create) && self.creating.contains_key(name) {
                plan.finished_creates.push((id.clone(), name.clone()));
                continue;
            }
            plan.orphans.push(id.clone());
            if self.intents.get(name) == Some(&Intent::Create) {
                plan.cut_creates.push(id.clone());
            }
        }
        plan.unfinished_removals = self
            .intents
            .iter()
            .filter(|(id, intent)| **intent == Intent::Remove && self.containers.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        plan
    }
}

/// One application container of the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    pub config: ContainerConfig,
    /// Image ID (`sha256:...`) the container was created from.
    pub image_id: String,
    /// Full path of the container's CRI log file, empty for none.
    pub log_path: String,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub state: i32,
    pub reason: String,
    pub message: String,
    /// Resources as last set (create or UpdateContainerResources).
    pub resources: Option<LinuxContainerResources>,
    /// Every line the container logged is in its CRI log file (it has exited and its log
    /// follower finished).
    #[serde(default)]
    pub log_complete: bool,
    /// The CRI log path is cri-dockerd's symlink to Docker's own log file (an adopted
    /// container): Docker writes it, the shim never does.
    #[serde(default)]
    pub docker_log: bool,
    /// Docker announced an `oom` event for the container. Docker's own `OOMKilled` stays
    /// false when containerd reports the task's exit before its OOM (its flag is taken at
    /// exit), while the event still comes: the event decides, as containerd's CRI does.
    #[serde(default)]
    pub oom_reported: bool,
}

impl ContainerRecord {
    /// The container's CRI name (its metadata's); empty when the kubelet gave none.
    pub fn name(&self) -> &str {
        self.config
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
    }
}

/// A container's lifecycle as Docker reports it, reduced to what the CRI needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Exited,
    /// Docker has no such container any more.
    Gone,
}

/// One observation of a container (from an inspect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub phase: Phase,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub started_at: i64,
    pub finished_at: i64,
    pub error: String,
    /// The image the container was created from, and when it was created; empty and 0 when
    /// Docker has no such container.
    pub image_id: String,
    pub created_at: i64,
}

impl ContainerRecord {
    /// Takes the image ID and creation time Docker reports for the container, in place of
    /// the ones its create recorded without reading the container (the image its name led to,
    /// read beside the create; the time Docker answered). Whether either changed: the caller
    /// saves the record then, though no event says so.
    pub fn settle_identity(&mut self, seen: &Observed) -> bool {
        let mut changed = false;
        if !seen.image_id.is_empty() && seen.image_id != self.image_id {
            self.image_id.clone_from(&seen.image_id);
            changed = true;
        }
        if seen.created_at > 0 && seen.created_at != self.created_at {
            self.created_at = seen.created_at;
            changed = true;
        }
        changed
    }

    /// Applies an observation; returns the CRI events its change of state means, in order. A
    /// container seen created and then already exited did start in between: both its start
    /// and its stop are announced.
    pub fn observe(&mut self, seen: &Observed) -> Vec<ContainerEventType> {
        let before = self.state;
        match seen.phase {
            Phase::Created => self.state = ContainerState::ContainerCreated as i32,
            Phase::Running => {
                self.state = ContainerState::ContainerRunning as i32;
                self.started_at = seen.started_at;
            }
            Phase::Exited => {
                self.state = ContainerState::ContainerExited as i32;
                self.started_at = seen.started_at;
                self.finished_at = seen.finished_at;
                self.exit_code = seen.exit_code;
                (self.reason, self.message) = exit_reason(seen, self.oom_reported);
            }
            // A container removed behind our back has exited as far as anyone can tell.
            Phase::Gone => {
                if self.state != ContainerState::ContainerExited as i32 {
                    self.state = ContainerState::ContainerExited as i32;
                    self.reason = "Error".into();
                    self.message = "container was removed outside of dockpod".into();
                    if self.exit_code == 0 {
                        self.exit_code = -1;
                    }
                }
            }
        }
        let (created, running, exited) = (
            ContainerState::ContainerCreated as i32,
            ContainerState::ContainerRunning as i32,
            ContainerState::ContainerExited as i32,
        );
        match (before, self.state) {
            (b, a) if b == a => vec![],
            (_, a) if a == running => vec![ContainerEventType::ContainerStartedEvent],
            (b, a) if a == exited && b == created && self.started_at > 0 => vec![
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent,
            ],
            (_, a) if a == exited => vec![ContainerEventType::ContainerStoppedEvent],
            _ => vec![],
        }
    }

    /// Docker's `oom` event for the container: an exit recorded already is told OOMKilled
    /// now, a later one will be. Returns whether the record changed.
    pub fn oom_reported(&mut self) -> bool {
        if self.oom_reported {
            return false;
        }
        self.oom_reported = true;
        if self.state == ContainerState::ContainerExited as i32 {
            self.reason = "OOMKilled".into();
        }
        true
    }

    pub fn to_cri(&self, sandbox_id: &str) -> Container {
        container_item(
            &self.id,
            sandbox_id,
            &self.config,
            &self.image_id,
            self.state,
            self.created_at,
        )
    }

    pub fn status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: Some(image_spec(&self.config, &self.image_id)),
            image_ref: self.image_id.clone(),
            image_id: self.image_id.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: self.resources.clone().map(|linux| ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
            user: None,
            stop_signal: self.config.stop_signal,
        }
    }
}

/// Reason and message of an exit, as the kubelet shows them.
fn exit_reason(seen: &Observed, oom_reported: bool) -> (String, String) {
    if seen.oom_killed || oom_reported {
        ("OOMKilled".into(), seen.error.clone())
    } else if seen.exit_code == 0 {
        ("Completed".into(), String::new())
    } else {
        ("Error".into(), seen.error.clone())
    }
}

impl PodRecord {
    pub fn state(&self) -> PodSandboxState {
        if self.ready {
            PodSandboxState::SandboxReady
        } else {
            PodSandboxState::SandboxNotready
        }
    }

    pub fn to_cri(&self) -> PodSandbox {
        sandbox_item(
            &self.sandbox_id,
            &self.config,
            self.ready,
            self.created_at,
            &self.runtime_handler,
        )
    }

    pub fn status(&self) -> PodSandboxStatus {
        let options = self
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let network = self
            .ips
            .split_first()
            .map(|(ip, rest)| PodSandboxNetworkStatus {
                ip: ip.clone(),
                additional_ips: rest.iter().map(|ip| PodIp { ip: ip.clone() }).collect(),
            });
        PodSandboxStatus {
            id: self.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state() as i32,
            created_at: self.created_at,
            network: Some(network.unwrap_or_default()),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(options),
                }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// `namespace/name` of the pod, for logs and `ps`.
    pub fn display_name(&self) -> String {
        self.config
            .metadata
            .as_ref()
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default()
    }

    /// Finds a container by full ID or unique prefix.
    pub fn find(&self, id: &str) -> Option<&ContainerRecord> {
        if let Some(c) = self.containers.get(id) {
            return Some(c);
        }
        let mut matches = self
            .containers
            .range(id.to_string()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some((_, c)), None) => Some(c),
            _ => None,
        }
    }

    pub fn running_containers(&self) -> usize {
        self.containers
            .values()
            .filter(|c| c.state == ContainerState::ContainerRunning as i32)
            .count()
    }

    /// Restarts of the pod's containers as the kubelet counts them: it creates each
    /// container again with the next attempt number, so the newest attempt of a name is how
    /// often that container was restarted.
    pub fn restarts(&self) -> u32 {
        let mut newest: BTreeMap<&str, u32> = BTreeMap::new();
        for c in self.containers.values() {
            let attempt = c.config.metadata.as_ref().map_or(0, |m| m.attempt);
            let seen = newest.entry(c.name()).or_default();
            *seen = (*seen).max(attempt);
        }
        newest.values().sum()
    }
}

/// The sandbox item of a pod.
fn sandbox_item(
    id: &str,
    config: &PodSandboxConfig,
    ready: bool,
    created_at: i64,
    runtime_handler: &str,
) -> PodSandbox {
    let state = if ready {
        PodSandboxState::SandboxReady
    } else {
        PodSandboxState::SandboxNotready
    };
    PodSandbox {
        id: id.to_string(),
        metadata: config.metadata.clone(),
        state: state as i32,
        created_at,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: runtime_handler.to_string(),
    }
}

/// The item of one container of pod `sandbox_id`; its image is the one the request named.
fn container_item(
    id: &str,
    sandbox_id: &str,
    config: &ContainerConfig,
    image_id: &str,
    state: i32,
    created_at: i64,
) -> Container {
    Container {
        id: id.to_string(),
        pod_sandbox_id: sandbox_id.to_string(),
        metadata: config.metadata.clone(),
        image: Some(image_spec(config, image_id)),
        image_ref: image_id.to_string(),
        image_id: image_id.to_string(),
        state,
        created_at,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
    }
}

/// The image a container runs, as the request named it, with `image_ref` the image's ID: the
/// identifier PullImage answered and ImageStatus and ListImages give, whatever registry or
/// tag the request named it by.
fn image_spec(config: &ContainerConfig, image_id: &str) -> ImageSpec {
    ImageSpec {
        image_ref: image_id.to_string(),
        ..config.image.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_count_the_newest_attempt_of_each_container_name() {
        let container = |name: &str, attempt: u32| ContainerRecord {
            config: ContainerConfig {
                metadata: Some(crate::cri::ContainerMetadata {
                    name: name.into(),
                    attempt,
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut pod = PodRecord::default();
        assert_eq!(pod.restarts(), 0);
        // The kubelet keeps the previous attempt's container beside the new one.
        for (id, name, attempt) in [("a", "app", 1), ("b", "app", 2), ("c", "side", 0)] {
            pod.containers.insert(id.into(), container(name, attempt));
        }
        assert_eq!(pod.restarts(), 2);
        pod.containers.insert("d".into(), container("side", 3));
        assert_eq!(pod.restarts(), 5);
    }

    fn seen(phase: Phase, exit_code: i32, oom: bool) -> Observed {
        Observed {
            phase,
            exit_code,
            oom_killed: oom,
            started_at: 10,
            finished_at: if phase == Phase::Exited { 20 } else { 0 },
            error: String::new(),
            image_id: String::new(),
            created_at: 0,
        }
    }

    /// What a create recorded of its container's identity gives way to Docker's, once read;
    /// an observation of a container Docker no longer has changes nothing.
    #[test]
    fn identity_settles_on_what_docker_reports() {
        let mut c = ContainerRecord {
            image_id: "sha256:resolved".into(),
            created_at: 1_000,
            ..Default::default()
        };
        let read = Observed {
            image_id: "sha256:resolved".into(),
            created_at: 990,
            ..seen(Phase::Created, 0, false)
        };
        assert!(c.settle_identity(&read));
        assert_eq!(
            (c.image_id.as_str(), c.created_at),
            ("sha256:resolved", 990)
        );
        assert!(!c.settle_identity(&read), "read again, nothing changes");
        let moved = Observed {
            image_id: "sha256:other".into(),
            ..read.clone()
        };
        assert!(c.settle_identity(&moved), "the tag led elsewhere meanwhile");
        assert_eq!(c.image_id, "sha256:other");
        assert!(!c.settle_identity(&seen(Phase::Gone, 0, false)));
        assert_eq!((c.image_id.as_str(), c.created_at), ("sha256:other", 990));
    }

    #[test]
    fn lifecycle_emits_started_then_stopped_once() {
        let mut c = ContainerRecord::default();
        assert_eq!(c.observe(&seen(Phase::Created, 0, false)), vec![]);
        assert_eq!(
            c.observe(&seen(Phase::Running, 0, false)),
            vec![ContainerEventType::ContainerStartedEvent]
        );
        assert_eq!(c.observe(&seen(Phase::Running, 0, false)), vec![]);
        assert_eq!(
            c.observe(&seen(Phase::Exited, 3, false)),
            vec![ContainerEventType::ContainerStoppedEvent]
        );
        assert_eq!(c.observe(&seen(Phase::Exited, 3, false)), vec![]);
        assert_eq!((c.exit_code, c.reason.as_str()), (3, "Error"));
        assert_eq!((c.started_at, c.finished_at), (10, 20));
    }

    #[test]
    fn a_start_missed_between_observations_is_still_announced() {
        let mut c = ContainerRecord::default();
        c.observe(&seen(Phase::Created, 0, false));
        assert_eq!(
            c.observe(&seen(Phase::Exited, 0, false)),
            vec![
                ContainerEventType::ContainerStartedEvent,
                ContainerEventType::ContainerStoppedEvent
            ]
        );
    }

    #[test]
    fn exit_reasons() {
        let mut c = ContainerRecord::default();
        c.observe(&seen(Phase::Exited, 0, false));
        assert_eq!(c.reason, "Completed");
        let mut c = ContainerRecord::default();
        c.observe(&seen(Phase::Exited, 137, true));
        assert_eq!((c.reason.as_str(), c.exit_code), ("OOMKilled", 137));
        // Docker's flag missed, its `oom` event heard after the exit was first seen.
        let mut c = ContainerRecord::default();
        c.observe(&seen(Phase::Exited, 137, false));
        assert_eq!(c.reason, "Error");
        // The event alone makes it OOMKilled, before any new read of Docker.
        assert!(c.oom_reported());
        assert_eq!(c.reason, "OOMKilled");
        assert!(!c.oom_reported(), "heard twice, changed once");
        assert_eq!(c.observe(&seen(Phase::Exited, 137, false)), vec![]);
        assert_eq!(c.reason, "OOMKilled");
        // Heard while it still runs: its exit, when seen, is OOMKilled.
        let mut c = ContainerRecord::default();
        c.observe(&seen(Phase::Running, 0, false));
        assert!(c.oom_reported());
        assert_eq!(c.reason, "");
        c.observe(&seen(Phase::Exited, 137, false));
        assert_eq!(c.reason, "OOMKilled");
        let mut c = ContainerRecord::default();
        c.observe(&seen(Phase::Running, 0, false));
        assert_eq!(
            c.observe(&seen(Phase::Gone, 0, false)),
            vec![ContainerEventType::ContainerStoppedEvent]
        );
        assert_eq!(c.reason, "Error");
    }

    #[test]
    fn finds_by_unique_prefix() {
        let mut pod = PodRecord::default();
        for id in ["aa11", "aa22", "bb33"] {
            pod.containers.insert(
                id.into(),
                ContainerRecord {
                    id: id.into(),
                    ..Default::default()
                },
            );
        }
        assert_eq!(pod.find("bb").map(|c| c.id.as_str()), Some("bb33"));
        assert!(pod.find("aa").is_none(), "ambiguous prefix");
        assert_eq!(pod.find("aa22").map(|c| c.id.as_str()), Some("aa22"));
    }

    #[test]
    fn reconciliation_records_a_cut_create_whose_intent_holds_its_record() {
        let mut r = PodRecord {
            sandbox_id: "sb".into(),
            ..Default::default()
        };
        let made = ContainerRecord {
            log_path: "/var/log/pods/p/app/1.log".into(),
            ..Default::default()
        };
        r.intents.insert("k8s_app_p_ns_u_1".into(), Intent::Create);
        r.creating.insert("k8s_app_p_ns_u_1".into(), made.clone());
        // Saved by a shim before `creating` existed: its container goes, as it did.
        r.intents.insert("k8s_old_p_ns_u_0".into(), Intent::Create);
        let labelled = [
            ("sb".to_string(), "k8s_POD_p_ns_u_0".to_string()),
            ("made".to_string(), "k8s_app_p_ns_u_1".to_string()),
            ("cut".to_string(), "k8s_old_p_ns_u_0".to_string()),
        ];
        let plan = r.reconcile(&labelled);
        assert_eq!(
            plan.finished_creates,
            vec![("made".to_string(), "k8s_app_p_ns_u_1".to_string())]
        );
        assert_eq!(plan.orphans, vec!["cut"]);
        assert_eq!(plan.cut_creates, vec!["cut"]);
        let json = serde_json::to_string(&r).expect("serialize");
        let back: PodRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.creating.get("k8s_app_p_ns_u_1"), Some(&made));
        // Nothing being created: the field is left out, and a record without it reads.
        r.creating.clear();
        let json = serde_json::to_string(&r).expect("serialize");
        assert!(!json.contains("creating"), "{json}");
        let back: PodRecord = serde_json::from_str(&json).expect("parse");
        assert!(back.creating.is_empty());
    }

    #[test]
    fn reconciliation_removes_what_no_record_holds_and_finishes_cut_removals() {
        let mut r = PodRecord {
            sandbox_id: "sb".into(),
            ..Default::default()
        };
        for id in ["kept", "going"] {
            r.containers.insert(
                id.into(),
                ContainerRecord {
                    id: id.into(),
                    ..Default::default()
                },
            );
        }
        r.intents.insert("k8s_app_p_ns_u_1".into(), Intent::Create);
        r.intents.insert("going".into(), Intent::Remove);
        r.intents.insert("gone-already".into(), Intent::Remove);
        let labelled = [
            ("sb".to_string(), "k8s_POD_p_ns_u_0".to_string()),
            ("kept".to_string(), "k8s_app_p_ns_u_0".to_string()),
            ("cut".to_string(), "k8s_app_p_ns_u_1".to_string()),
            ("stray".to_string(), "k8s_other_p_ns_u_0".to_string()),
        ];
        let plan = r.reconcile(&labelled);
        assert_eq!(plan.orphans, vec!["cut", "stray"]);
        assert_eq!(plan.cut_creates, vec!["cut"]);
        assert_eq!(plan.unfinished_removals, vec!["going"]);
        let json = serde_json::to_string(&r).expect("serialize");
        let back: PodRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.intents, r.intents);
    }
}
