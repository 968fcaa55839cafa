//! The front's one error type, and its one mapping to gRPC status codes. Every variant names
//! the object it is about, so the kubelet's log says what failed and on what.

use bollard::errors::Error as DockerError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    FailedPrecondition(String),

    #[error("{0} is not implemented by dockpod yet")]
    Unimplemented(&'static str),

    #[error("{context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: DockerError,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0} timed out")]
    DeadlineExceeded(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn docker(context: impl Into<String>) -> impl FnOnce(DockerError) -> Error {
        let context = context.into();
        move |source| Error::Docker { context, source }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Io { .. } => Code::Internal,
            Error::Docker { source, .. } => docker_code(source),
        }
    }
}

/// HTTP status Docker answered with, if the error is an answer at all.
pub fn docker_status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn docker_code(e: &DockerError) -> Code {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::FailedPrecondition,
            // dockerd answers 500 for a registry's refusal too; its text says which.
            _ => match registry_error_code(message) {
                Code::Unknown => Code::Internal,
                code => code,
            },
        },
        DockerError::DockerStreamError { error } => registry_error_code(error),
        DockerError::RequestTimeoutError => Code::DeadlineExceeded,
        DockerError::SocketNotFoundError(_)
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. } => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// Docker reports registry failures as text only (in the pull's progress stream, or in a 500
/// answer); these are the phrasings of dockerd (20.10 and later) and the registry API for an
/// image that does not exist and for missing or refused credentials.
fn registry_error_code(message: &str) -> Code {
    let m = message.to_ascii_lowercase();
    if m.contains("unauthorized")
        || m.contains("authentication required")
        || m.contains("no basic auth credentials")
    {
        Code::Unauthenticated
    } else if m.contains("manifest unknown")
        || m.contains("not found")
        || m.contains("repository does not exist")
        || m.contains("name unknown")
    {
        Code::NotFound
    } else if m.contains("denied") {
        Code::PermissionDenied
    } else {
        Code::Unknown
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_answers_map_to_grpc_codes() {
        let answer = |status_code| Error::Docker {
            context: "inspecting image x".into(),
            source: DockerError::DockerResponseServerError {
                status_code,
                message: "m".into(),
            },
        };
        assert_eq!(answer(404).code(), Code::NotFound);
        assert_eq!(answer(400).code(), Code::InvalidArgument);
        assert_eq!(answer(409).code(), Code::FailedPrecondition);
        assert_eq!(answer(500).code(), Code::Internal);
        let refused = Error::Docker {
            context: "pulling image x".into(),
            source: DockerError::DockerResponseServerError {
                status_code: 500,
                message:
                    "Head \"http://127.0.0.1:5000/v2/x/manifests/1\": no basic auth credentials"
                        .into(),
            },
        };
        assert_eq!(refused.code(), Code::Unauthenticated);
        let status = Status::from(answer(404));
        assert_eq!(
            status.message(),
            "inspecting image x: Docker responded with status code 404: m"
        );
    }

    #[test]
    fn pull_stream_errors_are_classified() {
        assert_eq!(
            registry_error_code("manifest for 127.0.0.1:5000/x:y not found: manifest unknown"),
            Code::NotFound
        );
        assert_eq!(
            registry_error_code("Head \"http://127.0.0.1:5000/v2/x/manifests/1\": no basic auth credentials; unauthorized: authentication required"),
            Code::Unauthenticated
        );
        assert_eq!(registry_error_code("disk full"), Code::Unknown);
    }
}
