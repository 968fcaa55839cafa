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

    /// Docker does not answer.
    #[error("{0}")]
    Unavailable(String),
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
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Io { .. } => Code::Internal,
            Error::Docker { source, .. } => dockpod_proto::docker_errors::code(source),
        }
    }
}

impl From<dockpod_proto::validate::Invalid> for Error {
    fn from(e: dockpod_proto::validate::Invalid) -> Self {
        Error::InvalidArgument(e.0)
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
    fn status_names_the_object_and_keeps_dockers_code() {
        let e = Error::Docker {
            context: "inspecting image x".into(),
            source: DockerError::DockerResponseServerError {
                status_code: 404,
                message: "m".into(),
            },
        };
        let status = Status::from(e);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "inspecting image x: Docker responded with status code 404: m"
        );
    }
}
