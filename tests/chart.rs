//! The Helm chart and the image, with the real engines: the chart rendered
//! and linted by Helm's Go SDK (helm-python-sdk, offline) in both modes
//! and with each option, its values checked by values.schema.json, the
//! manifests validated against the Kubernetes API schemas
//! (kubernetes-models) and scanned by checkov; the rendered sidecar run
//! as the kubelet would run it; the Dockerfile linted by hadolint.
//! `./scripts/test` installs the tools, pinned.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tool(variable: &str) -> Result<String, BoxError> {
    std::env::var(variable).map_err(|_| {
        format!("{variable} is not set: run ./scripts/test, which installs the chart and image test tools")
            .into()
    })
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Renders the chart with `values` into a fresh directory: the manifests,
/// or the engine's refusal (schema, lint or template) as `Err`.
fn render(values: &Value) -> Result<(PathBuf, Vec<Value>), String> {
    let python = tool("TOOLGATE_TEST_CHART_PYTHON").map_err(|e| e.to_string())?;
    let out = scratch_dir();
    let ran = Command::new(python)
        .arg(repo().join("tests/chart/render.py"))
        .arg(repo().join("charts/toolgate"))
        .arg(values.to_string())
        .arg(&out)
        .output()
        .map_err(|e| e.to_string())?;
    if !ran.status.success() {
        return Err(String::from_utf8_lossy(&ran.stderr).into_owned());
    }
    let manifests = serde_json::from_slice(&ran.stdout).map_err(|e| e.to_string())?;
    Ok((out, manifests))
}

fn find<'a>(manifests: &'a [Value], kind: &str, suffix: &str) -> Option<&'a Value> {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"].as_str().is_some_and(|n| n.ends_with(suffix)))
}

fn container<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"].as_array()?.iter().find(|c| c["name"] == name)
}

/// The checks a chart README justifies failing (its `| CKV_... |` rows).
fn justified() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("charts/toolgate/README.md")).unwrap_or_default();
    readme
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| ")?.split(' ').next().filter(|id| id.starts_with("CKV")).map(String::from)
        })
        .collect()
}

/// Validates against the Kubernetes API schemas and scans with checkov;
/// returns what failed that the README does not justify.
fn scan(dir: &Path) -> Result<Vec<String>, BoxError> {
    let validator = tool("TOOLGATE_TEST_K8S_VALIDATOR")?;
    let checked = Command::new("node").arg(validator).arg(dir.join("manifests.json")).output()?;
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    let mut problems: Vec<String> =
        said.lines().filter(|l| l.starts_with("INVALID")).map(String::from).collect();
    if !checked.status.success() && problems.is_empty() {
        problems.push(format!("the validator failed: {}", String::from_utf8_lossy(&checked.stderr)));
    }
    let checkov = Path::new(&tool("TOOLGATE_TEST_CHART_TOOLS")?).join("checkov");
    let scanned = Command::new(checkov)
        .args(["--framework", "kubernetes", "--quiet", "--compact", "-o", "json", "-d"])
        .arg(dir)
        .output()?;
    let report: Value = serde_json::from_slice(&scanned.stdout)
        .map_err(|e| format!("checkov said no JSON ({e}): {}", String::from_utf8_lossy(&scanned.stderr)))?;
    let reports = match report {
        Value::Array(many) => many,
        one => vec![one],
    };
    let justified = justified();
    for report in &reports {
        for failed in report["results"]["failed_checks"].as_array().into_iter().flatten() {
            let id = failed["check_id"].as_str().unwrap_or_default();
            if !justified.iter().any(|j| j == id) {
                problems.push(format!("checkov {id} {} on {}", failed["check_name"], failed["resource"]));
            }
        }
    }
    Ok(problems)
}

