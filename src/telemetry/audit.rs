//! Audit events: one log event per decision an operator may need to account
//! for, on the `toolgate::audit` target. Values from outside are escaped
//! ([`Untrusted`]).

use super::Untrusted;
use crate::mcp::list_filter::Removed;
use crate::policy::{Decision, ListKind, Principal};

/// Audit: one event per refused call, on the `toolgate::audit` target.
pub fn audit_call_refused(
    server: &str,
    principal: &Principal,
    kind: ListKind,
    name: &str,
    decision: &Decision,
) {
    tracing::info!(
        target: "toolgate::audit",
        event = "call_refused",
        virtual_server = server,
        credential = principal.kind.as_str(),
        issuer = %Untrusted(principal.issuer.as_deref().unwrap_or("")),
        principal = %Untrusted(&principal.subject),
        kind = kind.as_str(),
        name = %Untrusted(name),
        rule = %decision,
        "call refused"
    );
}

/// Audit: one event per list result that lost items.
pub fn audit_list_filtered(server: &str, principal: &Principal, removed: &[Removed]) {
    for kind in ListKind::ALL {
        let names: Vec<&str> = removed.iter().filter(|r| r.kind == kind).map(|r| r.name.as_str()).collect();
        if names.is_empty() {
            continue;
        }
        let shown = names.iter().take(50).copied().collect::<Vec<_>>().join(",");
        tracing::info!(
            target: "toolgate::audit",
            event = "list_filtered",
            virtual_server = server,
            credential = principal.kind.as_str(),
            issuer = %Untrusted(principal.issuer.as_deref().unwrap_or("")),
            principal = %Untrusted(&principal.subject),
            kind = kind.as_str(),
            removed = names.len(),
            names = %Untrusted(&shown),
            "list filtered"
        );
    }
}
