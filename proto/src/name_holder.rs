//! How a shim tells the front that the Docker name its RunPodSandbox needs belongs to another
//! pod of this instance: the answer is ALREADY_EXISTS and carries that pod's sandbox and shim
//! in its metadata, so the front can ask the pod that holds the name (a retry whose first run
//! made it answers with it) instead of parsing a message.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

const SANDBOX: &str = "dockpod-name-holder-sandbox";
const SHIM: &str = "dockpod-name-holder-shim";

/// The pod that holds a name: its sandbox container and its shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameHolder {
    pub sandbox_id: String,
    pub shim_id: String,
}

impl NameHolder {
    /// An ALREADY_EXISTS status saying `message` and naming this holder.
    pub fn status(&self, message: String) -> Status {
        let mut status = Status::already_exists(message);
        if let (Ok(sandbox), Ok(shim)) = (
            MetadataValue::try_from(self.sandbox_id.as_str()),
            MetadataValue::try_from(self.shim_id.as_str()),
        ) {
            status.metadata_mut().insert(SANDBOX, sandbox);
            status.metadata_mut().insert(SHIM, shim);
        }
        status
    }

    /// The holder a status names, if it is such an answer.
    pub fn of(status: &Status) -> Option<NameHolder> {
        if status.code() != Code::AlreadyExists {
            return None;
        }
        let value = |key| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Some(NameHolder {
            sandbox_id: value(SANDBOX)?,
            shim_id: value(SHIM)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_survives_its_status_and_nothing_else_names_one() {
        let holder = NameHolder {
            sandbox_id: "abc".into(),
            shim_id: "0123456789abcdef".into(),
        };
        let status = holder.status("taken".into());
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(NameHolder::of(&status), Some(holder));
        assert_eq!(NameHolder::of(&Status::already_exists("taken")), None);
        let mut other = Status::internal("x");
        other
            .metadata_mut()
            .insert(SANDBOX, MetadataValue::from_static("abc"));
        other
            .metadata_mut()
            .insert(SHIM, MetadataValue::from_static("s"));
        assert_eq!(NameHolder::of(&other), None);
    }
}
