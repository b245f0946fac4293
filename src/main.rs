//! The `toolgate` command: run, check, explain, sign, demo.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use toolgate::identity::{self, CredentialKind, describe};
use toolgate::policy::ListKind;
use toolgate::telemetry::{self, LogFormat};

/// mimalloc: a proxy's requests are dozens of short-lived allocations
/// each, and glibc's malloc spent a tenth of a call's instructions on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "toolgate", version, about = "A strict, transparent proxy in front of MCP servers")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a policy file.
    Run {
        /// The policy file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address for MCP traffic (overrides listen.proxy).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Listen address for /healthz, /readyz, /metrics (overrides listen.admin).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Validate a policy file; on error print FILE:LINE:COLUMN and exit 1.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the policy file, for editors (with a
    /// `# yaml-language-server: $schema=` line) and other validators.
    Schema,
    /// Say whether a principal may use a tool, prompt, resource or resource
    /// template on a virtual server, and which pattern or rule decided.
    /// Exits 0 when allowed, 1 when denied, 2 on a usage or policy error.
    Explain {
        /// The policy file.
        #[arg(long, short)]
        config: PathBuf,
        /// The virtual server (`default` serves /mcp).
        #[arg(long, default_value = "default")]
        server: String,
        #[command(flatten)]
        target: ExplainTarget,
        /// A group of the principal (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The principal's subject.
        #[arg(long, default_value = "anonymous")]
        subject: String,
        /// The issuer of the principal's JWT (for rules that name issuers,
        /// and subjects of one issuer).
        #[arg(long)]
        issuer: Option<String>,
        /// A scope the principal's token carries (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// How the principal authenticated: anonymous, api_key, jwt, mtls,
        /// signature or trusted_header (default: anonymous for the subject
        /// `anonymous`, else jwt). An API key's or a signing key's groups
        /// and scopes come from the policy.
        #[arg(long)]
        credential: Option<String>,
    },
    /// Sign a request (RFC 9421) so it can be sent with curl; or, with
    /// --new-key, create an Ed25519 key and print its public half for the
    /// policy.
    Sign {
        /// The key file: base64 of a 32-byte Ed25519 seed or of an HMAC secret.
        #[arg(long)]
        key_file: PathBuf,
        /// Create a new Ed25519 key in --key-file and print its public key.
        #[arg(long)]
        new_key: bool,
        /// The key's id in the policy (identity.signatures.keys[].id).
        #[arg(long, default_value = "")]
        key_id: String,
        #[arg(long, default_value = "ed25519", value_parser = ["ed25519", "hmac-sha256"])]
        alg: String,
        /// The full URL the request goes to.
        #[arg(long, default_value = "http://127.0.0.1:8000/mcp")]
        url: String,
        #[arg(long, default_value = "POST")]
        method: String,
        /// The request body (for POST).
        #[arg(long, default_value = "")]
        data: String,
    },
    /// Start a built-in MCP server behind toolgate with a sample policy.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ExplainTarget {
    /// A tool name.
    #[arg(long)]
    tool: Option<String>,
    /// A prompt name.
    #[arg(long)]
    prompt: Option<String>,
    /// A resource URI.
    #[arg(long)]
    resource: Option<String>,
    /// A resource template (its uriTemplate).
    #[arg(long)]
    resource_template: Option<String>,
}

/// Who `explain` asks about, as the command line describes them.
struct Caller {
    credential: Option<CredentialKind>,
    subject: String,
    issuer: Option<String>,
    groups: Vec<String>,
    scopes: Vec<String>,
}

impl Caller {
    fn kind(&self) -> CredentialKind {
        self.credential.unwrap_or(if self.subject == "anonymous" {
            CredentialKind::Anonymous
        } else {
            CredentialKind::Jwt
        })
    }

