use super::*;
use serde_json::json;

fn register(body: Value) -> Result<Registration, Invalid> {
    Registration::from_body(body.as_object().unwrap())
}

fn valid() -> Value {
    json!({"node_id": 1, "ip_address": "10.0.0.1", "port": 5001, "capabilities": ["raft"]})
}

fn with(field: &str, value: Value) -> Value {
    let mut body = valid();
    body[field] = value;
    body
}

#[test]
fn accepts_the_original_registration_and_decimal_strings() {
    let reg = register(with("node_id", json!("42"))).unwrap();
    assert_eq!(reg.node_id, 42);
    assert_eq!(register(with("port", json!("5001"))).unwrap().port, 5001);
    assert_eq!(register(with("node_id", json!(0))).unwrap().node_id, 0);
    assert_eq!(
        register(with("ip_address", json!("node-1.local")))
            .unwrap()
            .ip_address,
        "node-1.local"
    );
    assert_eq!(
        register(with("ip_address", json!("::1")))
            .unwrap()
            .ip_address,
        "::1"
    );
}

#[test]
fn previous_epoch_is_optional_and_checked() {
    assert_eq!(register(valid()).unwrap().previous_epoch, None);
    assert_eq!(
        register(with("previous_epoch", json!(null)))
            .unwrap()
            .previous_epoch,
        None
    );
    assert_eq!(
        register(with("previous_epoch", json!("18b2-1f")))
            .unwrap()
            .previous_epoch
            .as_deref(),
        Some("18b2-1f")
    );
    for bad in [json!(""), json!(7), json!("a b"), json!("x".repeat(65))] {
        let error = register(with("previous_epoch", bad.clone())).unwrap_err().0;
        assert!(
            error.starts_with("Invalid previous_epoch"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn names_the_missing_field_like_the_original() {
    for name in ["node_id", "ip_address", "port", "capabilities"] {
        let mut body = valid();
        body.as_object_mut().unwrap().remove(name);
        assert_eq!(
            register(body).unwrap_err().0,
            format!("Missing required field: {name}")
        );
    }
}

#[test]
fn refuses_bad_values_naming_the_field() {
    let cases = [
        ("node_id", json!(-1)),
        ("node_id", json!(1.5)),
        ("node_id", json!(true)),
        ("node_id", json!(null)),
        ("node_id", json!("four")),
        ("port", json!(0)),
        ("port", json!(65536)),
        // 70,537 is 5,001 modulo 65,536: a port read with `as u16` would take it.
        ("port", json!(70537)),
        ("port", json!(u64::MAX)),
        ("port", json!("http")),
        ("ip_address", json!("")),
        ("ip_address", json!("a b")),
        ("ip_address", json!("a\u{7}b")),
        ("ip_address", json!(17)),
        ("capabilities", json!("raft")),
        ("capabilities", json!([""])),
        ("capabilities", json!([1])),
        ("metadata", json!([1])),
        ("metadata", json!("x")),
    ];
    for (field, value) in cases {
        let err = register(with(field, value.clone())).unwrap_err();
        assert!(
            err.0.starts_with(&format!("Invalid {field}")),
            "{field}={value}: {err}"
        );
    }
}

#[test]
fn closes_the_lenient_input_holes() {
    let refused = [
        ("node_id", json!(" 7\n")),
        ("node_id", json!("+7")),
        ("port", json!(" 8080 ")),
        ("ip_address", json!("-")),
        ("ip_address", json!("999.1.1.1")),
        ("ip_address", json!("1.2.3")),
        ("ip_address", json!("0.0.0.0")),
        ("ip_address", json!("::")),
        ("ip_address", json!("-host")),
        ("ip_address", json!("host-")),
        ("ip_address", json!("under_score")),
        ("ip_address", json!("a".repeat(64))),
        ("capabilities", json!(["raft\u{202E}"])),
        ("capabilities", json!(["ra\u{200B}ft"])),
        ("capabilities", json!(["\u{FEFF}raft"])),
        (
            "metadata",
            json!({"n": 1_180_591_620_717_411_303_424.0_f64}),
        ),
        ("metadata", json!({"deep": [{"n": -1e300}]})),
    ];
    for (field, value) in refused {
        let err = register(with(field, value.clone())).unwrap_err();
        assert!(
            err.0.starts_with(&format!("Invalid {field}")),
            "{field} = {value}: {err}"
        );
    }
    let big = register(
        serde_json::from_str(
            r#"{"node_id": 1, "ip_address": "a-1.example", "port": 1, "capabilities": [],
                "metadata": {"n": 1180591620717411303424}}"#,
        )
        .unwrap(),
    );
    assert!(big.unwrap_err().0.starts_with("Invalid metadata"));
    let kept = register(with(
        "metadata",
        json!({"max": u64::MAX, "min": i64::MIN, "f": 0.5, "caf\u{e9}": "\u{e9}t\u{e9}"}),
    ))
    .unwrap();
    assert_eq!(kept.metadata.unwrap()["max"], json!(u64::MAX));
    for fine in [
        "10.0.0.1",
        "::1",
        "node-1.local",
        "a.b-c.d",
        "xn--bcher-kva.example",
    ] {
        assert!(register(with("ip_address", json!(fine))).is_ok(), "{fine}");
    }
}

#[test]
fn a_huge_node_id_says_out_of_range() {
    let body: Value = serde_json::from_str(
        r#"{"node_id": 1180591620717411303424, "ip_address": "h", "port": 1, "capabilities": []}"#,
    )
    .unwrap();
    let err = register(body).unwrap_err().0;
    assert!(
        err.starts_with("Invalid node_id: must be an integer"),
        "{err}"
    );
}

#[test]
fn body_must_be_a_json_object() {
    assert_eq!(
        parse_object(b"{\"node_id\": 1,").unwrap_err().0,
        "Invalid JSON"
    );
    assert_eq!(parse_object(b"\xff\xfe").unwrap_err().0, "Invalid JSON");
    assert!(
        parse_object(b"[1]")
            .unwrap_err()
            .0
            .contains("must be an object")
    );
}

#[test]
fn numeric_forms_a_resolver_reads_as_another_address_are_refused() {
    for text in [
        "0x0",
        "0x00000000",
        "0X7F000001",
        "::ffff:0.0.0.0",
        "::0.0.0.0",
        "0x7f.1",
        "2130706433",
        "0177.0.0.1",
        "127.1",
        "node.0x1f",
        "example.123",
    ] {
        let err = register(with("ip_address", json!(text))).unwrap_err();
        assert!(err.0.starts_with("Invalid ip_address"), "{text}: {err}");
    }
    for fine in [
        "10.0.0.1",
        "127.0.0.1",
        "::ffff:10.0.0.1",
        "fe80::1",
        "0xdeadbeef-host.example",
        "1node.example",
        "node-0x1.example",
        "localhost",
        "h",
    ] {
        assert!(register(with("ip_address", json!(fine))).is_ok(), "{fine}");
    }
}
