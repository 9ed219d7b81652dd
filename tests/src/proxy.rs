//! A TCP proxy on loopback that can cut every connection through it, to break an agent's
//! stream without touching either process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CuttingProxy {
    pub addr: SocketAddr,
    upstream: Arc<std::sync::Mutex<SocketAddr>>,
    cut: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let target = Arc::new(std::sync::Mutex::new(upstream));
        let task = {
            let target = Arc::clone(&target);
            let cut = cut.clone();
            let accepted = Arc::clone(&accepted);
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let mut cuts = cut.subscribe();
                    cuts.mark_unchanged();
                    let upstream = *target.lock().unwrap();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cuts.changed() => {}
                        }
                        // Dropping both sockets resets the connection mid-stream.
                    });
                }
            })
        };
        Self {
            addr,
            upstream: target,
            cut,
            accepted,
            task,
        }
    }

    /// Closes every connection open through the proxy now (new ones are accepted).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Sends new connections to `upstream` (like a Service whose ready endpoint changed).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
