//! The shim's one error type and its one mapping to gRPC status codes; every variant names the
//! object it is about.

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
    #[error("{0}")]
    DeadlineExceeded(String),
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

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Io { .. } => Code::Internal,
            Error::Docker { source, .. } => match source {
                DockerError::DockerResponseServerError { status_code, .. } => match status_code {
                    400 => Code::InvalidArgument,
                    404 => Code::NotFound,
                    409 => Code::FailedPrecondition,
                    _ => Code::Internal,
                },
                DockerError::RequestTimeoutError => Code::DeadlineExceeded,
                DockerError::SocketNotFoundError(_)
                | DockerError::HyperResponseError { .. }
                | DockerError::IOError { .. } => Code::Unavailable,
                _ => Code::Internal,
            },
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

/// Whether Docker answered "no such object".
pub fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Whether Docker answered that the object is already in the requested state (304).
pub fn is_not_modified(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}
