//! The OpenAPI document at `GET /openapi.json`: it names every route the server dispatches,
//! every error status the server can answer, and every field of every answer.
//!
//! CI also runs schemathesis against a live server with it (`.ci/schemathesis`).

use std::collections::BTreeSet;
use std::path::Path;

use cluster_gateway::server::http;
use serde_json::{Value, json};

use crate::support::{TestServer, agent, registration};

fn document() -> Value {
    serde_json::from_str(http::OPENAPI).expect("src/server/openapi.json is JSON")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} resolves"));
            resolve(doc, target)
        }
        None => value,
    }
}

#[test]
fn the_server_serves_the_document_it_embeds() {
    let server = TestServer::start();
    let mut answer = agent()
        .get(format!("{}/openapi.json", server.url))
        .call()
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(served, document());
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(served["info"]["version"], cluster_gateway::VERSION);
}

#[test]
fn every_route_the_server_dispatches_is_documented_and_nothing_else() {
    let doc = document();
    let mut served = BTreeSet::new();
    for (path, allow) in http::routes() {
        for method in allow.split(", ") {
            served.insert((path.to_owned(), method.to_ascii_lowercase()));
        }
    }
    assert!(served.contains(&("/".to_owned(), "get".to_owned())));
    assert!(served.contains(&("/openapi.json".to_owned(), "get".to_owned())));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    assert_eq!(
        served, documented,
        "routes served (left) and documented (right) differ"
    );
}

/// Every status our code answers with: each literal in `Response::error(<status>, ...)` in
/// src/, and the statuses tiny_http 0.12 answers on its own before a request reaches us (its
/// src/client.rs: 400 for an unparsable request, 408, 417 for an unknown `Expect`, 505).
fn error_statuses_in_the_code() -> BTreeSet<u16> {
    let mut statuses: BTreeSet<u16> = [400, 408, 417, 505].into();
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(path.read_dir().unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices("Response::error(") {
            let rest = text[at + "Response::error(".len()..].trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(status) = digits.parse() {
                statuses.insert(status);
            }
        }
    }
    statuses
}

#[test]
fn every_error_status_the_server_can_answer_is_documented_with_the_error_shape() {
    let doc = document();
    let statuses = error_statuses_in_the_code();
    // The scan finds what the routing and the body reader answer.
    for expected in [400, 404, 405, 413, 500, 503] {
        assert!(statuses.contains(&expected), "{statuses:?}");
    }
    let error_schema = json!({"$ref": "#/components/schemas/Error"});
    let mut referenced = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for code in operation["responses"].as_object().unwrap().keys() {
                referenced.insert(code.clone());
            }
        }
    }
    for status in statuses {
        let code = status.to_string();
        let response = &doc["components"]["responses"][&code];
        assert_eq!(
            response["content"]["application/json"]["schema"], error_schema,
            "components.responses.{code} is missing or not the error shape"
        );
        // 404 and 405 answer paths and methods the document does not list.
        if status != 404 && status != 405 {
            assert!(
                referenced.contains(&code),
                "no operation names {code} among its answers"
            );
        }
    }
    assert!(doc["components"]["responses"]["405"]["headers"]["Allow"].is_object());
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["required"],
        json!(["error", "status_code", "timestamp"])
    );
}

/// Asserts that `value` has every field `schema` requires and no field it does not describe,
/// recursing into objects and arrays.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if let Some(choices) = schema.get("oneOf").or(schema.get("anyOf")) {
        let choices = choices.as_array().unwrap();
        if value.is_null() {
            assert!(
                choices.iter().any(|c| c["type"] == "null"),
                "{at}: null not allowed"
            );
            return;
        }
        // An object takes the first choice whose required fields it has all (a list or a
        // delta answer to `/nodes`).
        let has_required = |choice: &Value| {
            resolve(doc, choice)["required"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|name| value.get(name.as_str().unwrap()).is_some())
        };
        let choice = choices
            .iter()
            .filter(|c| c["type"] != "null")
            .find(|c| !value.is_object() || has_required(c))
            .unwrap_or_else(|| panic!("{at}: no choice has every field it requires"));
        return conforms(doc, choice, value, at);
    }
    match value {
        Value::Object(fields) if schema["type"] == "object" => {
            let Some(properties) = schema["properties"].as_object() else {
                return;
            };
            for name in fields.keys() {
                assert!(
                    properties.contains_key(name),
                    "{at}.{name} is not documented"
                );
            }
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                assert!(
                    fields.contains_key(name),
                    "{at}.{name} is required but absent"
                );
            }
            for (name, field) in fields {
                conforms(doc, &properties[name], field, &format!("{at}.{name}"));
            }
        }
        Value::Array(items) if schema["type"] == "array" => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {
            let kind = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let documented = schema["type"].as_str().unwrap_or("?");
            assert!(
                documented == kind || (documented == "number" && kind == "integer"),
                "{at}: {kind}, documented as {documented}"
            );
        }
    }
}

fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    let response = resolve(doc, &doc["paths"][path][method]["responses"][status]);
    &response["content"]["application/json"]["schema"]
}

