use super::Endpoint;
use super::query::{Query, percent_decode, wants_pretty};
use super::response::indent;

#[test]
fn indenting_keeps_every_token_and_the_key_order() {
    let compact = br#"{"b":[1,{"x":"a,b:{[\"}"}],"a":{},"c":[],"d":null}"#;
    let pretty = String::from_utf8(indent(compact)).unwrap();
    assert_eq!(
        pretty,
        "{\n  \"b\": [\n    1,\n    {\n      \"x\": \"a,b:{[\\\"}\"\n    }\n  ],\n  \"a\": {},\n  \"c\": [],\n  \"d\": null\n}\n"
    );
    let again: serde_json::Value = serde_json::from_str(&pretty).unwrap();
    let original: serde_json::Value = serde_json::from_slice(compact).unwrap();
    assert_eq!(again, original);
    assert_eq!(indent(pretty.as_bytes()), pretty.as_bytes());
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%4"), None);
    assert_eq!(percent_decode("%ff"), None);
    assert_eq!(percent_decode("%+1"), None);
    assert_eq!(percent_decode("%"), None);
    assert_eq!(percent_decode("a%2"), None);
    assert_eq!(percent_decode(""), Some(String::new()));
}

#[test]
fn an_escaped_plus_is_a_plus_and_a_bare_plus_is_a_space() {
    assert_eq!(percent_decode("a%2Bb").as_deref(), Some("a+b"));
    assert_eq!(percent_decode("a%2bb").as_deref(), Some("a+b"));
    assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
    assert_eq!(percent_decode("%2B+%2B").as_deref(), Some("+ +"));
    assert_eq!(percent_decode("100%25").as_deref(), Some("100%"));
    assert_eq!(percent_decode("%2525").as_deref(), Some("%25"));
}

#[test]
fn multi_byte_utf8_decodes_whole_and_broken_sequences_are_refused() {
    assert_eq!(percent_decode("gr%C3%BCn").as_deref(), Some("grün"));
    assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
    assert_eq!(percent_decode("%F0%9F%A6%80").as_deref(), Some("🦀"));
    // Unescaped UTF-8 in the query passes through.
    assert_eq!(percent_decode("grün").as_deref(), Some("grün"));
    // A sequence cut short, or an overlong encoding of `/`.
    assert_eq!(percent_decode("%E2%82"), None);
    assert_eq!(percent_decode("%C0%AF"), None);
}

#[test]
fn a_capability_query_is_decoded_and_a_bad_one_is_a_400_naming_it() {
    let capability = |query: &str| Query::parse(query, Endpoint::Nodes).map(|q| q.capability);
    assert_eq!(
        capability("capability=c%2B%2B").unwrap().as_deref(),
        Some("c++")
    );
    assert_eq!(
        capability("capability=a+b").unwrap().as_deref(),
        Some("a b")
    );
    assert_eq!(
        capability("capability=gr%C3%BCn").unwrap().as_deref(),
        Some("grün")
    );
    for bad in ["capability=%zz", "capability=%C3", "capability=%ff"] {
        let refused = capability(bad).unwrap_err();
        assert_eq!(refused.status, 400, "{bad}");
        let body: serde_json::Value = serde_json::from_slice(&refused.body.to_vec()).unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("Invalid capability"),
            "{bad}: {body}"
        );
    }
}

#[test]
fn a_query_name_is_decoded_as_a_value_is() {
    let nodes = |query: &str| Query::parse(query, Endpoint::Nodes);
    // Each name escaped as a form encoder may: taken, not ignored.
    let query = nodes("st%61tus=all&node%5Fid=7&c%61pability=raft&ind%65x=3").unwrap();
    assert!(query.include_suspected);
    assert_eq!(query.exclude, Some(7));
    assert_eq!(query.capability.as_deref(), Some("raft"));
    assert_eq!(query.index, Some(3));
    // The same name twice, once escaped, is a repeat.
    let refused = nodes("status=all&st%61tus=active").unwrap_err();
    assert_eq!(refused.status, 400);
    let body: serde_json::Value = serde_json::from_slice(&refused.body.to_vec()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("Repeated"),
        "{body}"
    );
    // A name that does not decode is a 400 on /nodes; /leader ignores it, as any name
    // it does not take.
    let refused = nodes("st%zzatus=all").unwrap_err();
    assert_eq!(refused.status, 400);
    let body: serde_json::Value = serde_json::from_slice(&refused.body.to_vec()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("st%zzatus"),
        "{body}"
    );
    assert!(Query::parse("x%zz=1", Endpoint::Leader).is_ok());
    assert_eq!(
        Query::parse("ind%65x=4", Endpoint::Leader).unwrap().index,
        Some(4)
    );
}

#[test]
fn pretty_is_read_decoded_as_any_other_name_and_value() {
    assert!(wants_pretty("pretty"));
    assert!(wants_pretty("a=1&pretty=true"));
    assert!(wants_pretty("pr%65tty"));
    assert!(!wants_pretty("pretty=false"));
    assert!(!wants_pretty("pretty=fals%65"));
    assert!(!wants_pretty("pretty=%30"));
    assert!(!wants_pretty("prettyx=1"));
    assert!(!wants_pretty(""));
}

#[test]
fn a_pretty_body_is_indented_as_it_is_written_and_read() {
    use std::io::Read;
    let compact = r#"{"nodes":[{"a":[],"b":{"c":"x,y:{"},"d":[1,2]},{}],"registry_version":7}"#;
    let expected = indent(compact.as_bytes());
    let response = super::Response::embedded(super::JSON, compact).pretty();
    assert_eq!(response.body.len(), expected.len());
    assert_eq!(response.body.to_vec(), expected);
    assert_eq!(response.body.owned_bytes(), 0, "no copy made up front");
    for size in [1, 7, 64, 4096] {
        let mut body = super::Response::embedded(super::JSON, compact)
            .pretty()
            .body;
        let mut read = Vec::new();
        let mut buf = vec![0; size];
        loop {
            let n = body.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        assert_eq!(read, expected, "read {size} bytes at a time");
    }
}
