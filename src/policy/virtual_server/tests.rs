//! Decisions of one virtual server: deny over allow, rules by principal,
//! look-alikes, malformed and over-long names, URIs in every reading.

use super::*;

fn kinds(tools: &[&str]) -> [Vec<String>; 4] {
    [tools.iter().map(|s| s.to_string()).collect(), vec![], vec![], vec![]]
}

fn server() -> VirtualServer {
    VirtualServer {
        name: "ops".into(),
        base: Grants::new(kinds(&["status", "search_*", "*"]), kinds(&["*_admin", "delete_*"])),
        rules: vec![
            Rule {
                groups: ["sre".to_string()].into(),
                grants: Grants::new(kinds(&["restart_*"]), kinds(&[])),
                ..Rule::default()
            },
            Rule {
                subjects: ["mallory".to_string()].into(),
                subject_namespace: Some((CredentialKind::Jwt, Some("https://a".into()))),
                grants: Grants::new(kinds(&[]), kinds(&["search_*"])),
                ..Rule::default()
            },
        ],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    }
}

fn principal(subject: &str, groups: &[&str]) -> Principal {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    Principal::with_groups(CredentialKind::Jwt, subject, &groups).issued_by("https://a")
}

#[test]
fn deny_wins_and_decisions_name_their_pattern() {
    let vs = server();
    let anon = Principal::anonymous();
    let view = vs.view(&anon);
    assert_eq!(
        view.decide(ListKind::Tool, "status"),
        Decision::Allowed { pattern: "status".into(), source: Source::Base }
    );
    assert_eq!(
        view.decide(ListKind::Tool, "search_web"),
        Decision::Allowed { pattern: "search_*".into(), source: Source::Base }
    );
    assert_eq!(
        view.decide(ListKind::Tool, "user_admin"),
        Decision::Denied(Denial::DeniedBy { pattern: "*_admin".into(), source: Source::Base })
    );
    assert!(!view.decide(ListKind::Prompt, "status").is_allowed(), "kinds are separate");
}

#[test]
fn rules_add_and_take_away_by_principal() {
    let vs = server();
    let sre = principal("alice", &["sre"]);
    let decision = vs.view(&sre).decide(ListKind::Tool, "restart_db");
    // `*` in the base already allows it; the first allow found wins.
    assert!(decision.is_allowed());
    let mallory = principal("mallory", &[]);
    assert_eq!(
        vs.view(&mallory).decide(ListKind::Tool, "search_web"),
        Decision::Denied(Denial::DeniedBy { pattern: "search_*".into(), source: Source::Rule(2) })
    );
    // The same subject of another issuer, or of another kind, is someone else.
    let other_issuer = Principal::with_groups(CredentialKind::Jwt, "mallory", &[]).issued_by("https://b");
    assert!(vs.view(&other_issuer).decide(ListKind::Tool, "search_web").is_allowed());
    let api_key = Principal::with_groups(CredentialKind::ApiKey, "mallory", &[]);
    assert!(vs.view(&api_key).decide(ListKind::Tool, "search_web").is_allowed());
}