#[test]
fn every_field_of_every_answer_is_documented_and_every_required_one_is_sent() {
    let doc = document();
    let server = TestServer::start();
    let check = |method: &str, path: &str, (status, body): (u16, Value)| {
        let schema = answer_schema(&doc, method, path, &status.to_string());
        assert!(
            schema.is_object(),
            "{method} {path} {status} is not documented"
        );
        conforms(&doc, schema, &body, &format!("{method} {path} {status}"));
    };
    check("get", "/leader", server.get("/leader"));
    check(
        "post",
        "/register",
        server.post_json("/register", &registration(1)),
    );
    check(
        "post",
        "/register",
        server.post_json("/register", &registration(1)),
    );
    check(
        "post",
        "/register",
        server.post_json("/register", &registration(2)),
    );
    check("get", "/health", server.get("/health"));
    check("get", "/nodes", server.get("/nodes?status=all"));
    check("get", "/nodes", server.get("/nodes?changes=1"));
    check(
        "get",
        "/nodes",
        server.get("/nodes?index=1&changes=1&wait=0"),
    );
    check("get", "/leader", server.get("/leader"));
    check("get", "/stats", server.get("/stats"));
    let id = |n: u64| json!({"node_id": n});
    check("post", "/heartbeat", server.post_json("/heartbeat", &id(2)));
    check("post", "/heartbeat", server.post_json("/heartbeat", &id(9)));
    let leader = |n: u64| json!({"leader_id": n});
    check("post", "/leader", server.post_json("/leader", &leader(2)));
    check("post", "/leader", server.post_json("/leader", &leader(9)));
    check("post", "/remove", server.post_json("/remove", &id(2)));
    check("post", "/remove", server.post_json("/remove", &id(2)));
    // Errors: a bad query, a bad body.
    check("get", "/nodes", server.get("/nodes?status=some"));
    check("post", "/register", server.post("/register", "{"));
}

#[test]
fn the_stats_store_fields_are_documented() {
    let doc = document();
    let stats = &doc["components"]["schemas"]["Stats"]["properties"];
    for field in [
        "durable",
        "data_dir",
        "log_bytes",
        "snapshot_bytes",
        "last_compaction",
        "log_syncs",
        "store_error",
    ] {
        assert!(stats[field].is_object(), "{field}");
    }
    let registration = &doc["components"]["schemas"]["Registration"]["properties"];
    assert!(registration["previous_epoch"].is_object());
    for schema in ["Health", "RegisterResponse"] {
        let properties = &doc["components"]["schemas"][schema]["properties"];
        for field in [
            "epoch",
            "heartbeat_interval",
            "suspect_after",
            "node_timeout",
        ] {
            assert!(properties[field].is_object(), "{schema}.{field}");
        }
    }
}

#[test]
fn the_headers_and_query_parameters_are_documented() {
    let doc = document();
    let names = |path: &str, method: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p)["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let nodes = names("/nodes", "get");
    for name in [
        "node_id",
        "status",
        "capability",
        "index",
        "wait",
        "pretty",
        "If-None-Match",
        "changes",
    ] {
        assert!(nodes.contains(name), "GET /nodes: {name}");
    }
    for name in ["index", "wait", "pretty", "If-None-Match"] {
        assert!(
            names("/leader", "get").contains(name),
            "GET /leader: {name}"
        );
    }
    assert!(names("/register", "post").contains("Prefer"));
    for (path, method) in http::routes().flat_map(|(path, allow)| {
        allow
            .split(", ")
            .map(move |m| (path, m.to_ascii_lowercase()))
    }) {
        assert!(names(path, &method).contains("pretty"), "{method} {path}");
    }
    let headers = |path: &str, method: &str, status: &str| -> BTreeSet<String> {
        let response = resolve(&doc, &doc["paths"][path][method]["responses"][status]);
        response["headers"]
            .as_object()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default()
    };
    for name in ["ETag", "Vary", "Content-Encoding", "X-Gateway-Index"] {
        assert!(headers("/nodes", "get", "200").contains(name), "{name}");
    }
    assert!(headers("/leader", "get", "200").contains("ETag"));
    assert!(headers("/nodes", "get", "304").contains("ETag"));
    assert!(headers("/leader", "get", "304").contains("ETag"));
    for name in ["Preference-Applied", "Content-Encoding", "Vary"] {
        assert!(headers("/register", "post", "200").contains(name), "{name}");
    }
}

/// Every operation states its `security`, and it is what the server does: an operation a
/// gateway with tokens answers 401 without one has `[{"bearer": []}]` (the scheme the document
/// defines), and one it answers without a token has `[]`. Driven by the route table, so a route
/// added later is checked too.
#[test]
fn every_operation_states_the_security_the_server_applies() {
    let doc = document();
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "the scheme the operations name"
    );
    let server = TestServer::with(|config| {
        config.tokens.inline = Some(cluster_gateway::server::auth::Secret::new(
            "read:dashboard:r-0123456789abcdef\nwrite:ops:w-0123456789abcdef\n",
        ));
    });
    let mut open = BTreeSet::new();
    for (path, allow) in http::routes() {
        for method in allow.split(", ") {
            let operation = &doc["paths"][path][method.to_ascii_lowercase()];
            let Some(security) = operation.get("security") else {
                panic!("{method} {path} states no security");
            };
            // No token at all: the server's own answer says whether the route needs one.
            let answer = agent()
                .run(
                    ureq::http::Request::builder()
                        .method(method)
                        .uri(format!("{}{path}", server.url))
                        .body(if method == "POST" { "{}" } else { "" })
                        .unwrap(),
                )
                .unwrap();
            let needs_token = answer.status() == 401;
            let expected = if needs_token {
                json!([{ "bearer": [] }])
            } else {
                open.insert(format!("{method} {path}"));
                json!([])
            };
            assert_eq!(
                security,
                &expected,
                "{method} {path}: the server answers {} without a token",
                answer.status()
            );
        }
    }
    // As the documentation says: the health check (unless --protect-health), the dashboard
    // page and this document are open; every route with registry data needs a token.
    let expected: BTreeSet<String> = ["/", "/health", "/openapi.json"]
        .iter()
        .flat_map(|path| [format!("GET {path}"), format!("HEAD {path}")])
        .collect();
    assert_eq!(open, expected);
}
