//! The accept loop shared by extdrop's small HTTP servers (the metrics endpoint and the
//! loopback stand-in): one task per connection, a pause when accepting fails, and every
//! connection aborted once told to stop, so that no request outlives its server.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Accepts connections on `listener` and serves each with `serve` until `stop` resolves,
/// refusing new ones while `max_connections` are open. `name` is for the log.
pub async fn accept_until<F, Fut>(
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    max_connections: usize,
    name: &'static str,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= max_connections {
                        tracing::debug!(%peer, server = name, "connection refused: too many open");
                        continue;
                    }
                    connections.spawn(serve(stream));
                }
                Err(error) => {
                    // Usually descriptor exhaustion; pausing avoids a busy loop while it lasts.
                    tracing::warn!(%error, server = name, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    tracing::debug!(server = name, "stopped");
}
