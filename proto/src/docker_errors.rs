//! What a Docker Engine error means in gRPC terms, decided in one place for the front and the
//! shims: Docker's HTTP status where it answered, and for registry failures (which dockerd
//! reports as text only, in a pull's progress stream or a 500 answer) the registry's words.

use bollard::errors::Error;
use tonic::Code;

/// The HTTP status Docker answered with, if the error is an answer at all.
pub fn status(e: &Error) -> Option<u16> {
    match e {
        Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker answered "no such object".
pub fn is_not_found(e: &Error) -> bool {
    status(e) == Some(404)
}

/// An answer about one object, with Docker's "no such object" as `None`: the shape of every
/// inspect whose caller treats absence as an answer, not a failure.
pub fn optional<T>(answer: Result<T, Error>) -> Result<Option<T>, Error> {
    match answer {
        Ok(found) => Ok(Some(found)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A container removal that failed only because the container is gone already, or because
/// Docker is removing it for another request (it answers 409 then).
pub fn is_removed_already(e: &Error) -> bool {
    match e {
        Error::DockerResponseServerError {
            status_code: 409,
            message,
        } => message.contains("already in progress"),
        _ => is_not_found(e),
    }
}

/// Docker answered that the object is already in the requested state.
pub fn is_not_modified(e: &Error) -> bool {
    status(e) == Some(304)
}

/// The gRPC code a Docker error is reported with.
pub fn code(e: &Error) -> Code {
    match e {
        Error::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::FailedPrecondition,
            _ => match registry_code(message) {
                Code::Unknown => Code::Internal,
                code => code,
            },
        },
        Error::DockerStreamError { error } => registry_code(error),
        Error::RequestTimeoutError => Code::DeadlineExceeded,
        Error::SocketNotFoundError(_)
        | Error::HyperResponseError { .. }
        | Error::HyperLegacyError { .. }
        | Error::IOError { .. } => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The phrasings of dockerd (20.10 and later) and the registry API for missing or refused
/// credentials and for an image that does not exist. A bare "not found" is not one of them:
/// dockerd answers 500 with it for failures of its own (containerd's "task ... not found"
/// while it kills a container), and reporting those as NotFound tells a caller that retries a
/// removal that the thing is gone when it is not.
fn registry_code(message: &str) -> Code {
    let m = message.to_ascii_lowercase();
    if m.contains("unauthorized")
        || m.contains("authentication required")
        || m.contains("no basic auth credentials")
    {
        Code::Unauthenticated
    } else if m.contains("manifest unknown")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status_code: u16, message: &str) -> Error {
        Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn answers_map_to_codes() {
        assert_eq!(code(&answer(404, "m")), Code::NotFound);
        assert_eq!(code(&answer(400, "m")), Code::InvalidArgument);
        assert_eq!(code(&answer(409, "m")), Code::FailedPrecondition);
        assert_eq!(code(&answer(500, "m")), Code::Internal);
        let refused = answer(
            500,
            "Head \"http://127.0.0.1:5000/v2/x/manifests/1\": no basic auth credentials",
        );
        assert_eq!(code(&refused), Code::Unauthenticated);
        let missing = answer(500, "repository 127.0.0.1:5000/x not found: name unknown");
        assert_eq!(code(&missing), Code::NotFound);
        let internal = answer(500, "Cannot kill container: c: task c not found: not found");
        assert_eq!(code(&internal), Code::Internal);
        assert!(is_not_found(&answer(404, "")));
        assert_eq!(optional(Ok::<_, Error>(1)).ok(), Some(Some(1)));
        assert_eq!(optional::<u8>(Err(answer(404, "no such"))).ok(), Some(None));
        assert!(optional::<u8>(Err(answer(500, "m"))).is_err());
        assert!(is_not_modified(&answer(304, "")));
    }

    #[test]
    fn pull_stream_errors_are_classified() {
        let stream = |m: &str| code(&Error::DockerStreamError { error: m.into() });
        assert_eq!(
            stream("manifest for 127.0.0.1:5000/x:y not found: manifest unknown"),
            Code::NotFound
        );
        assert_eq!(
            stream("unauthorized: authentication required"),
            Code::Unauthenticated
        );
        assert_eq!(stream("disk full"), Code::Unknown);
    }
}
