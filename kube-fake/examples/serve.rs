//! Runs a fake API server until Ctrl-C, printing its URL: for poking at it with kubectl or curl
//! (`kubectl --server URL get nodes`).

use vigil_kube_fake::FakeApiServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = FakeApiServer::start().await?;
    println!("{}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
