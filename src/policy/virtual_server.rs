//! Virtual servers: each a view of the upstream with its own allowlists.
//!
//! What a principal may use is the base `allow` plus the `allow` of every
//! rule that matches the principal, minus every `deny` (base or rule). Deny
//! always wins; no allow means nothing is allowed.
//!
//! Two hardening rules sit on top, because a proxy's deny list is only as
//! good as its agreement with the upstream about what a name is:
//! - deny patterns match case-insensitively (ASCII), so `Delete_All` cannot
//!   slip past `delete_*` to an upstream that folds case;
//! - names that are not plain ASCII are allowed only by an exact allow
//!   entry, never by a glob, so a Unicode look-alike (`dеlete` with a
//!   Cyrillic `е`) cannot ride on `*`; names with control characters or
//!   leading/trailing white space are never allowed.

use super::pattern::PatternSet;
use super::uri;
use crate::identity::{Access, CredentialKind, Principal};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// The longest tool or prompt name toolgate judges. The MCP specification
/// asks for names of at most 128 characters; anything longer is refused.
pub const MAX_NAME: usize = 512;
/// The longest resource URI or template toolgate judges: its readings are
/// computed on every request, so their cost must have a bound.
pub const MAX_URI: usize = 8 * 1024;

/// The four kinds of thing an allowlist governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tool,
    Prompt,
    Resource,
    ResourceTemplate,
}

impl ListKind {
    pub const ALL: [ListKind; 4] =
        [ListKind::Tool, ListKind::Prompt, ListKind::Resource, ListKind::ResourceTemplate];

    fn index(self) -> usize {
        self as usize
    }

    /// The word used in messages and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Tool => "tool",
            ListKind::Prompt => "prompt",
            ListKind::Resource => "resource",
            ListKind::ResourceTemplate => "resource_template",
        }
    }

    /// The member of a list result holding these items.
    pub fn list_member(self) -> &'static str {
        match self {
            ListKind::Tool => "tools",
            ListKind::Prompt => "prompts",
            ListKind::Resource => "resources",
            ListKind::ResourceTemplate => "resourceTemplates",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allow and deny patterns for each kind.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    allow: [PatternSet; 4],
    /// Lower-cased patterns, matched against lower-cased names.
    deny: [PatternSet; 4],
}

impl Grants {
    pub fn new(allow: [Vec<String>; 4], deny: [Vec<String>; 4]) -> Self {
        // URIs have `/`-separated segments that `*` stays within; names do not.
        let segments = |k: usize| matches!(ListKind::ALL[k], ListKind::Resource | ListKind::ResourceTemplate);
        let allow =
            std::array::from_fn(|k| PatternSet::new(allow[k].iter().map(String::as_str), segments(k)));
        // A URI deny `P/**` denies `P` itself too: `file:///etc/**` is meant
        // to keep callers out of `file:///etc` as well as what is under it.
        let deny = std::array::from_fn(|k| {
            let mut folded: Vec<String> = deny[k].iter().map(|p| p.to_ascii_lowercase()).collect();
            if segments(k) {
                let bases: Vec<String> = folded
                    .iter()
                    .filter_map(|p| p.strip_suffix("/**"))
                    .filter(|base| !base.is_empty() && !base.ends_with('/'))
                    .map(str::to_owned)
                    .collect();
                folded.extend(bases);
            }
            PatternSet::new(folded.iter().map(String::as_str), segments(k))
        });
        Self { allow, deny }
    }
}

/// A rule: extra grants for principals in any of `groups` or with any of
/// `subjects` (either, if both are given), and — if `credentials` or
/// `issuers` are not empty — only when the request was authenticated by one
/// of those kinds, with a JWT from one of those issuers.
///
/// A subject is a name within one credential kind and (for JWTs) one
/// issuer: `alice` of one issuer is not `alice` of another, nor the API
/// key named `alice`. `subject_namespace` is that kind and issuer, settled
/// when the policy is compiled.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub groups: HashSet<String>,
    pub subjects: HashSet<String>,
    pub subject_namespace: Option<(CredentialKind, Option<String>)>,
    pub credentials: Vec<CredentialKind>,
    pub issuers: Vec<String>,
    pub grants: Grants,
}

