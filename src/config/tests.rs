use super::model::default_proxy_addr;
use super::*;
use crate::identity::CredentialKind;
use crate::policy::DenialStyle;

const VS: &str = "virtual_servers:\n  default:\n    tools: { allow: ['*'] }\n";

fn load(text: &str) -> Result<LoadedPolicy, ConfigError> {
    load_str(text, Path::new("policy.yaml"))
}

fn error_of(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("policy should have been refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_policy_gets_safe_defaults() -> Result<(), ConfigError> {
    let loaded = load(&format!("version: 1\nupstream: {{ url: http://127.0.0.1:8080/mcp }}\n{VS}"))?;
    assert_eq!(loaded.listen.proxy, default_proxy_addr());
    assert_eq!(loaded.policy.upstream.path, "/mcp");
    assert_eq!(loaded.policy.transport.max_body, 4 << 20);
    assert!(loaded.policy.transport.allowed_hosts.allows("localhost:8000"));
    assert!(!loaded.policy.transport.allowed_hosts.allows("evil.example.com"));
    Ok(())
}

#[test]
fn unknown_key_is_located() {
    let text = "version: 1\nupstream:\n  url: http://127.0.0.1:8080/mcp\n  tmeout: 5s\n";
    let message = error_of(text);
    assert!(message.starts_with("policy.yaml:4:3: "), "{message}");
    assert!(message.contains("tmeout"), "{message}");
}

#[test]
fn bad_scalar_is_located() {
    let text =
        "version: 1\nupstream: { url: http://127.0.0.1:8080/mcp }\ntransport:\n  max_body: 4 parsecs\n";
    let message = error_of(text);
    assert!(message.starts_with("policy.yaml:4:"), "{message}");
    assert!(message.contains("unknown unit"), "{message}");
}

#[test]
fn semantic_errors_are_located() {
    let text = format!(
        "version: 1\nupstream: {{ url: http://127.0.0.1:8080/mcp }}\ntransport:\n  allowed_origins:\n    - https://ok.example.com\n    - app.example.com\n{VS}"
    );
    let message = error_of(&text);
    assert!(message.starts_with("policy.yaml:6:7: "), "{message}");
    assert!(message.contains("scheme"), "{message}");

    let message = error_of(&format!("version: 2\nupstream: {{ url: http://127.0.0.1:8080/mcp }}\n{VS}"));
    assert!(message.starts_with("policy.yaml:1:10: "), "{message}");

    let message = error_of(&format!("version: 1\nupstream: {{ url: ftp://x/mcp }}\n{VS}"));
    assert!(message.starts_with("policy.yaml:2:"), "{message}");
    assert!(message.contains("http://"), "{message}");

    let message = error_of(&format!("version: 1\nupstream: {{ url: 'http://u:p@x:8080/mcp' }}\n{VS}"));
    assert!(message.starts_with("policy.yaml:2:"), "{message}");
    assert!(message.contains("credentials"), "{message}");

    let message = error_of(&format!("version: 1\nupstream: {{ url: 'http://x:8080/mcp?tenant=a' }}\n{VS}"));
    assert!(message.starts_with("policy.yaml:2:"), "{message}");
    assert!(message.contains("query"), "{message}");

    let message = error_of(&format!(
        "version: 1\nupstream: {{ url: http://x/mcp }}\ntransport: {{ protocol_versions: [2025-6-18] }}\n{VS}"
    ));
    assert!(message.contains("YYYY-MM-DD"), "{message}");
}

#[test]
fn duplicate_keys_are_refused() {
    let message = error_of("version: 1\nupstream: { url: http://x/mcp }\nupstream: { url: http://y/mcp }\n");
    assert!(message.starts_with("policy.yaml:3:"), "{message}");
    assert!(message.to_lowercase().contains("duplicate"), "{message}");
}

#[test]
fn virtual_servers_are_validated() {
    let head = "version: 1\nupstream: { url: http://x/mcp }\n";
    let message = error_of(&format!("{head}virtual_servers:\n  Ops:\n    tools: {{ allow: [a] }}\n"));
    // Located at the server's body, the line after its name.
    assert!(message.starts_with("policy.yaml:5:5: ") && message.contains("`Ops`"), "{message}");
    let message = error_of(&format!("{head}virtual_servers:\n  ops:\n    tols: {{ allow: [a] }}\n"));
    assert!(message.starts_with("policy.yaml:5:5: ") && message.contains("tols"), "{message}");
    let message = error_of(&format!(
        "{head}virtual_servers:\n  ops:\n    rules:\n      - when: {{}}\n        tools: {{ allow: [a] }}\n"
    ));
    assert!(message.starts_with("policy.yaml:6:") && message.contains("when"), "{message}");
    let message = error_of(&format!(
        "{head}virtual_servers:\n  ops:\n    rules:\n      - when: {{ groups: [a] }}\n        tools: {{ alow: [a] }}\n"
    ));
    assert!(message.contains("alow"), "{message}");
    let message = error_of(&format!("{head}virtual_servers:\n  ops:\n    denial: loud\n"));
    assert!(message.starts_with("policy.yaml:5:"), "{message}");
    let message = error_of(&format!("{head}virtual_servers:\n  ops:\n    tools: {{ allow: ['a', ''] }}\n"));
    assert!(message.contains("empty"), "{message}");
    let message = error_of(&format!("{head}virtual_servers: {{}}\n"));
    assert!(message.contains("at least one virtual server"), "{message}");
    assert!(error_of(head).contains("virtual_servers"));
}

#[test]
fn a_policy_compiles_to_virtual_servers() -> Result<(), ConfigError> {
    let loaded = load(
        "version: 1\nupstream: { url: http://x/mcp }\nvirtual_servers:\n  default:\n    tools: { allow: ['search_*'], deny: ['*_admin'] }\n  ops:\n    denial: explicit\n    rules:\n      - when: { groups: [sre] }\n        tools: { allow: ['restart_*'] }\n",
    )?;
    let policy = loaded.policy;
    assert_eq!(policy.meta.sha256.len(), 64);
    let anon = crate::policy::Principal::anonymous();
    let default = policy.virtual_server("default").ok_or_else(|| panic_error("default"))?;
    assert!(default.view(&anon).decide(crate::policy::ListKind::Tool, "search_web").is_allowed());
    let ops = policy.virtual_server("ops").ok_or_else(|| panic_error("ops"))?;
    assert_eq!(ops.denial, DenialStyle::Explicit);
    assert!(!ops.view(&anon).decide(crate::policy::ListKind::Tool, "restart_db").is_allowed());
    let sre = crate::policy::Principal::with_groups(CredentialKind::Jwt, "a", &["sre".into()]);
    assert!(ops.view(&sre).decide(crate::policy::ListKind::Tool, "restart_db").is_allowed());
    Ok(())
}

fn panic_error(what: &str) -> ConfigError {
    ConfigError::Invalid { path: String::new(), line: 0, column: 0, message: format!("missing {what}") }
}

#[test]
fn jwks_sources_are_validated() {
    let with = |jwks: &str| {
        format!(
            "version: 1\nupstream: {{ url: http://x/mcp }}\nidentity:\n  resource_metadata: {{ base_url: 'https://mcp.example.com' }}\n  jwt:\n    - issuer: i\n      jwks: {jwks}\n{VS}"
        )
    };
    assert!(load(&with("{ url: 'https://id.example.com/jwks.json' }")).is_ok());
    assert!(load(&with("{ url: 'http://127.0.0.1:9/jwks.json' }")).is_ok());
    assert!(error_of(&with("{ url: 'http://id.example.com/jwks.json' }")).contains("https://"));
    assert!(error_of(&with("{ url: 'https://a/j', file: j.json }")).contains("exactly one"));
    assert!(error_of(&with("{}")).contains("exactly one"));
    assert!(error_of(&with("{ file: /no/such/jwks.json }")).contains("cannot read JWKS"));
}

#[test]
fn missing_upstream_is_reported() {
    let message = error_of("version: 1\n");
    assert!(message.contains("upstream"), "{message}");
}

const TWO_ISSUERS: &str = "version: 1\nupstream: { url: http://x/mcp }\nidentity:\n  resource_metadata: { base_url: 'https://mcp.example.com/' }\n  api_keys: [{ id: ci, sha256: '0000000000000000000000000000000000000000000000000000000000000001' }]\n  jwt:\n    - { issuer: 'https://a', algorithms: [HS256], secret: 'MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=' }\n    - { issuer: 'https://b', algorithms: [HS256], secret: 'MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=' }\n";

#[test]
fn subjects_belong_to_one_kind_and_issuer() -> Result<(), ConfigError> {
    let rule = |when: &str| {
        format!(
            "{TWO_ISSUERS}virtual_servers:\n  default:\n    rules:\n      - when: {when}\n        tools: {{ allow: [x] }}\n"
        )
    };
    let message = error_of(&rule("{ subjects: [alice] }"));
    assert!(message.starts_with("policy.yaml:12:15: "), "{message}");
    assert!(message.contains("ambiguous") && message.contains("jwt from https://b"), "{message}");
    let message = error_of(&rule("{ subjects: [alice], credentials: [jwt] }"));
    assert!(message.contains("ambiguous") && !message.contains("api_key"), "{message}");
    let message = error_of(&rule("{ subjects: [alice], issuers: ['https://c'] }"));
    assert!(message.contains("`https://c` is not one of"), "{message}");
    let message = error_of(&rule("{ subjects: [alice], credentials: [signature] }"));
    assert!(message.contains("names no credential"), "{message}");

    let loaded = load(&rule("{ subjects: [alice], issuers: ['https://a'] }"))?;
    let server = loaded.policy.virtual_server("default").ok_or_else(|| panic_error("default"))?;
    let decide = |principal: &crate::policy::Principal| {
        server.view(principal).decide(crate::policy::ListKind::Tool, "x").is_allowed()
    };
    let alice = |kind| crate::policy::Principal::with_groups(kind, "alice", &[]);
    assert!(decide(&alice(CredentialKind::Jwt).issued_by("https://a")));
    assert!(!decide(&alice(CredentialKind::Jwt).issued_by("https://b")));
    assert!(!decide(&alice(CredentialKind::ApiKey)));
    let loaded = load(&rule("{ subjects: [alice], credentials: [api_key] }"))?;
    let server = loaded.policy.virtual_server("default").ok_or_else(|| panic_error("default"))?;
    assert!(
        server.view(&alice(CredentialKind::ApiKey)).decide(crate::policy::ListKind::Tool, "x").is_allowed()
    );
    Ok(())
}

#[test]
fn each_virtual_server_is_its_own_audience() -> Result<(), ConfigError> {
    let loaded = load(&format!(
        "{TWO_ISSUERS}virtual_servers:\n  default: {{}}\n  ops: {{}}\n  own:\n    audiences: ['urn:own']\n"
    ))?;
    let audiences = |name: &str| {
        loaded.policy.virtual_server(name).map(|s| s.access.audiences.clone()).unwrap_or_default()
    };
    assert_eq!(audiences("default"), ["https://mcp.example.com/mcp"]);
    assert_eq!(audiences("ops"), ["https://mcp.example.com/servers/ops/mcp"]);
    assert_eq!(audiences("own"), ["urn:own"]);

    let without_base =
        TWO_ISSUERS.replace("  resource_metadata: { base_url: 'https://mcp.example.com/' }\n", "");
    let message = error_of(&format!("{without_base}virtual_servers:\n  ops: {{}}\n"));
    assert!(message.contains("`ops` accepts JWTs but has no audience"), "{message}");
    load(&format!("{without_base}virtual_servers:\n  ops: {{ credentials: [api_key] }}\n"))?;

    let message = error_of(&format!(
        "version: 1\nupstream: {{ url: http://x/mcp }}\nidentity:\n  jwt:\n    - {{ issuer: i, audiences: [a], algorithms: [HS256], secret: 'MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=' }}\n{VS}"
    ));
    assert!(message.contains("audiences is no longer read"), "{message}");
    Ok(())
}

#[test]
fn yaml_errors_say_what_to_fix() {
    let head =
        "version: 1\nupstream: { url: http://x/mcp }\nvirtual_servers:\n  default:\n    anonymous: true\n";
    let message = error_of(&format!("{head}    tools: {{ allow: [*] }}\n"));
    assert!(message.starts_with("policy.yaml:6:") && message.contains("quote the pattern"), "{message}");
    let message = error_of(&format!("{head}    tools:\n      allow:\n        - *\n"));
    assert!(message.contains("quote the pattern"), "{message}");
    let message = error_of(&format!("{head}    tools: {{ allow: \"*\" }}\n"));
    assert!(message.starts_with("policy.yaml:6:") && message.contains("expected a list"), "{message}");
    let message = error_of("version: 1\nupstream: { url: http://x/mcp }\nupstream: { url: http://y/mcp }\n");
    assert!(
        message.contains("`upstream` is given twice") && !message.contains("DuplicateKeyPolicy"),
        "{message}"
    );
    for empty in ["", "\n\n", "# only a comment\n", "---\n", "--- # policy\n...\n", "---\n# to do\n---\n"] {
        let message = error_of(empty);
        assert!(message.starts_with("policy.yaml:1:1: the policy file is empty"), "{message}");
    }
}

#[test]
fn contradictions_are_errors_with_their_place() {
    let head = "version: 1\nupstream: { url: http://x/mcp }\nidentity:\n  resource_metadata: { base_url: 'https://m.example.com' }\n  api_keys: [{ id: ci, sha256: '0000000000000000000000000000000000000000000000000000000000000001' }]\nvirtual_servers:\n  ops:\n";
    let message = error_of(&format!("{head}    anonymous: true\n    required_scopes: [mcp:write]\n"));
    assert!(
        message.starts_with("policy.yaml:8:5: ") && message.contains("anonymous callers have none"),
        "{message}"
    );
    let message = error_of(&format!("{head}    credentials: [jwt]\n"));
    assert!(
        message.starts_with("policy.yaml:8:5: ") && message.contains("configure identity.jwt"),
        "{message}"
    );
    let message = error_of(&format!("{head}    anonymous: true\n    credentials: [api_key]\n"));
    assert!(message.contains("does not list `anonymous`"), "{message}");
    let message = error_of(&format!(
        "version: 1\nlisten: {{ proxy: '127.0.0.1:8000', admin: '127.0.0.1:8000' }}\nupstream: {{ url: http://x/mcp }}\n{VS}"
    ));
    assert!(
        message.starts_with("policy.yaml:2:43: ") && message.contains("would share port 8000"),
        "{message}"
    );
    // A wildcard on one side clashes with any address on the same port.
    for (proxy, admin) in [("0.0.0.0:8000", "127.0.0.1:8000"), ("127.0.0.1:8000", "'[::]:8000'")] {
        let message = error_of(&format!(
            "version: 1\nlisten: {{ proxy: '{proxy}', admin: {admin} }}\nupstream: {{ url: http://x/mcp }}\n{VS}"
        ));
        assert!(message.contains("would share port 8000"), "{proxy} {admin}: {message}");
    }
    // Other ports, other specific addresses, or port 0 (any free port) do not.
    for (proxy, admin) in [
        ("0.0.0.0:8000", "0.0.0.0:9090"),
        ("127.0.0.1:8000", "127.0.0.2:8000"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        load(&format!("version: 1\nlisten: {{ proxy: '{proxy}', admin: '{admin}' }}\nupstream: {{ url: http://x/mcp }}\n{VS}"))
            .map_err(|e| format!("{proxy} {admin}: {e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn what_is_probably_not_meant_is_a_warning() -> Result<(), ConfigError> {
    let loaded = load(
        "version: 1\nupstream: { url: http://x/mcp }\nvirtual_servers:\n  nobody: {}\n  classes:\n    anonymous: true\n    tools: { allow: ['read_[a-z]*', ok] }\n    resources: { allow: ['file:///[a-z]/**', 'http://[::1]/**', 'file:///a?b'] }\n",
    )?;
    let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("policy.yaml:7:22: warning: pattern `read_[a-z]*`: `[` is not pattern syntax"),
        "{shown:#?}"
    );
    assert!(shown[1].starts_with("policy.yaml:8:26: warning: pattern `file:///[a-z]/**`"), "{shown:#?}");
    assert!(
        shown[2]
            .starts_with("policy.yaml:4:11: warning: virtual server `nobody` can be reached by no caller"),
        "{shown:#?}"
    );
    Ok(())
}

#[test]
fn oversized_policy_files_are_refused_unread() {
    let dir = std::env::temp_dir().join(format!("toolgate-config-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let big = dir.join("big.yaml");
    let _ = std::fs::write(&big, "#".repeat((MAX_POLICY_BYTES + 1) as usize));
    let message = match load_file(&big) {
        Err(error) => error.to_string(),
        Ok(_) => String::new(),
    };
    assert!(message.contains("larger than 1024 KiB"), "{message}");
    let zero = dir.join("zero.yaml");
    let _ = std::fs::remove_file(&zero);
    if std::os::unix::fs::symlink("/dev/zero", &zero).is_ok() {
        let message = match load_file(&zero) {
            Err(error) => error.to_string(),
            Ok(_) => String::new(),
        };
        assert!(message.contains("larger than"), "{message}");
    }
}

#[test]
fn secrets_can_come_from_files_of_their_own() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("toolgate-secret-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    std::fs::write(dir.join("ops.sha256"), format!("{hash}\n"))?;
    std::fs::write(dir.join("hmac"), "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n")?;
    let file = dir.join("policy.yaml");
    let with = |identity: &str| {
        format!("version: 1\nupstream: {{ url: http://x/mcp }}\nidentity:\n{identity}\n{VS}")
    };
    let keys = "  api_keys: [{ id: ops, sha256_file: ops.sha256 }]\n  signatures:\n    keys: [{ id: ci, alg: hmac-sha256, secret_file: hmac }]";
    let loaded = load_str(&with(keys), &file)?;
    assert_eq!(
        loaded.policy.identity.api_keys[0].sha256.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        hash
    );
    assert_eq!(loaded.policy.meta.referenced_files.len(), 2, "secret files are watched for rotation");
    // A rotated secret file changes the policy's inputs, so it reloads.
    std::fs::write(
        dir.join("ops.sha256"),
        "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
    )?;
    let rotated = load_str(&with(keys), &file)?;
    assert_ne!(rotated.policy.meta.inputs_sha256, loaded.policy.meta.inputs_sha256);
    let both = load_str(&with("  api_keys: [{ id: ops, sha256: x, sha256_file: ops.sha256 }]"), &file);
    assert!(both.is_err_and(|e| e.to_string().contains("give `sha256` or `sha256_file`, not both")));
    let neither = load_str(&with("  api_keys: [{ id: ops }]"), &file);
    assert!(neither.is_err_and(|e| e.to_string().contains("needs `sha256` or `sha256_file`")));
    let missing = load_str(&with("  api_keys: [{ id: ops, sha256_file: nope }]"), &file);
    assert!(missing.is_err_and(|e| e.to_string().contains("cannot read sha256")));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
