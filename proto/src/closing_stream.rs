//! A broadcast channel's messages as a stream that ends when its server stops serving: the
//! event streams of `GetContainerEvents`, in the front and in each shim. A plain `take_until`
//! would drop what was sent just before the stop (a removed pod's last events above all);
//! this stream delivers every message sent before the stop is seen, then ends.

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};

/// The messages of `receiver` until `closing` turns true, then those already sent, then the
/// end. A receiver that falls behind skips what it lost and goes on.
pub fn until_closing<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
    closing: watch::Receiver<bool>,
) -> impl tokio_stream::Stream<Item = T> {
    futures_util::stream::unfold(
        (receiver, closing, false),
        |(mut receiver, mut closing, mut draining)| async move {
            loop {
                if draining {
                    return match receiver.try_recv() {
                        Ok(message) => Some((message, (receiver, closing, true))),
                        Err(TryRecvError::Lagged(_)) => continue,
                        Err(_) => None,
                    };
                }
                let received = tokio::select! {
                    biased;
                    received = receiver.recv() => received,
                    _ = closing.wait_for(|closing| *closing) => {
                        draining = true;
                        continue;
                    }
                };
                match received {
                    Ok(message) => return Some((message, (receiver, closing, false))),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn what_was_sent_before_the_stop_is_delivered_then_the_stream_ends() {
        let (tx, rx) = broadcast::channel(8);
        let (stop, closing) = watch::channel(false);
        let stream = until_closing(rx, closing);
        for i in 0..3 {
            tx.send(i).expect("send");
        }
        stop.send_replace(true);
        let got: Vec<i32> = stream.collect().await;
        assert_eq!(got, [0, 1, 2]);
    }
}
