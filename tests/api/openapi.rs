//! `GET /api/openapi.json`: a well-formed OpenAPI document that stays in
//! sync with the routes, checked both ways:
//!
//! 1. every operation the document names is routed by the server (calling
//!    it without a token never reaches the catch-all 404 or a 405);
//! 2. every route registered in `src/api/*.rs` (`resource("...")` and the
//!    methods chained on it) is in the document, and nothing else is.
//!
//! A new handler without `#[utoipa::path]`, or one left out of the
//! `paths(...)` of `src/api/openapi.rs`, fails the second check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::TestApp;

/// The methods a route may be chained with, as actix-web names them.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A (path pattern, upper-case method) pair: one operation.
type Operation = (String, String);

async fn served(app: &TestApp) -> Value {
    let res = app.http.get(app.url("/api/openapi.json")).send().await.expect("request sent");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert!(content_type.as_deref().is_some_and(|t| t.starts_with("application/json")), "{content_type:?}");
    res.json().await.expect("the document is JSON")
}

/// Every (path, method) operation of a document.
fn operations(doc: &Value) -> BTreeSet<Operation> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS.iter().chain(&["head", "options", "trace"]) {
            if item.get(*method).is_some() {
                ops.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    ops
}

/// The `{name}`s of a path pattern, in order.
fn placeholders(path: &str) -> Vec<&str> {
    path.split('{').skip(1).map(|rest| rest.split_once('}').expect("balanced braces").0).collect()
}

#[tokio::test]
async fn the_document_is_served_and_well_formed() {
    let app = TestApp::spawn().await;
    let doc = served(&app).await;

    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Ferry");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((bearer["type"].as_str(), bearer["scheme"].as_str()), (Some("http"), Some("bearer")), "{bearer}");

    // It is a document utoipa reads back unchanged.
    let parsed: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).expect("a valid OpenAPI document");
    assert_eq!(serde_json::to_value(&parsed).unwrap(), doc);
    assert_eq!(serde_json::to_value(ferry::api::document()).unwrap(), doc);

    let schemas = doc["components"]["schemas"].as_object().expect("component schemas");
    for name in [
        "ErrorBody",
        "Event",
        "Project",
        "FileChange",
        "AuditPage",
        "FilePath",
        "Blake3Hash",
        "IdempotencyKey",
        "ClientMessage",
        "ServerMessage",
        "EventMessage",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }

    // Every `$ref` points at a schema of the document.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "$ref {r} names no schema");
    }

    let mut operation_ids = BTreeSet::new();
    for (path, method) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let what = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{what}: no operationId"));
        assert!(operation_ids.insert(id.to_owned()), "{what}: operationId {id} is used twice");
        assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{what}: no tag");
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: no responses"));
        // Success is a 2xx, or 101 for the WebSocket upgrade.
        assert!(responses.keys().any(|s| s.starts_with('2') || s == "101"), "{what}: no success response");
        // Error answers are documented with the error shape.
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{what}: {status} does not answer ErrorBody"
                );
            }
        }
        // Operations that need a token say so, and document the 401.
        if let Some(security) = op["security"].as_array() {
            for requirement in security {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        doc["components"]["securitySchemes"].get(scheme).is_some(),
                        "{what}: unknown scheme {scheme}"
                    );
                }
            }
            assert!(responses.contains_key("401"), "{what}: needs a token but documents no 401");
        }
        // The answers many routes share are stated on each of them.
        let takes_json = op["requestBody"]["content"].get("application/json").is_some();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let idempotent = params.iter().any(|p| p["name"] == "Idempotency-Key");
        if takes_json {
            for status in ["400", "413", "415"] {
                assert!(responses.contains_key(status), "{what}: takes JSON but documents no {status}");
            }
        }
        if idempotent {
            let reused = responses.get("422").and_then(|r| r["description"].as_str()).unwrap_or_default();
            assert!(reused.contains("idempotency_key_reused"), "{what}: takes Idempotency-Key, no 422 reused");
        }
        if op["security"].is_array() {
            assert!(responses.contains_key("503"), "{what}: touches the database but documents no 503");
            assert!(responses["503"]["headers"].get("Retry-After").is_some(), "{what}: 503 without Retry-After");
        }
        // The path's placeholders and the path parameters are the same.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        let in_path: BTreeSet<&str> = placeholders(&path).into_iter().collect();
        assert_eq!(declared, in_path, "{what}: path parameters");
    }
}

