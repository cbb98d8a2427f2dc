//! Plain TCP forwarding: the lab's stand-ins for what an EC2 instance
//! reaches over the network (IMDS at 169.254.169.254, the control plane at
//! its URL, the AWS endpoints), carried over the guest's tap to the host:
//! the guest binds the listeners inside each instance's namespace (see
//! `guest.rs`), the host forwards on to the emulators and the control plane.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// One `LISTEN=TARGET` pair.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

impl std::str::FromStr for Mapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (l, t) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not LISTEN=TARGET"))?;
        Ok(Mapping {
            listen: l
                .parse()
                .map_err(|e| format!("listen address '{l}': {e}"))?,
            target: t
                .parse()
                .map_err(|e| format!("target address '{t}': {e}"))?,
        })
    }
}

/// Accepts on `listener` and splices every connection to `connect()`.
pub async fn serve<F, Fut>(listener: TcpListener, connect: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>> + Send,
{
    let connect = std::sync::Arc::new(connect);
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "forward: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let connect = connect.clone();
        tokio::spawn(async move {
            match connect().await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!(%peer, error = %e, "forward: cannot reach the target"),
            }
        });
    }
}