#[test]
fn rules_can_require_an_issuer() {
    let vs = VirtualServer {
        name: "w".into(),
        base: Grants::default(),
        rules: vec![Rule {
            groups: ["sre".to_string()].into(),
            issuers: vec!["https://a".into()],
            grants: Grants::new(kinds(&["restart_*"]), kinds(&[])),
            ..Rule::default()
        }],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    let from_a = principal("x", &["sre"]);
    assert!(vs.view(&from_a).decide(ListKind::Tool, "restart_db").is_allowed());
    let from_b = Principal::with_groups(CredentialKind::Jwt, "x", &["sre".into()]).issued_by("https://b");
    assert!(!vs.view(&from_b).decide(ListKind::Tool, "restart_db").is_allowed());
    let api_key = Principal::with_groups(CredentialKind::ApiKey, "x", &["sre".into()]);
    assert!(!vs.view(&api_key).decide(ListKind::Tool, "restart_db").is_allowed());
}

#[test]
fn rules_can_require_a_credential_kind() {
    let vs = VirtualServer {
        name: "w".into(),
        base: Grants::new(kinds(&["read_*"]), kinds(&[])),
        rules: vec![Rule {
            credentials: vec![CredentialKind::Signature],
            grants: Grants::new(kinds(&["write_*"]), kinds(&[])),
            ..Rule::default()
        }],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    let anon = Principal::anonymous();
    assert!(vs.view(&anon).decide(ListKind::Tool, "read_x").is_allowed());
    assert!(!vs.view(&anon).decide(ListKind::Tool, "write_x").is_allowed());
    let signed = Principal::with_groups(CredentialKind::Signature, "agent-7", &[]);
    assert!(vs.view(&signed).decide(ListKind::Tool, "write_x").is_allowed());
    let bearer = Principal::with_groups(CredentialKind::Jwt, "agent-7", &[]);
    assert!(!vs.view(&bearer).decide(ListKind::Tool, "write_x").is_allowed());
}

#[test]
fn allowing_everything_allows_everything() {
    let all = VirtualServer {
        name: "all".into(),
        base: Grants::new(
            [vec!["*".into()], vec!["*".into()], vec!["**".into()], vec!["**".into()]],
            Default::default(),
        ),
        rules: vec![],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    let anon = Principal::anonymous();
    let view = all.view(&anon);
    for name in ["ns/tool", "github/issues/create", "ünïcode", "工具"] {
        assert!(view.decide(ListKind::Tool, name).is_allowed(), "{name}");
    }
    for uri in ["file:///a%2Fb", "file:///a/../b", "mem://x/%C3%A9", "file:///ünï", "urn:x"] {
        assert!(view.decide(ListKind::Resource, uri).is_allowed(), "{uri}");
    }
    assert!(view.decide(ListKind::ResourceTemplate, "file:///{path}").is_allowed());
    // Names with control characters or surrounding spaces, never.
    assert!(!view.decide(ListKind::Tool, "a\u{0}").is_allowed());
}

#[test]
fn no_allow_means_nothing() {
    let vs = VirtualServer {
        name: "x".into(),
        base: Grants::default(),
        rules: vec![],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    let anon = Principal::anonymous();
    assert_eq!(vs.view(&anon).decide(ListKind::Tool, "anything"), Decision::Denied(Denial::NotAllowed));
}

#[test]
fn case_and_look_alikes_cannot_evade_deny() {
    let vs = server();
    let anon = Principal::anonymous();
    let view = vs.view(&anon);
    for name in ["Delete_All", "DELETE_ALL", "User_Admin"] {
        assert!(!view.decide(ListKind::Tool, name).is_allowed(), "{name}");
    }
    assert_eq!(
        view.decide(ListKind::Tool, "dеlete_all"),
        Decision::Denied(Denial::NeedsExactEntry { pattern: "*".into() }),
        "Cyrillic е rides on no glob"
    );
    assert_eq!(
        view.decide(ListKind::Tool, &"s".repeat(MAX_NAME + 1)),
        Decision::Denied(Denial::TooLong { limit: MAX_NAME })
    );
    assert!(view.decide(ListKind::Tool, &"s".repeat(MAX_NAME)).is_allowed());
    for name in ["delete_all\u{0}", " status", "status\n", "status "] {
        assert_eq!(view.decide(ListKind::Tool, name), Decision::Denied(Denial::MalformedName), "{name:?}");
    }
    let files = VirtualServer {
        name: "f".into(),
        base: Grants::new(
            [vec![], vec![], vec!["file:///public/**".to_string()], vec![]],
            Default::default(),
        ),
        rules: vec![],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    let files = files.view(&anon);
    assert!(files.decide(ListKind::Resource, "file:///public/a/b.md").is_allowed());
    let long = format!("file:///public/{}", "a/".repeat(MAX_URI / 2));
    assert_eq!(files.decide(ListKind::Resource, &long), Decision::Denied(Denial::TooLong { limit: MAX_URI }));
    assert!(files.decide(ListKind::Resource, "file:///public/a..b.md").is_allowed());
    assert!(files.decide(ListKind::Resource, "file:///public/x?v=1.2#...").is_allowed());
    assert!(files.decide(ListKind::Resource, "file:///public/100%25.md").is_allowed());
    assert_eq!(
        files.decide(ListKind::Resource, "file:///public/%25252525252e"),
        Decision::Denied(Denial::AmbiguousUri),
        "still encoded after four rounds"
    );
    // Escapes that stay within the allowed prefix are harmless.
    for uri in ["file:///public/a%2Fb", "file:///public/x?v=1.2"] {
        assert!(files.decide(ListKind::Resource, uri).is_allowed(), "{uri}");
    }
    // Dot segments under a prefix are refused, even where no reading
    // leaves it: an upstream may resolve them against a base of its own.
    for uri in [
        "file:///public/./x",
        "file:///public/a/../b",
        "file:///public/x?a=..",
        "file:///public/x?p=../../etc",
    ] {
        assert_eq!(files.decide(ListKind::Resource, uri), Decision::Denied(Denial::DotSegments), "{uri}");
    }
    for uri in [
        "file:///public/../private/key",
        "file:///public/..",
        "file:///public/%2e%2e/private/key",
        "file:///public/..%2fprivate",
        "file:///public/a\\..\\..\\private",
        "file:///public/x?/../../etc/passwd",
        "file:///public/x#/../../etc/passwd",
        "file:///public/..?x",
        "file:///public/..;x/private",
        "file:///public/%252e%252e/private",
        "file:///public/%25252e%25252e/private",
    ] {
        let decision = files.decide(ListKind::Resource, uri);
        assert!(matches!(decision, Decision::Denied(Denial::ReadAs { .. })), "{uri}: {decision}");
    }
    // Denied as an upstream that parses URIs reads them.
    let guarded = VirtualServer {
        name: "g".into(),
        base: Grants::new(
            [vec![], vec![], vec!["**".to_string()], vec![]],
            [
                vec![],
                vec![],
                vec!["file:///etc/**".to_string(), "https://internal.example.com/**".to_string()],
                vec![],
            ],
        ),
        rules: vec![],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    let guarded = guarded.view(&anon);
    for uri in [
        "file:/etc/passwd",
        "file://localhost/etc/passwd",
        "https://internal.ex%61mple.com/s",
        "https:internal.example.com/s",
    ] {
        let decision = guarded.decide(ListKind::Resource, uri);
        assert!(matches!(decision, Decision::Denied(Denial::ReadAs { .. })), "{uri}: {decision}");
    }
    assert_eq!(
        guarded.decide(ListKind::Resource, "file:/etc/passwd").to_string(),
        "denied: read as a URL (as the TypeScript and Python SDKs do), it is `file:///etc/passwd`, which is denied by `file:///etc/**` (base deny)"
    );
    assert!(guarded.decide(ListKind::Resource, "file:/tmp/x").is_allowed());
    assert!(!guarded.decide(ListKind::Resource, "file:///etc").is_allowed(), "P/** denies P too");
    assert!(guarded.decide(ListKind::Resource, "file:///etcetera").is_allowed());
    let exact = VirtualServer {
        name: "x".into(),
        base: Grants::new(kinds(&["ünïcode"]), kinds(&[])),
        rules: vec![],
        denial: DenialStyle::Hidden,
        access: Access::default(),
        timeouts: Default::default(),
    };
    assert!(exact.view(&anon).decide(ListKind::Tool, "ünïcode").is_allowed());
}

#[test]
fn allows_answers_as_decide_does() {
    let vs = server();
    let principals = [
        Principal::anonymous(),
        principal("alice", &["sre"]),
        principal("mallory", &[]),
        principal("bob", &[]),
    ];
    let mut names: Vec<String> = [
        "status",
        "search_web",
        "user_admin",
        "delete_all",
        "Delete_All",
        "dеlete_all",
        "restart_db",
        "",
        " ",
        "status ",
        "\u{a0}status",
        "status\u{85}",
        "sta\u{7f}tus",
        "file:///public/a/b.md",
        "file:///etc/passwd",
        "file:/etc/passwd",
        "file:///public/%2e%2e/x",
        "ſearch_x",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    names.push("s".repeat(MAX_NAME + 1));
    names.push(format!("file:///{}", "a".repeat(MAX_URI)));
    for principal in &principals {
        let view = vs.view(principal);
        for kind in ListKind::ALL {
            for name in &names {
                assert_eq!(
                    view.allows(kind, name),
                    view.decide(kind, name).is_allowed(),
                    "{kind:?} {name:?}"
                );
            }
        }
    }
}

#[test]
fn malformed_names_are_found_as_the_unicode_definition_finds_them() {
    let mut chars: Vec<char> = (0u32..0x3100).filter_map(char::from_u32).collect();
    chars.extend(['\u{2028}', '\u{feff}', '\u{3000}', '\u{1680}']);
    for c in chars {
        for name in [format!("a{c}b"), format!("{c}ab"), format!("ab{c}"), c.to_string()] {
            let expected = name.chars().any(char::is_control) || name.trim() != name;
            assert_eq!(malformed(ListKind::Tool, &name).is_some(), expected, "{name:?}");
        }
    }
}
