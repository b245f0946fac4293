//! The MCP servers of the other official SDKs as upstreams: the TypeScript
//! SDK on Express and the Python SDK, each run as a child process from the
//! packages `scripts/test` installs (pinned) into a cache directory.

use super::BoxError;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process, killed when dropped.
pub struct External {
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(variable: &str) -> Result<String, BoxError> {
    std::env::var(variable).map_err(|_| {
        format!(
            "{variable} is not set: run ./scripts/test, which installs the MCP SDK servers these tests need"
        )
        .into()
    })
}

/// The TypeScript SDK's server on Express (`tests/upstreams/typescript`),
/// with flags `--json` and `--compression`.
pub fn start_typescript_upstream(flags: &[&str]) -> Result<External, BoxError> {
    let script = installed("TOOLGATE_TEST_TYPESCRIPT_SERVER")?;
    let mut command = Command::new("node");
    command.arg(&script).args(flags);
    start(command, "the TypeScript server")
}

/// The Python SDK's server (`tests/upstreams/python`), with flag `--json`.
pub fn start_python_upstream(flags: &[&str]) -> Result<External, BoxError> {
    let python = installed("TOOLGATE_TEST_PYTHON")?;
    let mut command = Command::new(python);
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstreams/python/server.py")).args(flags);
    start(command, "the Python server")
}

/// Runs a server that binds a port of the system's choosing and prints
/// `listening PORT` once it accepts connections; a port chosen here and
/// handed over could be taken by another test before the server binds it.
fn start(mut command: Command, name: &str) -> Result<External, BoxError> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {name} ({command:?}): {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("listening ") {
                let _ = tx.send(port.trim().to_owned());
            }
        }
    });
    // Owned from here, so the process is killed on every early return.
    let mut server = External { addr: SocketAddr::from(([127, 0, 0, 1], 0)), child };
    let port = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| format!("{name} did not start"))?;
    server.addr.set_port(port.parse()?);
    Ok(server)
}