    /// Refuses what this kind of caller cannot carry: explaining a caller
    /// the proxy could never meet would answer the wrong question.
    fn check(&self) -> Result<(), String> {
        let kind = self.kind();
        let given = |flag: &'static str, present: bool| present.then_some(flag);
        let issuer = given("--issuer", self.issuer.is_some());
        let groups = given("--group", !self.groups.is_empty());
        let scopes = given("--scope", !self.scopes.is_empty());
        let (unfit, why) = match kind {
            CredentialKind::Jwt => return Ok(()),
            CredentialKind::Anonymous => {
                ([issuer, groups, scopes], "an anonymous caller has no issuer, groups or scopes")
            }
            CredentialKind::ApiKey | CredentialKind::Signature => (
                [issuer, groups, scopes],
                "its groups and scopes come from the key's entry in the policy, and only a JWT has an issuer",
            ),
            CredentialKind::TrustedHeader => {
                ([issuer, None, scopes], "a trusted header brings a subject and groups only")
            }
            CredentialKind::Mtls => ([issuer, groups, scopes], "a client certificate brings a subject only"),
        };
        let unfit: Vec<&str> = unfit.into_iter().flatten().collect();
        if unfit.is_empty() {
            return Ok(());
        }
        Err(format!("{} cannot describe a {kind} caller: {why}", unfit.join(", ")))
    }
}

