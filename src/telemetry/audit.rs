//! Audit events: one log event per decision an operator may need to account
//! for, on the `toolgate::audit` target. Values from outside are escaped
//! ([`Untrusted`]).

use super::Untrusted;
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

/// The items filtered out of one answer's lists: how many of each kind,
/// and the names of the first [`Removals::NAMED`] of each for the audit
/// event (a list of thousands costs no more to account for than that).
#[derive(Debug, Default)]
pub struct Removals {
    counts: [u64; 4],
    names: [Vec<String>; 4],
}

impl Removals {
    pub const NAMED: usize = 50;

    pub fn note(&mut self, kind: ListKind, name: &str) {
        let k = kind as usize;
        self.counts[k] += 1;
        if self.names[k].len() < Self::NAMED {
            self.names[k].push(name.to_owned());
        }
    }

    pub fn count(&self, kind: ListKind) -> u64 {
        self.counts[kind as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|count| *count == 0)
    }

    /// About the memory the names take.
    pub fn named_bytes(&self) -> usize {
        self.names.iter().flatten().map(|name| name.len() + 24).sum()
    }
}

/// Audit: one event per list result that lost items, per kind of item.
pub fn audit_list_filtered(server: &str, principal: &Principal, removed: &Removals) {
    for kind in ListKind::ALL {
        let names = &removed.names[kind as usize];
        if names.is_empty() {
            continue;
        }
        let shown = names.join(",");
        tracing::info!(
            target: "toolgate::audit",
            event = "list_filtered",
            virtual_server = server,
            credential = principal.kind.as_str(),
            issuer = %Untrusted(principal.issuer.as_deref().unwrap_or("")),
            principal = %Untrusted(&principal.subject),
            kind = kind.as_str(),
            removed = removed.count(kind),
            names = %Untrusted(&shown),
            "list filtered"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_count_every_item_and_name_the_first_of_each_kind() {
        let mut removed = Removals::default();
        assert!(removed.is_empty());
        for n in 0..120 {
            removed.note(ListKind::Tool, &format!("tool_{n}"));
        }
        removed.note(ListKind::Prompt, "p");
        assert!(!removed.is_empty());
        assert_eq!((removed.count(ListKind::Tool), removed.count(ListKind::Prompt)), (120, 1));
        assert_eq!(removed.count(ListKind::Resource), 0);
        let tools = &removed.names[ListKind::Tool as usize];
        assert_eq!(tools.len(), Removals::NAMED);
        assert_eq!((tools[0].as_str(), tools[49].as_str()), ("tool_0", "tool_49"));
        assert_eq!(removed.names[ListKind::Prompt as usize], ["p"]);
    }
}
