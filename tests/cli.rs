//! The `toolgate` command line: `check`, `--version`, and `demo`.

mod common;

use common::*;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

fn toolgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate")).args(args).output().expect("run toolgate")
}

#[test]
fn version_is_printed() {
    let out = toolgate(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("toolgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_every_example_policy() -> TestResult {
    // A copy, with the files the mTLS example names made here (no key is
    // shipped in examples/).
    let source = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("secrets"))?;
    let ca = common::tls::Ca::new("example CA");
    ca.server(&["mcp.internal.example.com"]).write(&dir.join("certs"));
    std::fs::rename(dir.join("certs/cert.pem"), dir.join("certs/tls.crt"))?;
    std::fs::rename(dir.join("certs/key.pem"), dir.join("certs/tls.key"))?;
    std::fs::write(dir.join("certs/ca.crt"), ca.pem())?;
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(source)?.chain(std::fs::read_dir(source.join("secrets"))?) {
        let path = entry?.path();
        let relative = path.strip_prefix(source)?;
        if path.is_file() {
            std::fs::copy(&path, dir.join(relative))?;
        }
        let name = relative.to_string_lossy().into_owned();
        // values-*.yaml are the Helm chart's values, rendered by tests/chart.rs.
        if name.ends_with(".yaml") && !name.starts_with("values-") {
            checked.push(name);
        }
    }
    for name in &checked {
        let out = toolgate(&["check", &dir.join(name).to_string_lossy()]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    checked.sort();
    assert_eq!(checked, ["demo.yaml", "jwt-teams.yaml", "minimal.yaml", "mtls.yaml", "signatures.yaml"]);
    Ok(())
}

#[test]
fn check_reports_file_line_and_column() {
    let dir = scratch_dir();
    let vs = "virtual_servers: { default: { tools: { allow: ['*'] } } }\n";
    let cases = [
        ("version: 1\nupstream:\n  url: http://127.0.0.1:1/mcp\n  tmeout: 5s\n", ":4:3: ", "tmeout"),
        (
            &*format!(
                "version: 1\nupstream: {{ url: http://127.0.0.1:1/mcp }}\ntransport:\n  allowed_origins: ['null']\n{vs}"
            ),
            ":4:",
            "`null` would admit sandboxed frames",
        ),
        (
            "version: 1\nupstream: { url: http://127.0.0.1:1/mcp }\nlisten: { proxy: 'not an address' }\n",
            ":3:",
            "address",
        ),
        (
            "version: 1\nupstream: { url: http://127.0.0.1:1/mcp }\nupstream: { url: http://127.0.0.1:2/mcp }\n",
            ":3:",
            "uplicate",
        ),
        ("version: 1\nupstream: [\n", ":", ""),
    ];
    for (i, (text, location, word)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&path, text).expect("write");
        let out = toolgate(&["check", &path.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(stderr.starts_with(&format!("{}{location}", path.display())), "{stderr}");
        assert!(stderr.contains(word), "{stderr}");
    }
    let out = toolgate(&["check", "/no/such/policy.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn run_refuses_a_broken_policy_with_its_location() {
    let dir = scratch_dir();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, "version: 1\nupstream: { url: ftp://x/mcp }\nvirtual_servers: { default: {} }\n")
        .expect("write");
    let out = toolgate(&["run", "--config", &path.to_string_lossy()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:2:", path.display())), "{stderr}");
}

#[tokio::test]
async fn demo_serves_its_sample_server_behind_toolgate() -> TestResult {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let endpoint = loop {
        let line = rx.recv_timeout(Duration::from_secs(20))?;
        if let Some(rest) = line.trim().strip_prefix("MCP endpoint:") {
            break rest.split_whitespace().next().unwrap_or_default().to_owned();
        }
    };
    let addr: std::net::SocketAddr =
        endpoint.trim_start_matches("http://").trim_end_matches("/mcp").parse()?;

    let listed = post(
        addr,
        &[("mcp-protocol-version", "2025-06-18")],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(listed.status, http::StatusCode::OK, "{}", listed.text());
    let names: Vec<String> = listed.json()["result"]["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert!(names.contains(&"echo".to_owned()) && names.contains(&"countdown".to_owned()), "{names:?}");
    let evil =
        post(addr, &[("origin", "http://localhost.evil.com")], r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .await;
    assert_eq!(evil.status, http::StatusCode::FORBIDDEN);

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn explain_names_the_deciding_pattern_and_rule() {
    let dir = scratch_dir();
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        "version: 1\nupstream: { url: http://127.0.0.1:1/mcp }\nidentity:\n  resource_metadata: { base_url: 'https://mcp.example.com' }\n  jwt:\n    - { issuer: 'https://id.example.com', algorithms: [HS256], secret: 'MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=' }\nvirtual_servers:\n  ops:\n    tools: { allow: [status], deny: ['*_admin'] }\n    rules:\n      - when: { groups: [sre] }\n        tools: { allow: ['restart_*'] }\n",
    )
    .expect("write");
    let file = path.to_string_lossy().into_owned();
    let run = |extra: &[&str]| {
        let mut args = vec!["explain", "--config", &file, "--server", "ops"];
        args.extend_from_slice(extra);
        let out = toolgate(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--tool", "restart_db", "--subject", "alice", "--group", "sre"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "tool `restart_db` on virtual server `ops` for jwt `alice` of `https://id.example.com` (groups: sre): allowed by `restart_*` (rule 1 allow)"
    );
    let (code, out, _) = run(&["--tool", "restart_db", "--subject", "alice"]);
    assert_eq!(code, Some(1));
    assert!(out.ends_with("denied: no allow pattern matches it (what is not allowed is denied)"), "{out}");
    let (code, out, _) = run(&["--tool", "User_Admin", "--subject", "alice", "--group", "sre"]);
    assert_eq!(code, Some(1));
    assert!(out.ends_with("denied by `*_admin` (base deny)"), "{out}");
    // Who the proxy would turn away is turned away here too.
    let (code, out, _) = run(&["--tool", "status"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("refused before any name is judged, with HTTP 401") && out.contains("anonymous: false"),
        "{out}"
    );
    let (code, out, _) = run(&["--tool", "status", "--credential", "api_key", "--subject", "ci"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("HTTP 401") && out.contains("no API key `ci`"), "{out}");
    let (code, _, err) = run(&["--prompt", "x", "--server", "nope"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = run(&[]);
    assert_eq!(code, Some(2), "a target is required");
    let (code, _, err) = run(&["--tool", "x", "--credential", "password"]);
    assert_eq!(code, Some(2), "{err}");
    // What the caller could not carry is refused, not silently dropped.
    for (args, flags) in [
        (&["--group", "sre"][..], "--group"),
        (&["--subject", "anonymous", "--scope", "admin"][..], "--scope"),
        (&["--credential", "anonymous", "--issuer", "https://id.example.com"][..], "--issuer"),
        (&["--credential", "api_key", "--subject", "ci", "--group", "sre"][..], "--group"),
        (&["--credential", "signature", "--subject", "k", "--scope", "x"][..], "--scope"),
        (&["--credential", "trusted_header", "--subject", "u", "--issuer", "i"][..], "--issuer"),
    ] {
        let mut args = args.to_vec();
        args.extend(["--tool", "status"]);
        let (code, _, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(flags) && err.contains("cannot describe"), "{args:?}: {err}");
    }
    let (code, out, _) =
        run(&["--tool", "status", "--credential", "trusted_header", "--subject", "u", "--group", "sre"]);
    assert_ne!(code, Some(2), "a trusted header carries groups: {out}");
}

#[test]
fn a_new_signing_key_is_private_and_never_written_over() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir();
    let key = dir.join("agent.key");
    let file = key.to_string_lossy().into_owned();
    let out = toolgate(&["sign", "--new-key", "--key-file", &file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::fs::metadata(&key).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode, 0o600, "the private key is readable by its owner alone");
    let before = std::fs::read(&key).unwrap_or_default();
    let again = toolgate(&["sign", "--new-key", "--key-file", &file]);
    assert!(!again.status.success(), "an existing key is not written over");
    assert_eq!(std::fs::read(&key).unwrap_or_default(), before);
}
