use super::*;

const FILE: &str = r#"
[[routes]]
path = "/health"
public = true

[[routes]]
path = "/v1/documents/{id}"
methods = ["GET", "head"]
host = "api.example.com"
scopes = ["documents.read"]

[[routes]]
path = "/v1/search/*"
scopes = ["search"]
cost = [{ unit = "", amount = 2 }]
rate_limits = [{ name = "requests" }]
"#;

fn table() -> RouteTable {
    RouteTable::parse(FILE).expect("the example parses")
}

#[test]
fn first_matching_route_decides_and_no_match_is_none() {
    let table = table();
    assert!(table.rule("GET", "anything", "/health").is_some_and(|rule| rule.public));
    let read = table.rule("GET", "api.example.com", "/v1/documents/42?x=1").expect("documents");
    assert_eq!(read.scopes, ["documents.read"]);
    assert!(table.rule("HEAD", "API.example.com:443", "/v1/documents/42").is_some(), "case and port");
    assert!(table.rule("POST", "api.example.com", "/v1/documents/42").is_none(), "method");
    assert!(table.rule("GET", "other.example.com", "/v1/documents/42").is_none(), "host");
    assert!(table.rule("GET", "api.example.com", "/v1/documents/42/x").is_none(), "one segment");
    assert!(table.rule("GET", "api.example.com", "/v1/documents/").is_none(), "an empty id");
    let search = table.rule("POST", "h", "/v1/search/a/b").expect("prefix");
    assert_eq!((search.cost.clone(), search.rate.len()), (vec![Credit::new("", 2)], 1));
    assert!(table.rule("GET", "h", "/v1/search").is_some(), "the prefix itself");
    assert!(table.rule("GET", "h", "/v1/searching").is_none(), "a prefix is whole segments");
    assert!(table.rule("GET", "h", "/v1/other").is_none());
}

#[test]
fn non_canonical_paths_match_no_route() {
    let table = RouteTable::parse("[[routes]]\npath = \"/*\"\npublic = true\n").unwrap();
    assert!(table.rule("GET", "h", "/").is_some());
    assert!(table.rule("GET", "h", "/a/b/").is_some());
    assert!(table.rule("GET", "h", "/a%20b").is_some());
    for path in ["/a/../b", "/a/./b", "//a", "/a//b", "/%2e%2e/b", "/a%2Fb", "/a\\b", "/a%zz", "a", "/a%00"] {
        assert!(table.rule("GET", "h", path).is_none(), "{path}");
    }
    // Escapes are decoded before a literal is compared, as the upstream will decode them.
    let literal = RouteTable::parse("[[routes]]\npath = \"/docs\"\npublic = true\n").unwrap();
    assert!(literal.rule("GET", "h", "/%64ocs").is_some());
}

#[test]
fn bad_files_are_refused_with_their_line() {
    let cases = [
        ("[[routes]]\npath = \"v1\"\n", 2, "must start with /"),
        ("[[routes]]\npath = \"/a/*/b\"\n", 2, "segment"),
        ("[[routes]]\npath = \"/a\"\nmethods = [\"GE T\"]\n", 1, "not an HTTP method"),
        ("[[routes]]\npath = \"/a\"\npublic = true\nscopes = [\"x\"]\n", 1, "public route"),
        ("[[routes]]\npath = \"/a\"\n\n[[routes]]\npath = \"/b\"\ncost = [{ amount = 0 }]\n", 4, "cost"),
        ("[[routes]]\npath = \"/a\"\nscope = [\"x\"]\n", 3, "unknown field"),
        ("[[routes]]\npath = \"/a\"\nscopes = \"x\"\n", 3, "invalid type"),
        ("[routes\n", 1, ""),
        ("", 0, "no [[routes]]"),
    ];
    for (text, line, reason) in cases {
        let err = RouteTable::parse(text).expect_err(text);
        assert_eq!(err.line, line, "{text}: {err}");
        assert!(err.reason.contains(reason), "{text}: {err}");
    }
}

#[test]
fn the_key_comes_from_bearer_then_header_then_query() {
    let source = KeySource::new("X-Token", Some("api_key")).unwrap();
    let headers = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| *value)
    };
    assert_eq!(source.presented(headers(&[("authorization", "Bearer  k1 ")]), "/"), Presented::Key("k1"));
    assert_eq!(
        source.presented(headers(&[("authorization", "Basic x"), ("x-token", "k2")]), "/"),
        Presented::Key("k2")
    );
    assert_eq!(source.presented(headers(&[]), "/a?b=1&api_key=k3#f"), Presented::Key("k3"));
    assert_eq!(source.presented(headers(&[]), "/a?xapi_key=k3"), Presented::Missing);
    assert_eq!(source.presented(headers(&[("authorization", "Bearer")]), "/"), Presented::Missing);
    assert!(KeySource::new("bad header", None).is_err());
}

#[test]
fn each_verdict_has_its_status() {
    let statuses = [
        (Verdict::Valid, 200),
        (Verdict::Malformed, 401),
        (Verdict::NotFound, 401),
        (Verdict::Inactive, 401),
        (Verdict::Revoked, 401),
        (Verdict::Expired, 401),
        (Verdict::InsufficientScope, 403),
        (Verdict::NetworkNotAllowed, 403),
        (Verdict::UsageExceeded, 402),
        (Verdict::RateLimited, 429),
    ];
    for (verdict, status) in statuses {
        assert_eq!(Answer::of(verdict).status, status, "{verdict:?}");
    }
    assert_eq!(Answer::failed(&Error::Unavailable("down".into())).status, 503);
    assert_eq!(retry_after_secs(1_000, [2_001, 5_000].into_iter()), 2);
    assert_eq!(retry_after_secs(1_000, [900].into_iter()), 1);
}

#[test]
fn upstream_header_names() {
    assert_eq!(remaining_header("").as_deref(), Some("x-keyward-remaining"));
    assert_eq!(remaining_header("ADA").as_deref(), Some("x-keyward-remaining-ada"));
    assert_eq!(remaining_header("a b"), None);
    assert!(is_upstream_header("x-keyward-owner") && is_upstream_header("ratelimit"));
    assert!(!is_upstream_header("x-keywardish"));
}
