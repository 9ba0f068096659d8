use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn set(scopes: &[&str]) -> BTreeSet<String> {
    scopes.iter().map(|scope| (*scope).to_owned()).collect()
}

fn parse(text: &str) -> Query {
    Query::parse("scope_query", text).unwrap_or_else(|err| panic!("{text}: {err:?}"))
}

fn fault(text: &str) -> String {
    match Query::parse("scope_query", text) {
        Err(Error::InvalidArgument(violations)) => {
            assert_eq!(violations[0].field, "scope_query");
            violations[0].description.clone()
        }
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn and_binds_tighter_than_or_and_parentheses_regroup() {
    let held = set(&["a", "c"]);
    // a OR (b AND c): holds through a.
    assert!(parse("a OR b AND c").holds(&held));
    assert!(parse("b AND c OR a").holds(&held));
    // (a OR b) AND d: d is missing.
    assert!(!parse("(a OR b) AND d").holds(&held));
    assert!(parse("(b OR c) AND (a)").holds(&held));
    assert!(parse("((a))").holds(&held));
}

#[test]
fn a_star_segment_in_a_held_scope_grants_exactly_one_segment() {
    let held = set(&["documents.*", "*.admin"]);
    assert!(grants(&held, "documents.read"));
    assert!(!grants(&held, "documents.read.all"), "one segment only");
    assert!(!grants(&held, "documents"));
    assert!(grants(&held, "billing.admin"));
    assert!(!grants(&set(&["documents.read"]), "documents.*"), "a query term is literal");
    assert!(grants(&set(&["documents.*"]), "documents.*"), "held as such");
    assert!(grants(&set(&["a.*.c"]), "a.b.c"));
    assert!(!grants(&set(&["a.*.c"]), "a.b.d"));
    for reserved in crate::policy::RESERVED_SCOPES {
        assert!(grants(&set(&["*"]), "anything"));
        assert!(!grants(&set(&["*"]), reserved), "{reserved} is granted only as such");
        assert!(grants(&set(&["*", reserved]), reserved));
    }
}

#[test]
fn a_malformed_query_names_the_position_of_its_fault() {
    assert_eq!(fault("a AND"), "at character 6: unexpected end: expected a scope or `(`");
    assert_eq!(fault("a AND OR b"), "at character 7: unexpected OR: expected a scope or `(`");
    assert_eq!(fault("(a OR b"), "at character 8: unexpected end: `(` at character 1 is not closed");
    assert_eq!(fault("a AND\tb"), "at character 6: a control character is not allowed");
    assert_eq!(fault("é OR b\u{1b}[31m"), "at character 7: a control character is not allowed");
    assert_eq!(fault("a b"), "at character 3: unexpected scope `b`: expected AND, OR or the end");
    assert_eq!(fault("a)"), "at character 2: unexpected `)`: expected AND, OR or the end");
    assert_eq!(fault("é AND ()"), "at character 8: unexpected `)`: expected a scope or `(`", "characters, not bytes");
    assert_eq!(fault(""), "at character 1: unexpected end: expected a scope or `(`");
    assert_eq!(fault("a and b"), "at character 3: unexpected scope `and`: expected AND, OR or the end");
}

#[test]
fn sizes_are_bounded_before_the_query_is_used() {
    let terms = vec!["s"; MAX_QUERY_TERMS];
    parse(&terms.join(" OR "));
    let over = vec!["s"; MAX_QUERY_TERMS + 1].join(" OR ");
    assert_eq!(fault(&over), format!("at character {}: more than 100 scopes", over.len()));
    assert_eq!(fault(&"x".repeat(MAX_QUERY_CHARS + 1)), "must be at most 1000 characters");
    let deep = format!("{}a{}", "(".repeat(MAX_QUERY_DEPTH + 1), ")".repeat(MAX_QUERY_DEPTH + 1));
    assert_eq!(fault(&deep), format!("at character {}: parentheses nest deeper than 32", MAX_QUERY_DEPTH + 1));
    assert!(fault(&format!("{} OR b", "x".repeat(101))).starts_with("at character 1: a scope must be"));
}

#[test]
fn missing_is_the_smallest_set_that_satisfies() {
    let none = BTreeSet::new();
    // Branch by branch would take {a, b}; b alone satisfies both groups.
    assert_eq!(parse("(a OR b) AND (b OR c)").missing(&none, &[]), ["b"]);
    assert_eq!(parse("x AND (y OR z AND w)").missing(&set(&["w"]), &[]), ["x", "y"]);
    assert!(parse("x OR y").missing(&set(&["y"]), &[]).is_empty());
    // What is given (the required scopes already missing) counts as held.
    assert_eq!(parse("a OR (r AND b)").missing(&none, &["r"]), ["a"]);
}

#[test]
fn beyond_the_exact_bound_missing_still_satisfies() {
    let none = BTreeSet::new();
    let names: Vec<String> = (0..14).map(|i| format!("s{i:02}")).collect();
    let all = parse(&names.join(" AND "));
    assert_eq!(all.missing(&none, &[]), names, "every scope of an AND");
    // Each OR takes its smaller branch: the one-scope one.
    let text = format!("({}) AND (x OR y AND z)", names.join(" OR "));
    let missing = parse(&text).missing(&none, &[]);
    assert_eq!(missing, ["s00", "x"]);
    let with: BTreeSet<String> = missing.into_iter().collect();
    assert!(parse(&text).holds(&with));
}

/// An expression as generated, evaluated by a naive reading independent of the parser.
#[derive(Debug, Clone)]
enum Expr {
    Scope(String),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    fn eval(&self, held: &[String]) -> bool {
        match self {
            Self::Scope(scope) => held.iter().any(|h| naive_grant(h, scope)),
            Self::And(left, right) => left.eval(held) && right.eval(held),
            Self::Or(left, right) => left.eval(held) || right.eval(held),
        }
    }

    fn scopes(&self, into: &mut Vec<String>) {
        match self {
            Self::Scope(scope) => into.push(scope.clone()),
            Self::And(left, right) | Self::Or(left, right) => {
                left.scopes(into);
                right.scopes(into);
            }
        }
    }

    /// With the fewest parentheses precedence allows, or with every group parenthesized.
    fn render(&self, all_parens: bool) -> String {
        match self {
            Self::Scope(scope) => scope.clone(),
            Self::Or(left, right) => {
                let text = format!("{} OR {}", left.render(all_parens), right.render(all_parens));
                if all_parens { format!("({text})") } else { text }
            }
            Self::And(left, right) => {
                let side = |side: &Expr| match side {
                    Self::Or(..) if !all_parens => format!("({})", side.render(false)),
                    Self::Scope(_) | Self::And(..) | Self::Or(..) => side.render(all_parens),
                };
                let text = format!("{} AND {}", side(left), side(right));
                if all_parens { format!("({text})") } else { text }
            }
        }
    }
}

fn naive_grant(held: &str, asked: &str) -> bool {
    let held: Vec<&str> = held.split('.').collect();
    let asked: Vec<&str> = asked.split('.').collect();
    held.len() == asked.len() && held.iter().zip(&asked).all(|(h, a)| *h == "*" || h == a)
}

const NAMES: [&str; 9] = ["a", "b", "c", "d.e", "d.f", "d.e.g", "h.e", "x", "y"];
const HELD: [&str; 8] = ["a", "c", "d.*", "*.e", "d.*.g", "x.y", "*", "q"];

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = proptest::sample::select(&NAMES[..]).prop_map(|name| Expr::Scope(name.to_owned()));
    leaf.prop_recursive(5, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Expr::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner).prop_map(|(l, r)| Expr::Or(Box::new(l), Box::new(r))),
        ]
    })
}

