//! Name and URI patterns of the allowlists.
//!
//! A pattern is an exact string or a glob. For URIs (resources, resource
//! templates) `*` matches any run of characters except `/` and `**` any
//! run including `/`; names (tools, prompts) have no segments, so there
//! both match any run: `*` allows `github/create_issue` too. Exact patterns are
//! kept in a hash set (one lookup); globs are compiled once per policy
//! snapshot and matched in O(pattern × name) without backtracking.
//!
//! Written here rather than taken from a glob crate because those match
//! file paths (with OS separators, character classes and escapes that a
//! tool name or a URI does not need) and pull more code into the tree.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// The hash of the exact-name sets: a multiply-rotate over eight bytes at
/// a time, several times cheaper than the standard library's SipHash on
/// the short names looked up for every list item and call. SipHash's
/// defence is against keys chosen to collide as they are inserted; these
/// sets hold the policy's names, fixed when it is compiled, so the names
/// looked up (a client's, an upstream's) cannot lengthen a chain.
#[derive(Default, Clone, Copy)]
pub struct NameHasher(u64);

impl NameHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    /// A hasher that starts from `seed` rather than zero.
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            self.add(u64::from_le_bytes(eight));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // The length keeps `a` and `a\0` apart.
        self.add(u64::from_le_bytes(last) ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // Spread the high bits (hashbrown takes its tag from them) down too.
        let h = self.0.wrapping_mul(Self::K);
        h ^ (h >> 29)
    }
}

type NameSet = HashSet<Arc<str>, BuildHasherDefault<NameHasher>>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    /// `*`: any run without `/`.
    Star,
    /// `**`: any run.
    DoubleStar,
}

/// One compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    source: Arc<str>,
    tokens: Vec<Token>,
}

impl Glob {
    /// `segments`: whether `/` separates segments that `*` stays within.
    fn compile(source: &str, segments: bool) -> Self {
        let mut tokens = Vec::new();
        let mut literal = Vec::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'*' {
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                let double = bytes.get(i + 1) == Some(&b'*');
                // `***` is `**`; consecutive wildcards collapse.
                let token = if double || !segments { Token::DoubleStar } else { Token::Star };
                match tokens.last_mut() {
                    Some(last @ Token::Star) if double => *last = Token::DoubleStar,
                    Some(Token::Star | Token::DoubleStar) => {}
                    _ => tokens.push(token),
                }
                i += if double { 2 } else { 1 };
            } else {
                literal.push(bytes[i]);
                i += 1;
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Self { source: source.into(), tokens }
    }

    /// Whether `text` is free of `/` where a `*` (not `**`) must match it.
    fn within(token: &Token, text: &[u8]) -> bool {
        !matches!(token, Token::Star) || !text.contains(&b'/')
    }

    pub fn matches(&self, text: &str) -> bool {
        let s = text.as_bytes();
        // Cheap exits on a leading or trailing literal, its outer byte
        // compared first: most names fail most globs there.
        if let Some(Token::Literal(first)) = self.tokens.first()
            && !(s.first() == first.first() && s.starts_with(first))
        {
            return false;
        }
        if let Some(Token::Literal(last)) = self.tokens.last()
            && !(s.last() == last.last() && s.ends_with(last))
        {
            return false;
        }
        // The shapes allowlists are made of, matched without a table: a
        // prefix, a suffix, both, or a lone wildcard.
        match self.tokens.as_slice() {
            [wild @ (Token::Star | Token::DoubleStar)] => Self::within(wild, s),
            [Token::Literal(first), wild @ (Token::Star | Token::DoubleStar)] => {
                Self::within(wild, &s[first.len()..])
            }
            [wild @ (Token::Star | Token::DoubleStar), Token::Literal(last)] => {
                Self::within(wild, &s[..s.len() - last.len()])
            }
            [Token::Literal(first), wild @ (Token::Star | Token::DoubleStar), Token::Literal(last)] => {
                s.len() >= first.len() + last.len()
                    && Self::within(wild, &s[first.len()..s.len() - last.len()])
            }
            _ => self.matches_table(s),
        }
    }

    /// The general matcher, for any sequence of tokens.
    fn matches_table(&self, s: &[u8]) -> bool {
        // can[j]: the tokens from the current one on match s[j..].
        // Computed from the last token back, one row at a time.
        let n = s.len();
        let mut next = vec![false; n + 1];
        next[n] = true;
        let mut row = vec![false; n + 1];
        for token in self.tokens.iter().rev() {
            match token {
                Token::Literal(lit) => {
                    for j in 0..=n {
                        row[j] = s[j..].starts_with(lit) && next[j + lit.len()];
                    }
                }
                Token::Star | Token::DoubleStar => {
                    let crosses = matches!(token, Token::DoubleStar);
                    row[n] = next[n];
                    for j in (0..n).rev() {
                        row[j] = next[j] || ((crosses || s[j] != b'/') && row[j + 1]);
                    }
                }
            }
            std::mem::swap(&mut row, &mut next);
        }
        next[0]
    }
}

/// A set of patterns: exact names looked up in O(1), globs tried in order.
/// Only the globs a name can match are tried: those whose leading literal
/// opens with the name's first byte, and those that open with a wildcard.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    exact: NameSet,
    globs: Vec<Glob>,
    /// Indexes into `globs` by the first byte of their leading literal,
    /// sorted by that byte, each list in order.
    by_first: Vec<(u8, Vec<usize>)>,
    /// Indexes of the globs that open with a wildcard, in order.
    open: Vec<usize>,
}

