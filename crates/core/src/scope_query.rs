//! Scope queries: `documents.read AND (documents.write OR admin)`, asked of a key's scope
//! set on verification. Parsed once (the server keeps parsed queries by their text),
//! evaluated over the key's set without allocating.
//!
//! Grammar: `query := all (OR all)*`, `all := atom (AND atom)*`, `atom := scope | ( query )`.
//! `AND` binds tighter than `OR`; the operators are upper case. A `*` segment in a key's
//! scope grants exactly one dot-separated segment of an asked scope (`documents.*` grants
//! `documents.read`, not `documents.read.all`); terms of the query itself are literal.

use std::collections::BTreeSet;

use crate::{Error, policy::RESERVED_SCOPES, validate::MAX_LABEL_CHARS};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most scope terms in one query.
pub const MAX_QUERY_TERMS: usize = 100;
/// Deepest nesting of parentheses.
pub const MAX_QUERY_DEPTH: usize = 32;
/// Up to this many distinct unmet terms the missing set is the exact minimum; beyond it,
/// the smallest one found branch by branch (still sufficient, possibly not minimal).
const EXACT_MISSING_TERMS: usize = 12;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Scope(String),
    All(Vec<Node>),
    Any(Vec<Node>),
}

/// Whether the scopes `held` grant `asked`: held as such, or by a held scope with `*`
/// segments matching one segment each. keyward's own scopes (`admin`, `verify`, …) are
/// granted only as such: the ceiling rule lets a `keys:write` caller give a key `*`, which
/// must not then pass an application's check for `admin`.
pub fn grants(held: &BTreeSet<String>, asked: &str) -> bool {
    held.contains(asked)
        || (!RESERVED_SCOPES.contains(&asked) && held.iter().any(|scope| scope.contains('*') && matches(scope, asked)))
}

fn matches(pattern: &str, asked: &str) -> bool {
    let mut asked = asked.split('.');
    for segment in pattern.split('.') {
        match asked.next() {
            Some(part) if segment == "*" || segment == part => {}
            _ => return false,
        }
    }
    asked.next().is_none()
}

impl Query {
    /// Parses `text`; a malformed query is INVALID_ARGUMENT naming `field` and the
    /// 1-based character position of the fault.
    pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
        let fail = |position: usize, what: String| Error::invalid(field, format!("at character {position}: {what}"));
        // Bytes first, so a huge text is refused before it is counted.
        if text.len() > 4 * MAX_QUERY_CHARS || text.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::invalid(field, format!("must be at most {MAX_QUERY_CHARS} characters")));
        }
        // Refused rather than treated as space, so no query echoed in an error carries one.
        if let Some(index) = text.chars().position(char::is_control) {
            return Err(fail(index + 1, "a control character is not allowed".into()));
        }
        let tokens = tokens(text);
        let mut parser = Parser { tokens: &tokens, next: 0, terms: 0, end: text.chars().count() + 1 };
        let root = parser.any(0).map_err(|(position, what)| fail(position, what))?;
        if let Some(token) = parser.peek() {
            return Err(fail(token.position, format!("unexpected {}: expected AND, OR or the end", token.shown())));
        }
        Ok(Self { root })
    }

    /// Whether `held` satisfies the query. Allocates nothing.
    pub fn holds(&self, held: &BTreeSet<String>) -> bool {
        self.root.holds(&|asked| grants(held, asked))
    }

    /// The smallest set of scopes which, added to `held` and `given`, would satisfy the
    /// query; sorted. Empty when it already holds.
    pub fn missing(&self, held: &BTreeSet<String>, given: &[&str]) -> Vec<String> {
        let granted = |asked: &str| given.contains(&asked) || grants(held, asked);
        if self.root.holds(&granted) {
            return Vec::new();
        }
        let mut unmet = BTreeSet::new();
        self.root.unmet(&granted, &mut unmet);
        let unmet: Vec<&str> = unmet.into_iter().collect();
        if unmet.len() <= EXACT_MISSING_TERMS {
            // Every subset by increasing size: the first that satisfies is a minimum.
            let all = 1u32 << unmet.len();
            for size in 1..=unmet.len() as u32 {
                for mask in (1..all).filter(|mask| mask.count_ones() == size) {
                    let chosen = |asked: &str| {
                        granted(asked) || unmet.iter().enumerate().any(|(i, t)| mask & (1 << i) != 0 && *t == asked)
                    };
                    if self.root.holds(&chosen) {
                        return unmet
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, t)| (*t).to_owned())
                            .collect();
                    }
                }
            }
        }
        let mut cover: Vec<String> = self.root.cover(&granted).into_iter().map(str::to_owned).collect();
        cover.sort();
        cover.dedup();
        cover
    }
}

impl Node {
    fn holds(&self, granted: &impl Fn(&str) -> bool) -> bool {
        match self {
            Self::Scope(scope) => granted(scope),
            Self::All(nodes) => nodes.iter().all(|node| node.holds(granted)),
            Self::Any(nodes) => nodes.iter().any(|node| node.holds(granted)),
        }
    }

