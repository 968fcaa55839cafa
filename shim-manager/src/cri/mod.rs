//! The CRI services the kubelet talks to: `runtime.v1.RuntimeService` and
//! `runtime.v1.ImageService`.

pub mod image;
pub mod runtime;