/// The rules of the wire types are in the document, and the WebSocket's
/// messages are schemas the realtime operation names.
#[tokio::test]
async fn the_document_states_the_rules_and_the_websocket_messages() {
    let app = TestApp::spawn().await;
    let doc = served(&app).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Blake3Hash"]["pattern"], "^[0-9a-f]{64}$");
    assert_eq!(schemas["FilePath"]["maxLength"], 4096);
    assert_eq!(
        (schemas["Password"]["minLength"].as_u64(), schemas["Password"]["maxLength"].as_u64()),
        (Some(8), Some(1024))
    );
    assert_eq!(schemas["UpdateFilesRequest"]["properties"]["changes"]["maxItems"], 10_000);
    let limit = doc["paths"]["/api/projects/{project_id}/files-paginated"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .cloned()
        .expect("a limit parameter");
    assert_eq!((limit["schema"]["minimum"].as_i64(), limit["schema"]["maximum"].as_i64()), (Some(1), Some(1000)));

    let server: Vec<Value> = schemas["ServerMessage"]["oneOf"].as_array().cloned().unwrap_or_default();
    assert!(server.iter().any(|s| s["$ref"] == "#/components/schemas/EventMessage"), "{server:?}");
    let types: BTreeSet<&str> = server.iter().filter_map(|s| s["properties"]["type"]["enum"][0].as_str()).collect();
    assert_eq!(types, BTreeSet::from(["subscribed", "caught_up", "unsubscribed", "pong", "error"]));
    let ws = &doc["paths"]["/api/ws"]["get"]["x-websocket-messages"];
    assert_eq!(ws["client"]["$ref"], "#/components/schemas/ClientMessage");
    assert_eq!(ws["server"]["$ref"], "#/components/schemas/ServerMessage");
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A value for a path parameter that any route pattern accepts.
fn sample(param: &str) -> String {
    match param {
        "name" => "projects".to_owned(),
        p if p.contains("hash") => "0".repeat(64),
        _ => Uuid::new_v4().to_string(),
    }
}

/// Direction 1: what the document says exists, exists.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let doc = served(&app).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 30, "only {} operations documented", ops.len());

    let mut unrouted = Vec::new();
    for (pattern, method) in &ops {
        let mut path = pattern.clone();
        for param in placeholders(pattern) {
            path = path.replacen(&format!("{{{param}}}"), &sample(param), 1);
        }
        let op = &doc["paths"][pattern][method.to_lowercase()];
        let mut req = app.http.request(Method::from_bytes(method.as_bytes()).unwrap(), app.url(&path));
        if let Some(content) = op["requestBody"]["content"].as_object() {
            req = if content.contains_key("application/json") {
                req.header("content-type", "application/json").body("{}")
            } else {
                req.body(Vec::new())
            };
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str();
        let catch_all =
            status == StatusCode::NOT_FOUND && code == Some("not_found") && body["error"]["message"] == "no such route";
        let wrong_method = status == StatusCode::METHOD_NOT_ALLOWED || code == Some("method_not_allowed");
        if catch_all || wrong_method {
            unrouted.push(format!("{method} {pattern} (called as {path}): {status} {body}"));
        }
    }
    assert!(unrouted.is_empty(), "documented but not routed:\n{}", unrouted.join("\n"));
}

/// Direction 2: every route in the source is documented, and only those.
#[tokio::test]
async fn every_route_in_the_source_is_documented() {
    let app = TestApp::spawn().await;
    let documented = operations(&served(&app).await);
    let routed = source_routes(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"));
    assert!(routed.len() >= 30, "the source scan found only {} routes: {routed:?}", routed.len());

    let undocumented: Vec<String> = routed.difference(&documented).map(|(p, m)| format!("{m} {p}")).collect();
    let unknown: Vec<String> = documented.difference(&routed).map(|(p, m)| format!("{m} {p}")).collect();
    assert!(
        undocumented.is_empty(),
        "routed in src/api but not in the OpenAPI document (annotate the handler with #[utoipa::path] \
         and list it in src/api/openapi.rs):\n{}",
        undocumented.join("\n")
    );
    assert!(unknown.is_empty(), "in the OpenAPI document but not routed in src/api:\n{}", unknown.join("\n"));
}

// ---------------------------------------------------------------------------
// The source scan: a small reader of `resource("...").get(..).post(..)`.

/// Every (path, method) registered in the `*.rs` files of `dir`, with the
/// `/api` prefix for the modules `mod.rs` configures inside `web::scope("/api")`.
fn source_routes(dir: &Path) -> BTreeSet<Operation> {
    let mod_rs = code_of(&std::fs::read_to_string(dir.join("mod.rs")).expect("src/api/mod.rs"));
    let (api_scope, prefixes) = module_prefixes(&mod_rs);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut routes = BTreeSet::new();
    for file in files {
        let module = file.file_stem().unwrap().to_str().unwrap().to_owned();
        let src = code_of(&std::fs::read_to_string(&file).unwrap());
        for route in resources(&src) {
            let prefix = if module == "mod" {
                if api_scope.contains(&route.at) {
                    "/api"
                } else {
                    ""
                }
            } else {
                prefixes.get(&module).copied().unwrap_or_else(|| {
                    panic!(
                        "src/api/{module}.rs registers {:?} but mod.rs does not configure {module}::routes",
                        route.pattern
                    )
                })
            };
            assert!(
                !route.methods.is_empty() && route.unrecognized.is_empty(),
                "src/api/{module}.rs: cannot tell the methods of resource({:?}) (found {:?}, and {:?} that this scan \
                 does not read): chain .get/.post/.put/.patch/.delete, or extend the scan",
                route.pattern,
                route.methods,
                route.unrecognized
            );
            for method in route.methods {
                routes.insert((format!("{prefix}{}", normalize(&route.pattern)), method.to_uppercase()));
            }
        }
    }
    routes
}

/// The source without its comment lines (doc comments mention routes too).
fn code_of(src: &str) -> String {
    src.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n")
}

/// In mod.rs: the byte range of the `web::scope("/api")` expression, and
/// for each `.configure(module::routes)` the prefix its routes get.
fn module_prefixes(mod_rs: &str) -> (std::ops::Range<usize>, BTreeMap<String, &'static str>) {
    let start = mod_rs.find(r#"web::scope("/api")"#).expect("mod.rs opens web::scope(\"/api\")");
    let after = start + r#"web::scope("/api")"#.len();
    let scope = start..after + chain_end(&mod_rs[after..]);
    let mut prefixes = BTreeMap::new();
    let mut rest = 0;
    while let Some(i) = mod_rs[rest..].find(".configure(") {
        let at = rest + i;
        let arg = &mod_rs[at + ".configure(".len()..];
        let arg = &arg[..arg.find(')').unwrap()];
        if let Some(module) = arg.trim().strip_suffix("::routes") {
            let prefix = if scope.contains(&at) { "/api" } else { "" };
            prefixes.insert(module.trim().to_owned(), prefix);
        }
        rest = at + 1;
    }
    (scope, prefixes)
}

#[derive(Debug)]
struct Resource {
    pattern: String,
    /// Where `resource(` starts in the file.
    at: usize,
    methods: Vec<String>,
    /// Calls at the chain's level that register handlers in a way this scan
    /// does not read (`.route(`, `.to(`).
    unrecognized: Vec<String>,
}

/// Every `resource("pattern")` of a file and the methods chained on it.
fn resources(src: &str) -> Vec<Resource> {
    let needle = "resource(\"";
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some(i) = src[rest..].find(needle) {
        let at = rest + i;
        rest = at + needle.len();
        // `resource(` or `web::resource(`, not `some_resource(`.
        if src[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let literal_start = at + needle.len();
        let literal_len = src[literal_start..].find('"').expect("the pattern's closing quote");
        let pattern = src[literal_start..literal_start + literal_len].to_owned();
        let after_literal = literal_start + literal_len + 1;
        let close = src[after_literal..].find(')').expect("resource(...) closes");
        assert!(
            src[after_literal..after_literal + close].trim().is_empty(),
            "resource({pattern:?}, ...) takes one argument"
        );
        let chain_start = after_literal + close + 1;
        let chain = &src[chain_start..chain_start + chain_end(&src[chain_start..])];
        let (methods, unrecognized) = chained_calls(chain);
        found.push(Resource { pattern, at, methods, unrecognized });
    }
    found
}

/// How far the method chain starting at `src` goes: to the `)` that closes
/// the call around it, or a `,` or `;` at its own level. Strings are skipped.
fn chain_end(src: &str) -> usize {
    let mut depth = 0usize;
    let mut chars = src.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return i,
            ')' | ']' | '}' => depth -= 1,
            ',' | ';' if depth == 0 => return i,
            _ => {}
        }
    }
    src.len()
}

/// The `.name(` calls at the top level of a chain: known methods, and the
/// handler-registering calls this scan does not read.
fn chained_calls(chain: &str) -> (Vec<String>, Vec<String>) {
    let (mut methods, mut unrecognized) = (Vec::new(), Vec::new());
    let bytes = chain.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'(' => {
                    if depth == 0 {
                        let name_start =
                            chain[..i].rfind(|ch: char| !(ch.is_alphanumeric() || ch == '_')).map_or(0, |j| j + 1);
                        let name = &chain[name_start..i];
                        if chain[..name_start].trim_end().ends_with('.') {
                            if METHODS.contains(&name) {
                                methods.push(name.to_owned());
                            } else if ["route", "to"].contains(&name) {
                                unrecognized.push(format!(".{name}("));
                            }
                        }
                    }
                    depth += 1;
                }
                b')' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    (methods, unrecognized)
}

/// An actix-web pattern as OpenAPI writes it: `{name:regex}` becomes `{name}`.
fn normalize(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '{' {
            let mut depth = 1;
            let mut in_name = true;
            for c in chars.by_ref() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ':' if depth == 1 => in_name = false,
                    _ => {}
                }
                if depth == 0 {
                    out.push('}');
                    break;
                }
                if in_name {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[test]
fn the_source_scan_reads_chains_prefixes_and_patterns() {
    let src = r#"
pub fn routes(cfg: &mut web::ServiceConfig) {
    // cfg.service(resource("/commented").get(nothing));
    cfg.service(resource("/a/{id}").post(create).get(list))
        .service(
            resource("/b/{hash:[0-9a-f]{64}}")
                .app_data(super::json_config().limit(LIMIT).get(ignored))
                .put(store)
                .delete(drop),
        )
        .service(web::resource("/c").route(web::get().to(c)));
}
"#;
    let found = resources(&code_of(src));
    let summary: Vec<(String, Vec<String>, Vec<String>)> =
        found.into_iter().map(|r| (normalize(&r.pattern), r.methods, r.unrecognized)).collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        summary,
        vec![
            ("/a/{id}".to_owned(), s(&["post", "get"]), vec![]),
            ("/b/{hash}".to_owned(), s(&["put", "delete"]), vec![]),
            ("/c".to_owned(), vec![], s(&[".route("])),
        ]
    );

    let mod_rs = r#"
        .configure(health::routes)
        .service(
            web::scope("/api")
                .configure(accounts::routes)
                .configure(files::routes),
        )
        .configure(late::routes)
    "#;
    let (_, prefixes) = module_prefixes(mod_rs);
    assert_eq!(
        prefixes.into_iter().collect::<Vec<_>>(),
        vec![
            ("accounts".to_owned(), "/api"),
            ("files".to_owned(), "/api"),
            ("health".to_owned(), ""),
            ("late".to_owned(), "")
        ]
    );
}
