//! The CRI's streaming lists (StreamPodSandboxes, StreamContainers, StreamContainerStats,
//! StreamPodSandboxStats, StreamPodSandboxMetrics, StreamImages): the unary list's items, sent
//! in chunks of at most `CHUNK_BYTES` encoded each, so a node with thousands of containers
//! never meets the gRPC message limit (4 MiB by default in the kubelet's client).

use std::pin::Pin;

use prost::Message;
use tonic::Status;

/// Encoded bytes of items in one chunk; an item larger than this travels alone.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A streaming list's answer.
pub type Chunks<R> = Pin<Box<dyn tokio_stream::Stream<Item = Result<R, Status>> + Send>>;

/// `items` cut into chunks of at most `CHUNK_BYTES`, in order, each wrapped by `wrap`. An
/// empty list is one empty chunk, so a client that waits for a first message gets one.
pub fn split<T: Message, R>(items: Vec<T>, wrap: impl Fn(Vec<T>) -> R) -> Vec<R> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for item in items {
        // The item's own length prefix and tag: at most 11 bytes more.
        let size = item.encoded_len() + 11;
        if !chunk.is_empty() && bytes + size > CHUNK_BYTES {
            chunks.push(wrap(std::mem::take(&mut chunk)));
            bytes = 0;
        }
        bytes += size;
        chunk.push(item);
    }
    if !chunk.is_empty() || chunks.is_empty() {
        chunks.push(wrap(chunk));
    }
    chunks
}

/// `split`, as the stream a tonic service answers.
pub fn stream<T: Message, R: Send + 'static>(
    items: Vec<T>,
    wrap: impl Fn(Vec<T>) -> R,
) -> Chunks<R> {
    Box::pin(tokio_stream::iter(split(items, wrap).into_iter().map(Ok)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{Container, ContainerMetadata, StreamContainersResponse};

    #[test]
    fn chunks_keep_every_item_in_order_and_stay_under_the_bound() {
        let containers: Vec<Container> = (0..40_000)
            .map(|i| Container {
                id: format!("{i:064}"),
                metadata: Some(ContainerMetadata {
                    name: format!("container-{i}"),
                    attempt: 0,
                }),
                labels: [("app".to_string(), "x".repeat(100))].into(),
                ..Default::default()
            })
            .collect();
        let whole: usize = containers.iter().map(Message::encoded_len).sum();
        assert!(
            whole > 4 * CHUNK_BYTES,
            "the test list must need several chunks"
        );
        let chunks = split(containers.clone(), |containers| StreamContainersResponse {
            containers,
        });
        assert!(chunks.len() > 4);
        for chunk in &chunks {
            assert!(
                chunk.encoded_len() <= CHUNK_BYTES,
                "{}",
                chunk.encoded_len()
            );
        }
        let back: Vec<Container> = chunks.into_iter().flat_map(|c| c.containers).collect();
        assert_eq!(back, containers);
    }

    #[test]
    fn an_empty_list_is_one_empty_chunk() {
        let chunks = split(Vec::<Container>::new(), |containers| {
            StreamContainersResponse { containers }
        });
        assert_eq!(chunks, vec![StreamContainersResponse::default()]);
    }
}
