//! The shim's one error type and its one mapping to gRPC status codes; every variant names the
//! object it is about.

use bollard::errors::Error as DockerError;
use tonic::{Code, Status};

pub use dockpod_proto::docker_errors::{is_not_found, is_not_modified};

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
    /// Pod network setup or teardown failed (a CNI plugin's error, usually).
    #[error("{0}")]
    Network(String),
    #[error("{context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: DockerError,
    },
    /// The Docker name this call needs is another pod's of this instance.
    #[error("{message}")]
    NameHeld {
        message: String,
        holder: dockpod_proto::name_holder::NameHolder,
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

    /// Docker's 409: a container of that name exists already.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Docker {
                source: DockerError::DockerResponseServerError {
                    status_code: 409,
                    ..
                },
                ..
            }
        )
    }

    /// Docker's 404 for an image it does not hold (a create's).
    pub fn is_missing_image(&self) -> bool {
        matches!(
            self,
            Error::Docker {
                source: DockerError::DockerResponseServerError {
                    status_code: 404,
                    message,
                },
                ..
            } if message.contains("No such image")
        )
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Network(_) => Code::Unknown,
            Error::NameHeld { .. } => Code::AlreadyExists,
            // A full disk is the node's to fix, not a bug: said as such, with the path.
            Error::Io { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
            {
                Code::ResourceExhausted
            }
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
        match e {
            Error::NameHeld { message, holder } => holder.status(message),
            e => Status::new(e.code(), e.to_string()),
        }
    }
}