fn held() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(&HELD[..], 0..HELD.len())
        .prop_map(|held| held.into_iter().map(str::to_owned).collect())
}

proptest! {
    #[test]
    fn the_evaluator_agrees_with_a_naive_one(expr in expr(), held in held(), all_parens in any::<bool>()) {
        let query = parse(&expr.render(all_parens));
        let set: BTreeSet<String> = held.iter().cloned().collect();
        prop_assert_eq!(query.holds(&set), expr.eval(&held));
    }

    #[test]
    fn missing_is_a_minimum_that_satisfies(expr in expr(), held in held()) {
        let query = parse(&expr.render(false));
        let set: BTreeSet<String> = held.iter().cloned().collect();
        let missing = query.missing(&set, &[]);
        let mut with = held.clone();
        with.extend(missing.iter().cloned());
        prop_assert!(expr.eval(&with), "adding {:?} satisfies", missing);
        // The naive minimum: every subset of the query's distinct scopes, smallest first.
        let mut names = Vec::new();
        expr.scopes(&mut names);
        names.sort();
        names.dedup();
        let smallest = (0u32..1 << names.len())
            .filter(|mask| {
                let mut with = held.clone();
                with.extend(names.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| n.clone()));
                expr.eval(&with)
            })
            .map(u32::count_ones)
            .min();
        prop_assert_eq!(Some(missing.len() as u32), smallest);
    }
}