impl Rule {
    fn applies_to(&self, principal: &Principal) -> bool {
        let subject = self.subjects.contains(&principal.subject)
            && self.subject_namespace.as_ref().is_some_and(|(kind, issuer)| {
                *kind == principal.kind && issuer.as_deref() == principal.issuer.as_deref()
            });
        let who = (self.groups.is_empty() && self.subjects.is_empty())
            || subject
            || principal.groups.iter().any(|g| self.groups.contains(g));
        let how = self.credentials.is_empty() || self.credentials.contains(&principal.kind);
        let from =
            self.issuers.is_empty() || principal.issuer.as_ref().is_some_and(|i| self.issuers.contains(i));
        who && how && from
    }
}

/// How a refused call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenialStyle {
    /// As if the name did not exist (`Unknown tool: NAME`).
    #[default]
    Hidden,
    /// Say that the name exists but is not allowed.
    Explicit,
}

/// Where a deciding pattern was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Base,
    /// The n-th rule of the virtual server, from 1.
    Rule(usize),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Base => f.write_str("base"),
            Source::Rule(n) => write!(f, "rule {n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed { pattern: Arc<str>, source: Source },
    Denied(Denial),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A deny pattern matched.
    DeniedBy { pattern: Arc<str>, source: Source },
    /// No allow pattern matched.
    NotAllowed,
    /// Non-ASCII name matched only by a glob: needs an exact allow entry.
    NeedsExactEntry { pattern: Arc<str> },
    /// Control characters or surrounding white space.
    MalformedName,
    /// Longer than any name toolgate judges (`limit` bytes): a tool or
    /// prompt name, or a resource URI or template.
    TooLong { limit: usize },
    /// A resource URI still percent-encoded after several rounds of
    /// decoding: no reading of it can be vouched for.
    AmbiguousUri,
    /// A resource URI with a `.` or `..` segment outside its path (in a
    /// query parameter, say), allowed only by a prefix or under a deny list.
    DotSegments,
    /// The URI is not allowed as some upstream reads it: parsed as a URL
    /// (`file:/etc/passwd` is `file:///etc/passwd` to the TypeScript and
    /// Python SDKs), or as a path (`..` resolved, escapes decoded).
    ReadAs { reading: &'static str, uri: String, denial: Box<Denial> },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed { pattern, source } => write!(f, "allowed by `{pattern}` ({source} allow)"),
            Decision::Denied(Denial::DeniedBy { pattern, source }) => {
                write!(f, "denied by `{pattern}` ({source} deny)")
            }
            Decision::Denied(Denial::NotAllowed) => {
                f.write_str("denied: no allow pattern matches it (what is not allowed is denied)")
            }
            Decision::Denied(Denial::NeedsExactEntry { pattern }) => write!(
                f,
                "denied: it is not plain ASCII and only the glob `{pattern}` allows it; where a deny list applies, such a name needs an exact allow entry (a look-alike must not slip past the deny list)"
            ),
            Decision::Denied(Denial::MalformedName) => {
                f.write_str("denied: the name has control characters or surrounding white space")
            }
            Decision::Denied(Denial::TooLong { limit }) => {
                write!(f, "denied: the name is longer than the {limit} bytes toolgate judges")
            }
            Decision::Denied(Denial::DotSegments) => f.write_str(
                "denied: the URI has a `.` or `..` segment (in a query or parameter too), which an upstream may resolve beyond what the allowing pattern covers; only `**` with no deny list allows such URIs",
            ),
            Decision::Denied(Denial::AmbiguousUri) => {
                f.write_str("denied: the URI is still percent-encoded after four rounds of decoding")
            }
            Decision::Denied(Denial::ReadAs { reading, uri, denial }) => write!(
                f,
                "denied: read {reading}, it is `{uri}`, which is {}",
                Decision::Denied((**denial).clone())
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VirtualServer {
    pub name: String,
    pub base: Grants,
    pub rules: Vec<Rule>,
    pub denial: DenialStyle,
    pub access: Access,
    pub timeouts: ResponseTimeouts,
}

/// How long this virtual server waits for the upstream's response head:
/// per tool-name pattern for `tools/call` (first match wins), else its own
/// default, else the upstream's.
#[derive(Debug, Clone, Default)]
pub struct ResponseTimeouts {
    pub default: Option<std::time::Duration>,
    pub tools: Vec<(PatternSet, std::time::Duration)>,
}

impl ResponseTimeouts {
    /// The timeout for a request calling `tool` (if it calls one).
    pub fn for_call(&self, tool: Option<&str>) -> Option<std::time::Duration> {
        tool.and_then(|name| self.tools.iter().find(|(patterns, _)| patterns.find(name).is_some()))
            .map(|(_, timeout)| *timeout)
            .or(self.default)
    }
}

/// A virtual server as one principal sees it: the base grants and the rules
/// that apply, settled once per request.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    server: &'a VirtualServer,
    /// Bit n set: rule n applies. Rules beyond 64 are checked one by one.
    rules: u64,
    principal: &'a Principal,
}

impl VirtualServer {
    pub fn view<'a>(&'a self, principal: &'a Principal) -> View<'a> {
        let mut rules = 0u64;
        for (i, rule) in self.rules.iter().enumerate().take(64) {
            if rule.applies_to(principal) {
                rules |= 1 << i;
            }
        }
        View { server: self, rules, principal }
    }
}

impl View<'_> {
    pub fn server(&self) -> &VirtualServer {
        self.server
    }

    pub fn principal(&self) -> &Principal {
        self.principal
    }

    /// The rules that apply (bit n: rule n), when that set alone decides
    /// this view: when the server has at most 64 rules. Two views of the
    /// server with the same set decide every name alike.
    pub fn rule_set(&self) -> Option<u64> {
        (self.server.rules.len() <= 64).then_some(self.rules)
    }

    fn grants(&self) -> impl Iterator<Item = (&Grants, Source)> {
        let base = std::iter::once((&self.server.base, Source::Base));
        let rules = self.server.rules.iter().enumerate().filter_map(|(i, rule)| {
            let applies = if i < 64 { self.rules & (1 << i) != 0 } else { rule.applies_to(self.principal) };
            applies.then_some((&rule.grants, Source::Rule(i + 1)))
        });
        base.chain(rules)
    }

    pub fn decide(&self, kind: ListKind, name: &str) -> Decision {
        if let Some(denial) = malformed(kind, name) {
            return Decision::Denied(denial);
        }
        if kind != ListKind::Resource {
            return self.decide_text(kind, name, true).into();
        }
        // Allowed only if allowed as every upstream reads it.
        let decision: Decision = self.decide_text(kind, name, true).into();
        if !decision.is_allowed() {
            return decision;
        }
        let Ok(readings) = uri::readings(name) else {
            return Decision::Denied(Denial::AmbiguousUri);
        };
        for (reading, uri) in readings {
            if let Decision::Denied(denial) = self.decide_text(kind, &uri, false).into() {
                return Decision::Denied(Denial::ReadAs { reading, uri, denial: Box::new(denial) });
            }
        }
        // Dot segments where no reading can follow them (a query parameter
        // an upstream takes as a path) matter only where there is something
        // to walk out of: an allowed prefix, or a deny list.
        let universal = matches!(&decision, Decision::Allowed { pattern, .. } if &**pattern == "**");
        let denies = self.grants().any(|(grants, _)| !grants.deny[kind.index()].is_empty());
        if (!universal || denies) && uri::has_dot_segment(name) != Ok(false) {
            return Decision::Denied(Denial::DotSegments);
        }
        decision
    }

    /// Whether `name` is allowed: [`Self::decide`]'s answer without
    /// building the decision, for the list filter, which asks it of every
    /// item.
    pub fn allows(&self, kind: ListKind, name: &str) -> bool {
        if kind == ListKind::Resource {
            return self.decide(kind, name).is_allowed();
        }
        malformed(kind, name).is_none() && matches!(self.decide_text(kind, name, true), Found::Allowed(..))
    }

    /// The decision for `name` as written. `as_sent`: the name as a caller
    /// sent it (not a reading derived from one). Where a deny list applies,
    /// such a name that is not plain ASCII needs an exact allow entry: a
    /// look-alike (`dеlete_all`, Cyrillic `е`) must not ride on a glob past
    /// `delete_*`. Without a deny list there is nothing to slip past, and a
    /// glob (`**` above all) allows any name.
    fn decide_text(&self, kind: ListKind, name: &str, as_sent: bool) -> Found<'_> {
        let k = kind.index();
        let folded: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.into()
        };
        let mut denies = false;
        for (grants, source) in self.grants() {
            if let Some(pattern) = grants.deny[k].find(&folded) {
                return Found::Denied(Some((pattern, source)));
            }
            denies |= !grants.deny[k].is_empty();
        }
        let exact_needed = as_sent && denies && !name.is_ascii();
        let mut glob_only: Option<&Arc<str>> = None;
        for (grants, source) in self.grants() {
            if let Some(pattern) = grants.allow[k].find(name) {
                if !exact_needed || &**pattern == name {
                    return Found::Allowed(pattern, source);
                }
                glob_only.get_or_insert(pattern);
            }
        }
        match glob_only {
            Some(pattern) => Found::NeedsExactEntry(pattern),
            None => Found::Denied(None),
        }
    }
}

