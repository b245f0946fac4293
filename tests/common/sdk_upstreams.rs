//! The MCP servers of the other official SDKs as upstreams: the TypeScript
//! SDK on Express and the Python SDK, each run as a child process from the
//! packages `scripts/test` installs (pinned) into a cache directory.

use super::BoxError;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new("node")
        .arg(&script)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run node {script}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("listening ") {
                let _ = tx.send(port.trim().to_owned());
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| "the TypeScript server did not start")?;
    Ok(External { addr: format!("127.0.0.1:{port}").parse()?, child })
}

/// The Python SDK's server (`tests/upstreams/python`), with flag `--json`.
pub fn start_python_upstream(flags: &[&str]) -> Result<External, BoxError> {
    let python = installed("TOOLGATE_TEST_PYTHON")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstreams/python/server.py");
    let child = Command::new(&python)
        .arg(script)
        .arg(port.to_string())
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let server = External { addr: format!("127.0.0.1:{port}").parse()?, child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(server.addr).is_err() {
        if Instant::now() > deadline {
            return Err("the Python server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}
