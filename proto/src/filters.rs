//! The CRI's list filters (ID prefix, state, label selector), applied the same way by a shim
//! to its own pod and by the front to what it reads from Docker when a shim does not answer.

use std::collections::HashMap;

use crate::cri::{Container, ContainerFilter, PodSandbox, PodSandboxFilter};

/// Whether `labels` carry every key and value of `selector`.
pub fn selects(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn pod_matches(pod: &PodSandbox, filter: &PodSandboxFilter) -> bool {
    (filter.id.is_empty() || pod.id.starts_with(&filter.id))
        && filter.state.as_ref().is_none_or(|s| s.state == pod.state)
        && selects(&filter.label_selector, &pod.labels)
}

pub fn container_matches(c: &Container, filter: &ContainerFilter) -> bool {
    (filter.id.is_empty() || c.id.starts_with(&filter.id))
        && (filter.pod_sandbox_id.is_empty()
            || c.pod_sandbox_id.starts_with(&filter.pod_sandbox_id))
        && filter.state.as_ref().is_none_or(|s| s.state == c.state)
        && selects(&filter.label_selector, &c.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ContainerState, ContainerStateValue, PodSandboxState, PodSandboxStateValue};

    #[test]
    fn container_filters() {
        let c = Container {
            id: "abcdef".into(),
            pod_sandbox_id: "123".into(),
            state: ContainerState::ContainerRunning as i32,
            labels: HashMap::from([("app".into(), "web".into())]),
            ..Default::default()
        };
        let mut f = ContainerFilter {
            id: "abc".into(),
            pod_sandbox_id: "12".into(),
            ..Default::default()
        };
        assert!(container_matches(&c, &f));
        f.label_selector.insert("app".into(), "db".into());
        assert!(!container_matches(&c, &f));
        f.label_selector.insert("app".into(), "web".into());
        f.state = Some(ContainerStateValue {
            state: ContainerState::ContainerExited as i32,
        });
        assert!(!container_matches(&c, &f));
        f.state = None;
        f.pod_sandbox_id = "9".into();
        assert!(!container_matches(&c, &f));
    }

    #[test]
    fn pod_filters() {
        let p = PodSandbox {
            id: "123456".into(),
            state: PodSandboxState::SandboxReady as i32,
            ..Default::default()
        };
        let mut f = PodSandboxFilter {
            id: "1234".into(),
            ..Default::default()
        };
        assert!(pod_matches(&p, &f));
        f.state = Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxNotready as i32,
        });
        assert!(!pod_matches(&p, &f));
    }
}
