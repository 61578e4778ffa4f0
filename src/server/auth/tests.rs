use super::*;

const TABLE: &str = "# ops\nread:dash:r-secret-1\n\n write:ops:w-secret:with-colon \n";

fn auth() -> Auth {
    let auth = Auth::default();
    let tokens = Tokens::parse(TABLE, "test").unwrap();
    auth.install(TokenSource::default(), tokens, false);
    auth
}

#[test]
fn lines_give_roles_and_names_and_tokens_may_hold_colons() {
    let tokens = Tokens::parse(TABLE, "test").unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens.find(b"r-secret-1"), Some(("dash", Role::Read)));
    assert_eq!(
        tokens.find(b"w-secret:with-colon"),
        Some(("ops", Role::Write))
    );
    assert_eq!(tokens.find(b"w-secret"), None);
    assert_eq!(tokens.find(b""), None);
}

#[test]
fn bad_lines_are_refused_by_number_without_their_text() {
    for (text, line) in [
        ("read:a", 1),
        ("# c\nadmin:a:t0ken", 2),
        ("read::t0ken", 1),
        ("read:a b:t0ken", 1),
        ("read:a:", 1),
        ("read:a:t0k en", 1),
        ("read:a:t0ken\nwrite:a:other", 2),
        ("read:a:t0ken\nwrite:b:t0ken", 2),
    ] {
        let error = Tokens::parse(text, "f").unwrap_err();
        let AuthError::Line { line: at, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(*at, line, "{text:?}");
        assert!(!error.to_string().contains("t0k"), "{error}");
    }
}

#[test]
fn comparison_needs_every_byte_and_the_length() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abd", b"abc"));
    assert!(!constant_time_eq(b"ab", b"abc"));
    assert!(!constant_time_eq(b"abca", b"abc"));
    assert!(!constant_time_eq(b"", b"abc"));
    assert!(!constant_time_eq(b"", b""));
}

#[test]
fn roles_map_to_verdicts() {
    let auth = auth();
    let read = Need::Role(Role::Read);
    let write = Need::Role(Role::Write);
    let h = |v: &'static str| std::iter::once(v);
    assert_eq!(
        auth.check(h("Bearer r-secret-1"), read),
        Verdict::Allowed(Some("dash".into()))
    );
    assert_eq!(
        auth.check(h("Bearer r-secret-1"), write),
        Verdict::Forbidden("dash".into())
    );
    assert_eq!(
        auth.check(h("bearer  w-secret:with-colon"), write),
        Verdict::Allowed(Some("ops".into()))
    );
    assert!(matches!(
        auth.check(std::iter::empty(), read),
        Verdict::Unauthenticated(_)
    ));
    for header in [
        "Basic r-secret-1",
        "Bearer",
        "Bearer ",
        "Bearer r-secret-1 x",
        "Bearer nope",
        "r-secret-1",
    ] {
        assert!(
            matches!(auth.check(h(header), read), Verdict::Unauthenticated(_)),
            "{header}"
        );
    }
    assert_eq!(
        auth.check(std::iter::empty(), Need::Health),
        Verdict::Allowed(None)
    );
}

#[test]
fn an_open_gateway_warns_only_off_loopback() {
    let open = Auth::default();
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let lo6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
    assert!(
        open_gateway_warning(any, &open)
            .unwrap()
            .contains("0.0.0.0:8080")
    );
    assert_eq!(open_gateway_warning(lo, &open), None);
    assert_eq!(open_gateway_warning(lo6, &open), None);
    assert_eq!(open_gateway_warning(any, &auth()), None);
}

#[test]
fn a_source_with_no_token_is_an_error_not_an_open_gateway() {
    let source = |text: &str| TokenSource {
        file: None,
        inline: Some(Secret::new(text)),
    };
    assert!(matches!(
        source("# nothing yet\n\n").load(),
        Err(AuthError::Empty(_))
    ));
    assert_eq!(source("read:a:t0ken").load().unwrap().len(), 1);
    assert!(TokenSource::default().load().unwrap().is_empty());
}

#[test]
fn secrets_do_not_print() {
    let source = TokenSource {
        file: None,
        inline: Some(Secret::new("read:a:hunter2")),
    };
    assert!(!format!("{source:?}").contains("hunter2"));
    assert!(!format!("{:?}", auth()).contains("secret"));
}
