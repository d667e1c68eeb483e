//! The box's OpenAPI document (`src/web/openapi.yaml`, served at `/api/v1/openapi.yaml`)
//! names exactly the routes the router has: a route added without documentation, or a
//! documented one that went away, fails here. The routes are read from the `.route(...)`
//! calls of the router's sources (no YAML parser is in the lock; the document's layout,
//! paths at two spaces and methods at four, is simple enough to read by line).
//! hil-tests/box-schemathesis.sh checks the rest against a running box.

use std::collections::BTreeSet;

const DOCUMENT: &str = include_str!("../src/web/openapi.yaml");

/// The files whose routes `http::router` has: its own and those it merges.
const SOURCES: &[(&str, &str)] = &[
    ("http", include_str!("../src/http.rs")),
    ("bus_api", include_str!("../src/bus_api.rs")),
    ("whep", include_str!("../src/whep/mod.rs")),
    ("auth", include_str!("../src/auth/mod.rs")),
    ("update", include_str!("../src/update/api.rs")),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

type Operation = (String, String);

/// The (path, method) pairs of the `.route("/path", get(a).post(b))` calls in `source`.
fn routes(source: &str) -> BTreeSet<Operation> {
    let mut out = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = source[at + ".route(".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('"') else {
            continue;
        };
        let Some(end) = rest.find('"') else { continue };
        let path = &rest[..end];
        // The method router: up to the `)` that closes `.route(`; its calls at the top
        // level are the methods.
        let mut depth = 0;
        let mut word = String::new();
        for c in rest[end + 1..].chars() {
            match c {
                '(' if depth == 0 => {
                    if METHODS.contains(&word.as_str()) {
                        out.insert((path.to_string(), word.to_ascii_uppercase()));
                    }
                    depth += 1;
                }
                '(' => depth += 1,
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                _ => {}
            }
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                word.clear();
            }
        }
    }
    out
}

/// The (path, method) pairs of the document's `paths`.
fn documented(doc: &str) -> BTreeSet<Operation> {
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in doc.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = p.strip_suffix(':').map(|p| format!("/{p}"));
        } else if let (Some(m), Some(p)) = (line.strip_prefix("    "), &path) {
            if let Some(m) = m.strip_suffix(':').filter(|m| METHODS.contains(m)) {
                out.insert((p.clone(), m.to_ascii_uppercase()));
            }
        }
    }
    out
}

#[test]
fn the_openapi_document_has_every_route_of_the_router_and_no_other() {
    let mut routed = BTreeSet::new();
    for (name, source) in SOURCES {
        let found = routes(source);
        assert!(!found.is_empty(), "no routes read from {name}");
        routed.extend(found);
    }
    // A module merged into the router whose source is not read here would escape.
    let http = SOURCES[0].1;
    for (at, _) in http.match_indices(".merge(crate::") {
        let module = http[at + ".merge(crate::".len()..]
            .split("::")
            .next()
            .unwrap_or("");
        assert!(
            SOURCES.iter().any(|(n, _)| *n == module),
            "the router merges crate::{module}'s routes: add its source to SOURCES"
        );
    }
    let doc = documented(DOCUMENT);
    let undocumented: Vec<_> = routed.difference(&doc).collect();
    let gone: Vec<_> = doc.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from src/web/openapi.yaml: {undocumented:?}"
    );
    assert!(
        gone.is_empty(),
        "src/web/openapi.yaml documents routes the router does not have: {gone:?}"
    );
    // Spot checks that both readers work.
    for op in [
        ("/api/v1/openapi.yaml", "GET"),
        ("/whep/session/{id}", "PATCH"),
    ] {
        assert!(
            doc.contains(&(op.0.to_string(), op.1.to_string())),
            "{op:?}"
        );
    }
}