impl PatternSet {
    /// `segments`: whether `*` stays within `/`-separated segments (URIs).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>, segments: bool) -> Self {
        let mut set = Self::default();
        for pattern in patterns {
            if !pattern.contains('*') {
                set.exact.insert(pattern.into());
                continue;
            }
            let index = set.globs.len();
            let glob = Glob::compile(pattern, segments);
            match glob.tokens.first() {
                Some(Token::Literal(literal)) if !literal.is_empty() => {
                    let byte = literal[0];
                    match set.by_first.binary_search_by_key(&byte, |(b, _)| *b) {
                        Ok(at) => set.by_first[at].1.push(index),
                        Err(at) => set.by_first.insert(at, (byte, vec![index])),
                    }
                }
                _ => set.open.push(index),
            }
            set.globs.push(glob);
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    /// The first pattern that matches `name`, if any.
    pub fn find(&self, name: &str) -> Option<&Arc<str>> {
        if !self.exact.is_empty()
            && let Some(exact) = self.exact.get(name)
        {
            return Some(exact);
        }
        let keyed = name
            .as_bytes()
            .first()
            .and_then(|byte| self.by_first.binary_search_by_key(byte, |(b, _)| *b).ok())
            .map_or(&[][..], |at| &self.by_first[at].1[..]);
        let tried = |index: &usize| self.globs.get(*index).filter(|glob| glob.matches(name));
        // With one list of candidates empty, the other is the order.
        if self.open.is_empty() || keyed.is_empty() {
            let candidates = if self.open.is_empty() { keyed } else { &self.open[..] };
            return candidates.iter().find_map(tried).map(|glob| &glob.source);
        }
        // The candidates of both lists, in the order of the policy.
        let (mut keyed, mut open) = (keyed.iter().peekable(), self.open.iter().peekable());
        loop {
            let index = match (keyed.peek(), open.peek()) {
                (Some(&&k), Some(&&o)) if k < o => keyed.next(),
                (_, Some(_)) => open.next(),
                (Some(_), None) => keyed.next(),
                (None, None) => return None,
            };
            if let Some(glob) = index.and_then(|&i| self.globs.get(i))
                && glob.matches(name)
            {
                return Some(&glob.source);
            }
        }
    }
}

/// Checks a pattern as written in the policy.
pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a pattern cannot be empty".into());
    }
    if pattern.chars().any(char::is_control) {
        return Err(format!("pattern `{}` contains a control character", pattern.escape_debug()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::compile(p, true)
    }

    #[test]
    fn single_star_stays_within_a_segment() {
        assert!(glob("search_*").matches("search_docs"));
        assert!(glob("search_*").matches("search_"));
        assert!(!glob("search_*").matches("searchdocs"));
        assert!(!glob("search_*").matches("search_a/b"));
        assert!(glob("*_admin").matches("delete_admin"));
        assert!(glob("a*b*c").matches("aXXbYYc"));
        assert!(!glob("a*b*c").matches("aXXbYY"));
        assert!(glob("*").matches("anything"));
        assert!(glob("*").matches(""));
        assert!(!glob("*").matches("a/b"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(glob("file:///public/**").matches("file:///public/a/b/c.txt"));
        assert!(glob("file:///public/**").matches("file:///public/"));
        assert!(!glob("file:///public/**").matches("file:///private/x"));
        assert!(!glob("file:///public/*").matches("file:///public/a/b"));
        assert!(glob("file:///public/*").matches("file:///public/a"));
        assert!(glob("**/secret").matches("x/y/secret"));
        assert!(glob("a***b").matches("a/x/b"));
    }

    #[test]
    fn matching_is_exact_about_bytes() {
        assert!(!glob("delete_*").matches("Delete_x"));
        assert!(!glob("dеlete_*").matches("delete_x"), "Cyrillic е is not e");
        assert!(glob("ünï*").matches("ünïcode"));
    }

    #[test]
    fn names_have_no_segments() {
        let names = PatternSet::new(["*", "github/*"], false);
        assert_eq!(names.find("ns/tool").map(|p| &**p), Some("*"));
        assert!(Glob::compile("github/*", false).matches("github/a/b"));
        assert!(!Glob::compile("github/*", true).matches("github/a/b"));
    }

    #[test]
    fn the_common_shapes_agree_with_the_general_matcher() {
        for p in ["*", "**", "a*", "a**", "*b", "**b", "a*b", "a**b", "ab*ab", "a/*", "*/b"] {
            for text in
                ["", "a", "b", "ab", "aab", "abab", "aXb", "a/b", "a/x/b", "ba", "x/b", "a/", "abXab", "aba"]
            {
                for segments in [true, false] {
                    let glob = Glob::compile(p, segments);
                    let general = glob.matches_table(text.as_bytes());
                    assert_eq!(glob.matches(text), general, "{p} {text} {segments}");
                }
            }
        }
    }

    #[test]
    fn the_first_matching_glob_in_the_policy_is_reported() {
        let set = PatternSet::new(["*_x", "a*", "ab*", "*", "b*"], false);
        assert_eq!(set.find("a_x").map(|p| &**p), Some("*_x"));
        assert_eq!(set.find("abc").map(|p| &**p), Some("a*"));
        assert_eq!(set.find("bc").map(|p| &**p), Some("*"));
        assert_eq!(set.find("").map(|p| &**p), Some("*"));
        let set = PatternSet::new(["b*", "a*", "ab*", "*c"], false);
        assert_eq!(set.find("abc").map(|p| &**p), Some("a*"));
        assert_eq!(set.find("bc").map(|p| &**p), Some("b*"));
        assert_eq!(set.find("xc").map(|p| &**p), Some("*c"));
        assert_eq!(set.find("x"), None);
        assert_eq!(set.find(""), None);
    }

    #[test]
    fn pathological_patterns_stay_linear() {
        let pattern = glob(&"*a".repeat(20));
        let text = "a".repeat(5000) + "b";
        assert!(!pattern.matches(&text));
    }

    #[test]
    fn sets_prefer_exact_and_report_the_pattern() {
        let set = PatternSet::new(["read_file", "search_*", "**"], true);
        assert_eq!(set.find("read_file").map(|p| &**p), Some("read_file"));
        assert_eq!(set.find("search_web").map(|p| &**p), Some("search_*"));
        assert_eq!(set.find("x/y").map(|p| &**p), Some("**"));
        assert!(PatternSet::new(["a"], true).find("b").is_none());
        assert!(PatternSet::default().is_empty());
    }

    #[test]
    fn the_name_hash_spreads_names_that_differ_a_little() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<NameHasher>::default();
        let names: Vec<String> = (0..20_000)
            .flat_map(|i| {
                [
                    format!("tool_{i}"),
                    format!("github/create_issue_{i:08}"),
                    format!("{i}"),
                    "x".repeat(i % 300),
                ]
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let hashes: HashSet<u64> = names.iter().map(|name| build.hash_one(name.as_str())).collect();
        assert_eq!(hashes.len(), names.len(), "names share a hash");
        // hashbrown's buckets come from the low bits, its tags from the top seven.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!((low.len(), top.len()), (4096, 128));
        // And the set finds exactly its own names.
        let set = PatternSet::new(names.iter().take(5_000).map(String::as_str), false);
        assert!(names.iter().take(5_000).all(|name| set.find(name).is_some()));
        assert!(names.iter().skip(5_000).all(|name| set.find(name).is_none()));
    }
}
