//! Hot reload: the ways a policy file changes on disk, bad files, settings
//! that need a restart, SIGHUP, and reloads under continuous load.

mod common;

use common::*;
use http::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Policy A lets `restart_db` be called; policy B does not.
fn policy_a(upstream: SocketAddr) -> String {
    policy(
        upstream,
        "",
        "virtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: ['*'], deny: ['delete_*'] }\n",
    )
}
fn policy_b(upstream: SocketAddr) -> String {
    policy(
        upstream,
        "",
        "virtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: ['*'], deny: ['delete_*', 'restart_*'] }\n",
    )
}
/// The first page of the catalog under each policy.
const LISTED_A: &[&str] =
    &["search_docs", "search_web", "read_file", "write_file", "restart_db", "restart_cache", "status"];
const LISTED_B: &[&str] = &["search_docs", "search_web", "read_file", "write_file", "status"];

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");

fn call(name: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
}

async fn listed(addr: SocketAddr) -> Result<Vec<String>, String> {
    let reply = post(addr, &[V0618], LIST).await;
    if reply.status != StatusCode::OK {
        return Err(format!("tools/list answered {}: {}", reply.status, reply.text()));
    }
    let tools = reply.json()["result"]["tools"].as_array().cloned().ok_or_else(|| reply.text())?;
    Ok(tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
}

/// Polls until the listing is `expected`; returns how long that took.
async fn until_listed(addr: SocketAddr, expected: &[&str], since: Instant) -> Result<Duration, BoxError> {
    let deadline = since + Duration::from_secs(10);
    loop {
        if listed(addr).await? == expected {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!("policy did not take effect; still {:?}", listed(addr).await?).into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn write_by_rename(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("yaml.tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

async fn reload_errors(admin: SocketAddr) -> u64 {
    let metrics = send(admin, "GET", "/metrics", &[], "").await.text();
    metrics
        .lines()
        .find(|l| l.starts_with(r#"toolgate_policy_reloads_total{result="error"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_plain_write_is_picked_up() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy_a(upstream)).await;
    assert_eq!(listed(gate.addr).await?, LISTED_A);
    let written = Instant::now();
    std::fs::write(&gate.policy_file, policy_b(upstream))?;
    let took = until_listed(gate.addr, LISTED_B, written).await?;
    println!("plain write took effect after {took:?}");
    assert_eq!(generation(gate.admin).await, 2);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_editor_rename_over_is_picked_up() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy_a(upstream)).await;
    assert_eq!(listed(gate.addr).await?, LISTED_A);
    let written = Instant::now();
    write_by_rename(&gate.policy_file, &policy_b(upstream))?;
    let took = until_listed(gate.addr, LISTED_B, written).await?;
    println!("rename-over took effect after {took:?}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() -> TestResult {
    use std::os::unix::fs::symlink;
    let upstream = start_catalog_upstream(true).await;
    // The layout the kubelet writes for a mounted ConfigMap.
    let dir = scratch_dir();
    std::fs::create_dir(dir.join("..2026_11_21_1"))?;
    std::fs::write(dir.join("..2026_11_21_1/policy.yaml"), policy_a(upstream))?;
    symlink("..2026_11_21_1", dir.join("..data"))?;
    symlink("..data/policy.yaml", dir.join("policy.yaml"))?;
    let gate = start_gate_with_file(&dir.join("policy.yaml")).await;
    assert_eq!(listed(gate.addr).await?, LISTED_A);

    // An update: a new timestamped directory, then `..data` swapped atomically.
    std::fs::create_dir(dir.join("..2026_11_21_2"))?;
    std::fs::write(dir.join("..2026_11_21_2/policy.yaml"), policy_b(upstream))?;
    symlink("..2026_11_21_2", dir.join("..data_tmp"))?;
    let written = Instant::now();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    std::fs::remove_dir_all(dir.join("..2026_11_21_1"))?;
    let took = until_listed(gate.addr, LISTED_B, written).await?;
    println!("ConfigMap ..data swap took effect after {took:?}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_broken_file_leaves_the_running_policy_in_place() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy_a(upstream)).await;
    for broken in [
        "version: 1\nupstream: [\n".to_owned(),
        policy_b(upstream).replace("deny:", "dney:"),
        policy_b(upstream).replace("version: 1", "version: 9"),
        String::new(),
    ] {
        let errors = reload_errors(gate.admin).await;
        write_by_rename(&gate.policy_file, &broken)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while reload_errors(gate.admin).await == errors {
            assert!(Instant::now() < deadline, "the broken file was never looked at");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(listed(gate.addr).await?, LISTED_A, "the old policy still serves");
        assert_eq!(
            post(gate.addr, &[V0618], &call("restart_db")).await.json()["result"]["content"][0]["text"],
            "ran restart_db"
        );
    }
    assert_eq!(generation(gate.admin).await, 1);
    // Fixing the file takes effect.
    let written = Instant::now();
    write_by_rename(&gate.policy_file, &policy_b(upstream))?;
    until_listed(gate.addr, LISTED_B, written).await?;
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn settings_that_need_a_restart_are_refused_not_ignored() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let dir = scratch_dir();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy_a(upstream))?;
    let process = Process::start(&file)?;
    let listening = process.wait_for("toolgate listening")?;
    let addr: SocketAddr = listening["proxy"].as_str().ok_or("no proxy")?.parse()?;
    let admin: SocketAddr = listening["admin"].as_str().ok_or("no admin")?.parse()?;

    let moved = policy_b(upstream).replace("drain: 5s", "drain: 5s\n  proxy: 127.0.0.1:1");
    write_by_rename(&file, &moved)?;
    let refused = process.wait_for("policy reload refused; the running policy stays")?;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("listen.proxy changed, which applies only at start: restart"), "{refused}");
    assert!(!error.contains("drain"), "only what changed is named: {refused}");
    assert_eq!(listed(addr).await?, LISTED_A);

    // A located error for a broken file, in the log.
    write_by_rename(&file, &policy_b(upstream).replace("tools:", "toolz:"))?;
    let refused = process.wait_for("policy reload refused; the running policy stays")?;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("{}:", file.display())) && error.contains("toolz"), "{refused}");

    // SIGHUP reloads on demand (here: the file is still broken).
    process.signal("HUP")?;
    process.wait_for("SIGHUP received: reloading the policy")?;
    process.wait_for("policy reload refused; the running policy stays")?;
    write_by_rename(&file, &policy_b(upstream))?;
    process.wait_for("policy reloaded")?;
    assert_eq!(listed(addr).await?, LISTED_B);
    assert_eq!(generation(admin).await, 2);
    Ok(())
}

/// Many clients, continuous requests, and the policy rewritten 60 times
/// (every fifth time broken). Every request must be answered, and every
/// answer must be right under one of the two policies: never a mix.
#[tokio::test]
async fn reloads_under_load_lose_nothing_and_mix_nothing() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy_a(upstream)).await;
    let addr = gate.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (stop, answered, wrong) = (stop.clone(), answered.clone(), wrong.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let problem = match (client + n) % 4 {
                    0 => match listed(addr).await {
                        Ok(names) if names == LISTED_A || names == LISTED_B => None,
                        other => Some(format!("tools/list: {other:?}")),
                    },
                    1 => expect_text(post(addr, &[V0618], &call("status")).await, Some("ran status")),
                    2 => expect_text(post(addr, &[V0618], &call("delete_file")).await, None),
                    _ => {
                        let reply = post(addr, &[V0618], &call("restart_db")).await;
                        let json = reply.json();
                        let ran = json["result"]["content"][0]["text"] == "ran restart_db";
                        let hidden = json["error"]["message"] == "Unknown tool: restart_db";
                        (reply.status != StatusCode::OK || !(ran || hidden))
                            .then(|| format!("restart_db: {}", reply.text()))
                    }
                };
                answered.fetch_add(1, Ordering::Relaxed);
                if let Some(problem) = problem {
                    eprintln!("wrong answer: {problem}");
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let mut latencies = Vec::new();
    let mut expected_generation = 1;
    let mut current_is_a = true;
    for round in 0..60 {
        if round % 5 == 4 {
            let errors = reload_errors(gate.admin).await;
            write_by_rename(&gate.policy_file, "version: 1\nvirtual_servers: [oops\n")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while reload_errors(gate.admin).await == errors && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            continue;
        }
        current_is_a = !current_is_a;
        let (text, expected) =
            if current_is_a { (policy_a(upstream), LISTED_A) } else { (policy_b(upstream), LISTED_B) };
        let written = Instant::now();
        write_by_rename(&gate.policy_file, &text)?;
        latencies.push(until_listed(addr, expected, written).await?);
        expected_generation += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }

    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!(
        "{} rewrites ({} broken), {} requests answered during them; new policy in effect after: median {median:?}, max {max:?}",
        60,
        12,
        answered.load(Ordering::Relaxed)
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "failed or wrongly decided requests");
    assert!(answered.load(Ordering::Relaxed) > 100, "the load ran");
    assert_eq!(generation(gate.admin).await, expected_generation);
    gate.shutdown().await;
    Ok(())
}

fn expect_text(reply: Reply, text: Option<&str>) -> Option<String> {
    let json: Value = reply.json();
    let ok = reply.status == StatusCode::OK
        && match text {
            Some(text) => json["result"]["content"][0]["text"] == text,
            None => json["error"]["code"] == -32602,
        };
    (!ok).then(|| reply.text())
}
