//! A whole SPDY/3.1 session driven by a client's bytes: SYN_STREAM, SETTINGS, WINDOW_UPDATE,
//! PING, RST_STREAM, GOAWAY and data in any order, through the session's reader, writer and
//! flow control, with every stream the session hands out read to its end.
//!
//! Promises checked: nothing panics in any of the session's tasks (libFuzzer's panic hook
//! aborts on a panic in any thread or task); the session ends once the client has left.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pod_shim::streaming::spdy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut session = spdy::serve(server, Duration::from_secs(30));
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let replies = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while matches!(from_server.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let send = async move {
            let _ = to_server.write_all(data).await;
            let _ = to_server.shutdown().await;
        };
        let streams = async {
            let mut readers = Vec::new();
            while let Some(mut stream) = session.streams.recv().await {
                readers.push(tokio::spawn(async move {
                    if let Some(mut data) = stream.take_data() {
                        while data.recv().await.is_some() {}
                    }
                }));
            }
            for reader in readers {
                let _ = reader.await;
            }
        };
        // Generous: a session whose client has gone ends at once; one that waits for a
        // client that left never does.
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(send, streams, &mut session.done)
        })
        .await;
        assert!(
            ended.is_ok(),
            "the session did not end after the client left"
        );
        replies.abort();
    });
});