/// Runs the proxy's own decisions for one caller, one virtual server and
/// one name: first whether the caller gets in at all (as authentication
/// would answer), then whether the name is allowed.
fn explain(config: &std::path::Path, server: &str, target: ExplainTarget, caller: Caller) -> ExitCode {
    let loaded = match toolgate::config::load_file(config) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let Some(virtual_server) = loaded.policy.virtual_server(server) else {
        let mut names: Vec<&String> = loaded.policy.virtual_servers.keys().collect();
        names.sort();
        eprintln!("no virtual server `{server}` in {}; it defines: {names:?}", config.display());
        return ExitCode::from(2);
    };
    let (kind, name) = match target {
        ExplainTarget { tool: Some(name), .. } => (ListKind::Tool, name),
        ExplainTarget { prompt: Some(name), .. } => (ListKind::Prompt, name),
        ExplainTarget { resource: Some(name), .. } => (ListKind::Resource, name),
        ExplainTarget { resource_template: Some(name), .. } => (ListKind::ResourceTemplate, name),
        _ => return ExitCode::from(2),
    };
    let described = describe::Described {
        kind: caller.credential,
        subject: caller.subject,
        issuer: caller.issuer,
        groups: caller.groups,
        scopes: caller.scopes,
        ..Default::default()
    };
    let admitted = describe::principal(&loaded.policy.identity, &described)
        .and_then(|principal| identity::admit(&virtual_server.access, &principal).map(|()| principal));
    let who = match &described.issuer {
        Some(issuer) => format!("`{}` of `{issuer}`", described.subject),
        None => format!("`{}`", described.subject),
    };
    let principal = match admitted {
        Ok(principal) => principal,
        Err(error) => {
            let (status, reason, message) = toolgate::proxy::auth::answer(&error);
            let why = match error {
                identity::AuthError::Missing => {
                    format!(
                        "{message}: virtual server `{server}` serves no anonymous callers (anonymous: false)"
                    )
                }
                _ => message,
            };
            println!(
                "{kind} `{name}` on virtual server `{server}` for {who}: refused before any name is judged, with HTTP {} ({reason}): {why}",
                status.as_u16()
            );
            return ExitCode::from(1);
        }
    };
    let decision = virtual_server.view(&principal).decide(kind, &name);
    let groups = if principal.groups.is_empty() { "none".to_owned() } else { principal.groups.join(", ") };
    let who = match &principal.issuer {
        Some(issuer) => format!("`{}` of `{issuer}`", principal.subject),
        None => format!("`{}`", principal.subject),
    };
    println!(
        "{kind} `{name}` on virtual server `{server}` for {} {who} (groups: {groups}): {decision}",
        principal.kind
    );
    if decision.is_allowed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

struct SignArgs {
    key_file: PathBuf,
    new_key: bool,
    key_id: String,
    alg: String,
    url: String,
    method: String,
    data: String,
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use toolgate::identity::signature::{self, SignerKey};
    let rng = SystemRandom::new();
    if args.new_key {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed).map_err(|_| anyhow::anyhow!("no randomness"))?;
        // A private key: readable by its owner alone, and never written over.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&args.key_file)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.key_file.display()))?;
        file.write_all(format!("{}\n", STANDARD.encode(seed)).as_bytes())?;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| anyhow::anyhow!("cannot make a key"))?;
        use aws_lc_rs::signature::KeyPair;
        println!(
            "wrote {}; its public key, for identity.signatures.keys[].public_key:",
            args.key_file.display()
        );
        println!("{}", STANDARD.encode(pair.public_key().as_ref()));
        return Ok(());
    }
    anyhow::ensure!(!args.key_id.is_empty(), "--key-id is required to sign");
    let material = STANDARD.decode(std::fs::read_to_string(&args.key_file)?.trim())?;
    let key = match args.alg.as_str() {
        "ed25519" => SignerKey::Ed25519(
            aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&material)
                .map_err(|_| anyhow::anyhow!("the key file must hold base64 of a 32-byte Ed25519 seed"))?,
        ),
        _ => SignerKey::HmacSha256(Box::new(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &material,
        ))),
    };
    let uri: http::Uri = args.url.parse()?;
    let method: http::Method = args.method.parse()?;
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let body = (!args.data.is_empty()).then_some(args.data.as_bytes());
    let signed =
        signature::sign(&key, &args.key_id, &method, &uri, body, created, &URL_SAFE_NO_PAD.encode(nonce))
            .map_err(|e| anyhow::anyhow!(e))?;
    let mut command = format!("curl -s -X {method} '{}'", args.url);
    command.push_str(" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'");
    command.push_str(" -H 'MCP-Protocol-Version: 2025-06-18'");
    if let Some(digest) = &signed.content_digest {
        command.push_str(&format!(" \\\n  -H 'Content-Digest: {digest}'"));
    }
    command.push_str(&format!(" \\\n  -H 'Signature-Input: {}'", signed.signature_input));
    command.push_str(&format!(" \\\n  -H 'Signature: {}'", signed.signature));
    if !args.data.is_empty() {
        command.push_str(&format!(" \\\n  --data-raw '{}'", args.data.replace('\'', "'\\''")));
    }
    println!("{command}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => match serde_json::to_string_pretty(&toolgate::config::json_schema()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cannot write the schema: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Check { file } => match toolgate::config::load_file(&file) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    eprintln!("{warning}");
                }
                match loaded.warnings.len() {
                    0 => println!("{}: ok", file.display()),
                    n => {
                        println!("{}: ok, with {n} warning{}", file.display(), if n == 1 { "" } else { "s" })
                    }
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Explain { config, server, target, groups, subject, issuer, scopes, credential } => {
            let credential = match credential.as_deref().map(|name| (name, CredentialKind::parse(name))) {
                None => None,
                Some((_, Some(kind))) => Some(kind),
                Some((name, None)) => {
                    eprintln!("unknown credential kind `{name}`: use {}", CredentialKind::NAMES);
                    return ExitCode::from(2);
                }
            };
            let caller = Caller { credential, subject, issuer, groups, scopes };
            if let Err(message) = caller.check() {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
            explain(&config, &server, target, caller)
        }
        Command::Run { config, listen, admin_listen } => {
            let log = telemetry::init_logging(cli.log_format);
            let config = toolgate::Config { policy_file: config, proxy_listen: listen, admin_listen };
            let result =
                runtime().and_then(|rt| rt.block_on(toolgate::serve(config)).map_err(anyhow::Error::from));
            drop(log); // the log's last lines before the exit message
            report(result)
        }
        Command::Sign { key_file, new_key, key_id, alg, url, method, data } => {
            report(sign(SignArgs { key_file, new_key, key_id, alg, url, method, data }))
        }
        Command::Demo { listen, admin_listen } => {
            let log = telemetry::init_logging(cli.log_format);
            let result = runtime().and_then(|rt| {
                rt.block_on(toolgate::demo::run(listen, admin_listen)).map_err(anyhow::Error::from)
            });
            drop(log);
            report(result)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("toolgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