/// A decision on a name as written, borrowing the pattern that made it.
enum Found<'p> {
    Allowed(&'p Arc<str>, Source),
    /// By a deny pattern, or by no allow pattern (`None`).
    Denied(Option<(&'p Arc<str>, Source)>),
    NeedsExactEntry(&'p Arc<str>),
}

impl From<Found<'_>> for Decision {
    fn from(found: Found<'_>) -> Self {
        match found {
            Found::Allowed(pattern, source) => Decision::Allowed { pattern: pattern.clone(), source },
            Found::Denied(Some((pattern, source))) => {
                Decision::Denied(Denial::DeniedBy { pattern: pattern.clone(), source })
            }
            Found::Denied(None) => Decision::Denied(Denial::NotAllowed),
            Found::NeedsExactEntry(pattern) => {
                Decision::Denied(Denial::NeedsExactEntry { pattern: pattern.clone() })
            }
        }
    }
}

/// Why `name` is not one toolgate judges, if it is not: longer than names
/// of its kind may be, or with control characters or surrounding white
/// space.
fn malformed(kind: ListKind, name: &str) -> Option<Denial> {
    let limit = match kind {
        ListKind::Tool | ListKind::Prompt => MAX_NAME,
        ListKind::Resource | ListKind::ResourceTemplate => MAX_URI,
    };
    if name.len() > limit {
        return Some(Denial::TooLong { limit });
    }
    let bad = if name.is_ascii() {
        // The one ASCII white space that is not a control character.
        let bytes = name.as_bytes();
        bytes.iter().any(|&b| b < 0x20 || b == 0x7f)
            || bytes.first() == Some(&b' ')
            || bytes.last() == Some(&b' ')
    } else {
        name.chars().any(char::is_control) || name.trim() != name
    };
    bad.then_some(Denial::MalformedName)
}

#[cfg(test)]
mod tests;
