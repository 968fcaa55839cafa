//! SPDY/3.1, server side, as the Kubernetes streaming clients speak it: frames (`frame`),
//! header blocks compressed with zlib and the SPDY/3 dictionary (`header`), flow control both
//! ways (`flow`), and the served session with its reader and writer tasks (`session`).
//!
//! Written here: the Rust SPDY crates are client-only or unmaintained, and the subset the
//! Kubernetes protocols use is small.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

mod flow;
mod frame;
mod header;
mod session;

pub use flow::INITIAL_WINDOW;
pub use frame::{
    control_frame, data_header, goaway_frame, parse_head, read_frame, reset_frame, window_frame,
    Control, Frame, Head, SpdyError, CANCEL, FLAG_FIN, FLOW_CONTROL_ERROR, GOAWAY, GOAWAY_OK,
    GOAWAY_PROTOCOL_ERROR, HEADERS, MAX_FRAME, PING, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM,
    SETTINGS, SYN_REPLY, SYN_STREAM, WINDOW_UPDATE,
};
pub use header::{
    HeaderDecoder, HeaderEncoder, Headers, DICTIONARY, MAX_HEADERS, MAX_HEADER_BLOCK,
};
pub use session::{serve, Sender, Session, Stream, MAX_DATA};
