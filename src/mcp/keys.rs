//! JSON object keys as the upstreams read them.
//!
//! serde_json, JavaScript and Python match keys byte for byte. Go's
//! `encoding/json` does not: a key that matches no field exactly is matched
//! under Unicode simple case folding (`bytes.EqualFold`), and the last
//! matching key wins, so `{"name":"echo","NAME":"delete_database"}` runs
//! `delete_database` there. .NET's `System.Text.Json` with the web defaults
//! compares ignoring case the same way, by simple upper-case mapping.
//!
//! And the Python SDK's newer models take a member by its snake_case name
//! as well as by its camelCase alias (`resource_templates` for
//! `resourceTemplates`; pydantic `populate_by_name`).
//!
//! toolgate therefore refuses, in every object it reads a decision from, a
//! key that is not one of the names it reads but folds onto one of them,
//! underscores aside.
//! For the ASCII names of MCP, the characters that fold onto ASCII letters
//! are the ASCII letters of the other case and four others: U+017F `ſ`
//! (→ s), U+212A KELVIN SIGN (→ k), U+0131 dotless `ı` (upper-cases to I)
//! and U+0130 dotted `İ` (lower-cases to i).

/// The most members an object toolgate reads a decision from may hold. MCP
/// objects hold a handful; a cap keeps the cost of reading one small,
/// whatever an attacker sends.
pub const MAX_MEMBERS: usize = 1024;

/// How one object key relates to the names a reader looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// Byte-identical to `names[index]`.
    Exact(usize),
    /// Not identical, but a case-insensitive reader takes it for
    /// `names[index]`.
    Folded(usize),
    /// None of the names, under any reading.
    Other,
}

fn fold(c: char) -> char {
    match c {
        'ſ' => 's',
        '\u{212A}' => 'k',
        'ı' | 'İ' => 'i',
        c => c.to_ascii_lowercase(),
    }
}

/// Whether a case-insensitive or snake_case-accepting reader takes `key`
/// for `name` (whose own names have no underscore).
pub fn folds_to(key: &str, name: &str) -> bool {
    // Every character that folds onto ASCII is at most 3 bytes long, and a
    // snake_case name has at most one underscore per letter.
    if key.len() < name.len() || key.len() > 4 * name.len() {
        return false;
    }
    // Most keys part from the name at their first byte.
    if let (Some(&k), Some(&n)) = (key.as_bytes().first(), name.as_bytes().first())
        && k.is_ascii()
        && n.is_ascii()
        && k != b'_'
        && !k.eq_ignore_ascii_case(&n)
    {
        return false;
    }
    if key.is_ascii() && name.is_ascii() {
        // The same comparison for ASCII, where folding is ASCII case.
        let mut wanted = name.bytes();
        return key
            .bytes()
            .filter(|b| *b != b'_')
            .all(|b| wanted.next().is_some_and(|w| w.eq_ignore_ascii_case(&b)))
            && wanted.next().is_none();
    }
    key.chars().filter(|c| *c != '_').map(fold).eq(name.chars().map(fold))
}

/// Classifies `key` against `names`.
pub fn classify(key: &str, names: &[&str]) -> Member {
    if let Some(index) = names.iter().position(|name| *name == key) {
        return Member::Exact(index);
    }
    match names.iter().position(|name| folds_to(key, name)) {
        Some(index) => Member::Folded(index),
        None => Member::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variants_and_unicode_folds_are_caught() {
        let names = ["method", "params", "name", "taskId"];
        assert_eq!(classify("method", &names), Member::Exact(0));
        for key in ["Method", "METHOD", "mEtHoD"] {
            assert_eq!(classify(key, &names), Member::Folded(0), "{key}");
        }
        assert_eq!(classify("paramſ", &names), Member::Folded(1));
        assert_eq!(classify("taſkId", &names), Member::Folded(3));
        assert_eq!(classify("TASKID", &names), Member::Folded(3));
        assert_eq!(classify("nAme", &names), Member::Folded(2));
        assert_eq!(classify("task_id", &names), Member::Folded(3));
        let lists = ["resourceTemplates", "nextCursor"];
        assert_eq!(classify("resource_templates", &lists), Member::Folded(0));
        assert_eq!(classify("next_cursor", &lists), Member::Folded(1));
        let kelvin = ["kind"];
        assert_eq!(classify("\u{212A}ind", &kelvin), Member::Folded(0));
        let id = ["id"];
        assert_eq!(classify("ıd", &id), Member::Folded(0));
        assert_eq!(classify("İD", &id), Member::Folded(0));
    }

    #[test]
    fn ascii_keys_fold_as_characters_do() {
        let names = ["name", "uri", "resourceTemplates", "id", "a_b"];
        let pieces = ["", "_", "n", "N", "a", "m", "e", "E", "__", "name", "uri", "URI", "id", "Id", "x"];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let key = format!("{a}{b}{c}");
                    for name in names {
                        let by_chars = key.len() >= name.len()
                            && key.len() <= 4 * name.len()
                            && key.chars().filter(|c| *c != '_').map(fold).eq(name.chars().map(fold));
                        assert_eq!(folds_to(&key, name), by_chars, "{key} {name}");
                    }
                }
            }
        }
    }

    #[test]
    fn other_keys_are_other() {
        let names = ["name", "uri"];
        for key in ["names", "nam", "arguments", "", "ñame", "uri ", "ur\u{0131}x", "nаme"] {
            assert_eq!(classify(key, &names), Member::Other, "{key}");
        }
    }
}