    fn unmet<'a>(&'a self, granted: &impl Fn(&str) -> bool, into: &mut BTreeSet<&'a str>) {
        match self {
            Self::Scope(scope) if !granted(scope) => {
                into.insert(scope);
            }
            Self::Scope(_) => {}
            Self::All(nodes) | Self::Any(nodes) => nodes.iter().for_each(|node| node.unmet(granted, into)),
        }
    }

    /// A sufficient set of unmet scopes, choosing the smallest branch of each `OR`.
    fn cover(&self, granted: &impl Fn(&str) -> bool) -> BTreeSet<&str> {
        match self {
            Self::Scope(scope) if granted(scope) => BTreeSet::new(),
            Self::Scope(scope) => BTreeSet::from([scope.as_str()]),
            Self::All(nodes) => nodes.iter().flat_map(|node| node.cover(granted)).collect(),
            Self::Any(nodes) => {
                nodes.iter().map(|node| node.cover(granted)).min_by_key(BTreeSet::len).unwrap_or_default()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    Open,
    Close,
    And,
    Or,
    Scope(&'a str),
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind<'a>,
    /// 1-based character position of the token's first character.
    position: usize,
}

impl Token<'_> {
    fn shown(&self) -> String {
        match self.kind {
            Kind::Open => "`(`".into(),
            Kind::Close => "`)`".into(),
            Kind::And => "AND".into(),
            Kind::Or => "OR".into(),
            Kind::Scope(scope) => format!("scope `{scope}`"),
        }
    }
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    // The word being read: its byte start and its position.
    let mut word: Option<(usize, usize)> = None;
    for (index, (byte, c)) in text.char_indices().enumerate() {
        let position = index + 1;
        if c.is_whitespace() || c == '(' || c == ')' {
            if let Some((start, at)) = word.take() {
                tokens.push(Token { kind: word_kind(&text[start..byte]), position: at });
            }
            match c {
                '(' => tokens.push(Token { kind: Kind::Open, position }),
                ')' => tokens.push(Token { kind: Kind::Close, position }),
                _ => {}
            }
        } else if word.is_none() {
            word = Some((byte, position));
        }
    }
    if let Some((start, at)) = word {
        tokens.push(Token { kind: word_kind(&text[start..]), position: at });
    }
    tokens
}

fn word_kind(word: &str) -> Kind<'_> {
    match word {
        "AND" => Kind::And,
        "OR" => Kind::Or,
        scope => Kind::Scope(scope),
    }
}

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    next: usize,
    terms: usize,
    /// The position just past the text, where an unexpected end is reported.
    end: usize,
}

type Parsed<T> = Result<T, (usize, String)>;

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn any(&mut self, depth: usize) -> Parsed<Node> {
        let mut nodes = vec![self.all(depth)?];
        while self.peek().is_some_and(|token| token.kind == Kind::Or) {
            self.next += 1;
            nodes.push(self.all(depth)?);
        }
        Ok(joined(nodes, Node::Any))
    }

    fn all(&mut self, depth: usize) -> Parsed<Node> {
        let mut nodes = vec![self.atom(depth)?];
        while self.peek().is_some_and(|token| token.kind == Kind::And) {
            self.next += 1;
            nodes.push(self.atom(depth)?);
        }
        Ok(joined(nodes, Node::All))
    }

    fn atom(&mut self, depth: usize) -> Parsed<Node> {
        let Some(token) = self.peek() else {
            return Err((self.end, "unexpected end: expected a scope or `(`".into()));
        };
        self.next += 1;
        match token.kind {
            Kind::Scope(scope) => {
                self.terms += 1;
                if self.terms > MAX_QUERY_TERMS {
                    return Err((token.position, format!("more than {MAX_QUERY_TERMS} scopes")));
                }
                if scope.chars().count() > MAX_LABEL_CHARS || scope.chars().any(char::is_control) {
                    return Err((
                        token.position,
                        format!("a scope must be 1 to {MAX_LABEL_CHARS} characters without whitespace or control"),
                    ));
                }
                Ok(Node::Scope(scope.to_owned()))
            }
            Kind::Open => {
                if depth == MAX_QUERY_DEPTH {
                    return Err((token.position, format!("parentheses nest deeper than {MAX_QUERY_DEPTH}")));
                }
                let inner = self.any(depth + 1)?;
                match self.peek() {
                    Some(close) if close.kind == Kind::Close => {
                        self.next += 1;
                        Ok(inner)
                    }
                    Some(other) => Err((other.position, format!("unexpected {}: expected `)`", other.shown()))),
                    None => {
                        Err((self.end, format!("unexpected end: `(` at character {} is not closed", token.position)))
                    }
                }
            }
            Kind::Close | Kind::And | Kind::Or => {
                Err((token.position, format!("unexpected {}: expected a scope or `(`", token.shown())))
            }
        }
    }
}

/// One node for a run of the same operator, nested runs of it flattened: `(a AND b) AND c`
/// is one `All` of three.
fn joined(mut nodes: Vec<Node>, make: fn(Vec<Node>) -> Node) -> Node {
    if nodes.len() == 1
        && let Some(node) = nodes.pop()
    {
        return node;
    }
    let mut flat = Vec::with_capacity(nodes.len());
    for node in nodes {
        match (node, make(Vec::new())) {
            (Node::All(inner), Node::All(_)) | (Node::Any(inner), Node::Any(_)) => flat.extend(inner),
            (node, _) => flat.push(node),
        }
    }
    make(flat)
}

#[cfg(test)]
mod tests;
