//! Classifies lapin's errors into Agentry's [`Error`] classes where they
//! arise: a missing queue is `NotFound`, a declaration that contradicts the
//! broker's state is permanent, anything about the connection is transient.

use agentry_core::Error;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

/// `what` failed with `error`.
pub(crate) fn classify(what: &str, error: &lapin::Error) -> Error {
    if let lapin::ErrorKind::ProtocolError(amqp) = error.kind() {
        let message = amqp.get_message();
        match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                return Error::not_found(format!("{what}: {message}"));
            }
            AMQPErrorKind::Soft(
                AMQPSoftError::PRECONDITIONFAILED
                | AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::RESOURCELOCKED
                | AMQPSoftError::CONTENTTOOLARGE,
            ) => {
                return Error::permanent(format!("{what}: {message}"));
            }
            _ => {}
        }
    }
    Error::transient(format!("{what}: {error}"))
}

/// The error of an operation attempted after [`crate::AmqpBus::close`] or
/// while the bus is being dropped.
pub(crate) fn closed() -> Error {
    Error::transient("the AMQP bus is closed")
}