fn sidecar(extra: Value) -> Value {
    let mut values = json!({"sidecar": {"image": "registry.example.com/mcp-server:1.0", "args": ["--host", "127.0.0.1", "--port", "3000"]}});
    merge(&mut values, extra);
    values
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

#[test]
fn every_mode_and_option_renders_lints_validates_and_scans_clean() -> TestResult {
    let cases = [
        ("sidecar", sidecar(json!({}))),
        (
            "sidecar with TLS, mTLS, a ServiceMonitor and NetworkPolicy peers",
            sidecar(json!({
                "tls": {"enabled": true, "secretName": "toolgate-tls", "clientCertificates": "required", "clientCaSecretName": "clients-ca"},
                "metrics": {"serviceMonitor": {"enabled": true}},
                "networkPolicy": {"from": [{"podSelector": {"matchLabels": {"role": "agent"}}}], "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
                "policy": {"version": 1, "identity": {"mtls": {"subject": "uri"}}, "virtual_servers": {"default": {"credentials": ["mtls"], "tools": {"allow": ["*"]}}}},
            })),
        ),
        (
            "sidecar without NetworkPolicy, a full container spec",
            json!({
                "networkPolicy": {"enabled": false},
                "sidecar": {"container": {
                "name": "server", "image": "registry.example.com/mcp:2",
                "resources": {"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "10m", "memory": "64Mi"}},
                "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            }},
            }),
        ),
        (
            "standalone over HTTPS with a PDB, an HPA and secrets",
            json!({
                "mode": "standalone",
                "standalone": {"upstreamUrl": "https://mcp.tools.svc:8443/mcp", "upstreamTls": {"secretName": "upstream-ca", "certKey": "tls.crt", "keyKey": "tls.key"}},
                "podDisruptionBudget": {"enabled": true},
                "autoscaling": {"enabled": true},
                "secretMounts": [{"name": "api-keys", "secretName": "toolgate-api-keys", "mountPath": "/etc/toolgate/secrets/api-keys"}],
                "policy": {"version": 1, "identity": {"api_keys": [{"id": "ci", "sha256_file": "/etc/toolgate/secrets/api-keys/ci"}]}, "virtual_servers": {"default": {"tools": {"allow": ["read_*"]}}}},
            }),
        ),
        (
            "standalone with a ConfigMap of its own",
            json!({"mode": "standalone", "standalone": {"upstreamUrl": "http://mcp.tools.svc:3000/mcp"}, "existingPolicyConfigMap": "my-policy"}),
        ),
    ];
    let mut cases = cases.map(|(name, values)| (name.to_owned(), values)).to_vec();
    for example in ["values-sidecar.yaml", "values-standalone.yaml"] {
        let text = std::fs::read_to_string(repo().join("examples").join(example))?;
        cases.push((format!("examples/{example}"), serde_saphyr::from_str::<Value>(&text)?));
    }
    let mut problems = Vec::new();
    for (name, values) in &cases {
        let (dir, manifests) = render(values).map_err(|e| format!("{name}: {e}"))?;
        problems.extend(scan(&dir)?.into_iter().map(|p| format!("{name}: {p}")));
        let deployment = find(&manifests, "Deployment", "toolgate").ok_or("no Deployment")?;
        let pod = &deployment["spec"]["template"];
        let gate = container(deployment, "toolgate").ok_or("no toolgate container")?;
        // Hardened, probed, and given longer to stop than it drains.
        let security = &gate["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_eq!(gate["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(gate["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        assert!(pod["spec"]["terminationGracePeriodSeconds"].as_u64() > Some(30), "{name}");
        // Policy edits reload live: nothing restarts the pod when it changes.
        let annotations = pod["metadata"]["annotations"].as_object().ok_or("no annotations")?;
        assert!(annotations.keys().all(|k| !k.contains("policy")), "{name}: {annotations:?}");
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        // The Service exposes toolgate's port only.
        let service = find(&manifests, "Service", "toolgate").ok_or("no Service")?;
        assert_eq!(service["spec"]["ports"].as_array().map(Vec::len), Some(1), "{name}");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "mcp", "{name}");
        let containers = pod["spec"]["containers"].as_array().ok_or("no containers")?;
        if values["mode"] == "standalone" {
            assert_eq!(containers.len(), 1, "{name}");
        } else {
            assert_eq!(containers.len(), 2, "{name}");
            let server = containers.iter().find(|c| c["name"] != "toolgate").ok_or("no MCP server")?;
            assert!(server["ports"].is_null(), "{name}: the MCP server exposes a port");
        }
        assert_eq!(
            find(&manifests, "NetworkPolicy", "").is_some(),
            values["networkPolicy"]["enabled"] != false,
            "{name}"
        );
        assert_eq!(
            find(&manifests, "ServiceMonitor", "").is_some(),
            values["metrics"]["serviceMonitor"]["enabled"] == true,
            "{name}"
        );
        // The rendered policy is one toolgate accepts (where its files exist here).
        if let Some(config) = find(&manifests, "ConfigMap", "-policy")
            && values["tls"]["enabled"] != true
            && values["secretMounts"].is_null()
            && values["standalone"]["upstreamTls"].is_null()
        {
            let file = dir.join("policy.yaml");
            std::fs::write(&file, config["data"]["policy.yaml"].as_str().ok_or("no policy.yaml")?)?;
            let checked = Command::new(env!("CARGO_BIN_EXE_toolgate")).arg("check").arg(&file).output()?;
            assert!(checked.status.success(), "{name}: {}", String::from_utf8_lossy(&checked.stderr));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

#[test]
fn bad_values_are_refused_by_the_schema_with_the_key_named() {
    let cases = [
        (json!({"mode": "daemonset"}), "mode"),
        (sidecar(json!({"ports": {"proxy": 0, "admin": 9090}})), "proxy"),
        (sidecar(json!({"replicas": 3})), "replicas"),
        (sidecar(json!({"policy": {"version": 1, "virtual_server": {}}})), "virtual_server"),
        (
            sidecar(
                json!({"policy": {"version": 1, "virtual_servers": {"default": {"tools": {"allow": "*"}}}}}),
            ),
            "allow",
        ),
        (
            sidecar(json!({"policy": {"version": 1, "virtual_servers": {"default": {"denial": "loud"}}}})),
            "denial",
        ),
        (json!({"mode": "standalone"}), "upstreamUrl"),
        (sidecar(json!({"tls": {"enabled": true}})), "secretName"),
        (
            sidecar(json!({"tls": {"enabled": true, "secretName": "t", "clientCertificates": "required"}})),
            "clientCaSecretName",
        ),
        (sidecar(json!({"image": {"repository": "toolgate", "digest": "latest"}})), "digest"),
        (sidecar(json!({"standalone": {"upstreamUrl": "ftp://x"}})), "upstreamUrl"),
        (
            json!({"mode": "standalone", "standalone": {"upstreamUrl": "https://a/mcp", "upstreamTls": {"secretName": "s", "certKey": "tls.crt"}}}),
            "keyKey",
        ),
        (sidecar(json!({"sidecar": {"port": 8000}})), "sidecar.port 8000 is one of toolgate's ports"),
        (sidecar(json!({"networkPolicy": {"metricsFrom": []}})), "networkPolicy.metricsFrom"),
        (
            sidecar(json!({"policy": {"version": 1, "identity": {"mtls": {}}}})),
            "policy.identity.mtls needs tls.enabled",
        ),
    ];
    for (values, key) in cases {
        match render(&values) {
            Ok(_) => panic!("accepted: {values}"),
            Err(said) => assert!(said.contains(key), "the refusal of {values} does not name `{key}`: {said}"),
        }
    }
}

#[test]
fn the_schemas_are_generated_from_the_policy_types() -> TestResult {
    let schema = Command::new(env!("CARGO_BIN_EXE_toolgate")).arg("schema").output()?;
    assert!(schema.status.success());
    let committed = std::fs::read(repo().join("docs/policy.schema.json"))?;
    assert_eq!(
        serde_json::from_slice::<Value>(&committed)?,
        serde_json::from_slice::<Value>(&schema.stdout)?,
        "docs/policy.schema.json is stale: toolgate schema > docs/policy.schema.json"
    );
    let mut generate = Command::new("python3")
        .arg(repo().join("scripts/chart-schema.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut generate.stdin.take().ok_or("stdin")?, &schema.stdout)?;
    let generated = generate.wait_with_output()?;
    let committed = std::fs::read(repo().join("charts/toolgate/values.schema.json"))?;
    assert_eq!(
        serde_json::from_slice::<Value>(&committed)?,
        serde_json::from_slice::<Value>(&generated.stdout)?,
        "values.schema.json is stale: toolgate schema | scripts/chart-schema.py > charts/toolgate/values.schema.json"
    );
    // Every example policy is valid by the schema editors use.
    let python = tool("TOOLGATE_TEST_CHART_PYTHON")?;
    let examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.to_string_lossy().contains("values"))
        .collect();
    assert!(examples.len() >= 5, "{examples:?}");
    let validated = Command::new(python)
        .args(["-c", VALIDATE_EXAMPLES])
        .arg(repo().join("docs/policy.schema.json"))
        .args(&examples)
        .output()?;
    assert!(validated.status.success(), "{}", String::from_utf8_lossy(&validated.stderr));
    Ok(())
}

/// Validates YAML files against a JSON Schema, reading YAML as toolgate
/// and editors do (1.2: `2025-06-18` is a string, not a date).
const VALIDATE_EXAMPLES: &str = r#"
import json, sys, yaml, jsonschema
class Loader(yaml.SafeLoader):
    pass
Loader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
schema = json.load(open(sys.argv[1]))
for name in sys.argv[2:]:
    jsonschema.validate(yaml.load(open(name), Loader=Loader), schema)
    print("valid", name)
"#;

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[tokio::test]
async fn the_rendered_sidecar_serves_and_applies_a_configmap_update_live() -> TestResult {
    let upstream = start_sdk_upstream(true).await;
    let upstream_port = upstream.port();
    let rendered = |(proxy, admin): (u16, u16), tools: &[&str]| -> Result<(Vec<String>, String), BoxError> {
        let (_, manifests) = render(&sidecar(json!({
            "ports": {"proxy": proxy, "admin": admin},
            "sidecar": {"port": upstream_port},
            "policy": {"version": 1, "virtual_servers": {"default": {"anonymous": true, "tools": {"allow": tools}}}},
        })))?;
        let deployment = find(&manifests, "Deployment", "toolgate").ok_or("no Deployment")?;
        let args = container(deployment, "toolgate").ok_or("no toolgate")?["args"]
            .as_array()
            .ok_or("no args")?
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        let config = find(&manifests, "ConfigMap", "-policy").ok_or("no ConfigMap")?;
        Ok((args, config["data"]["policy.yaml"].as_str().ok_or("no policy.yaml")?.to_owned()))
    };
    // Mounted as the kubelet mounts a ConfigMap volume: at the container's
    // path, here under a scratch root.
    let root = scratch_dir();
    let mount = "/etc/toolgate/policy";
    let listed = |addr| async move {
        let reply = post(
            addr,
            &[("mcp-protocol-version", "2025-06-18")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await;
        reply.json()["result"]["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str().map(String::from)).collect::<Vec<_>>())
    };
    // The chart's args name the ports, so they are picked here: free when
    // picked, they can be taken by another test before toolgate binds them.
    // toolgate then exits, and is started again on two others.
    let mut attempts = 0;
    let (mut child, ports) = loop {
        attempts += 1;
        let ports = (free_port()?, free_port()?);
        let (args, policy) = rendered(ports, &["echo"])?;
        kubelet_swap(&root.join(mount.trim_start_matches('/')), &[("policy.yaml", &policy)]);
        let args: Vec<String> = args
            .into_iter()
            .map(|a| match a.strip_prefix(mount) {
                Some(rest) => format!("{}{rest}", root.join(mount.trim_start_matches('/')).display()),
                None => a,
            })
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate")).args(&args).spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let started = loop {
            if let Some(status) = child.try_wait()? {
                break Err(format!("toolgate exited ({status}) with the chart's args: {args:?}"));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", ports.0)).await.is_ok() {
                break Ok(());
            }
            assert!(Instant::now() < deadline, "toolgate did not start with the chart's args: {args:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match started {
            Ok(()) => break (child, ports),
            Err(error) if attempts == 3 => return Err(error.into()),
            Err(_) => continue,
        }
    };
    let gate = SocketAddr::from(([127, 0, 0, 1], ports.0));
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.1));
    assert_eq!(listed(gate).await, Some(vec!["echo".to_owned()]));

    // `kubectl edit configmap`: the kubelet swaps `..data`; no restart.
    let (_, widened) = rendered(ports, &["echo", "progress"])?;
    kubelet_swap(&root.join(mount.trim_start_matches('/')), &[("policy.yaml", &widened)]);
    until_generation(admin, 2).await?;
    assert_eq!(listed(gate).await, Some(vec!["echo".to_owned(), "progress".to_owned()]));
    assert!(child.try_wait()?.is_none(), "toolgate exited");
    child.kill()?;
    child.wait()?;
    Ok(())
}

#[test]
fn the_dockerfile_passes_hadolint() -> TestResult {
    let hadolint = Path::new(&tool("TOOLGATE_TEST_CHART_TOOLS")?).join("hadolint");
    let out = Command::new(hadolint).arg(repo().join("Dockerfile")).output()?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
