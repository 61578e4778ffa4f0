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

thread_local! {
    /// Bytes of presented text compared against tokens on this thread.
    pub(super) static COMPARED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn compared(f: impl FnOnce()) -> usize {
    COMPARED.with(|n| n.set(0));
    f();
    COMPARED.with(std::cell::Cell::get)
}

fn thousand_tokens() -> Auth {
    let table: String = (0..1000)
        .map(|i| format!("write:n{i}:tok-{i:04}-{}\n", "x".repeat(32)))
        .collect();
    let auth = Auth::default();
    auth.install(
        TokenSource::default(),
        Tokens::parse(&table, "t").unwrap(),
        false,
    );
    auth
}

#[test]
fn a_lookup_compares_one_candidate_whatever_the_number_of_tokens() {
    let auth = thousand_tokens();
    let need = Need::Role(Role::Read);
    let token = format!("tok-0999-{}", "x".repeat(32));
    let header = format!("Bearer {token}");
    let work = compared(|| {
        assert_eq!(
            auth.check([header.as_str()].into_iter(), need),
            Verdict::Allowed(Some("n999".to_owned()))
        );
    });
    assert_eq!(work, token.len(), "one comparison, not one per token");
    // A near miss of the longest size accepted: no candidate, or one at most.
    let header = format!("Bearer {}", "y".repeat(MAX_AUTHORIZATION - 7));
    let work = compared(|| {
        assert_eq!(
            auth.check([header.as_str()].into_iter(), need),
            Verdict::Unauthenticated("unknown token")
        );
    });
    assert!(work <= MAX_AUTHORIZATION, "{work} bytes compared");
}

#[test]
fn a_4_mb_authorization_header_is_refused_before_any_work() {
    let auth = thousand_tokens();
    let header = format!("Bearer {}", "y".repeat(4 << 20));
    let started = std::time::Instant::now();
    let work = compared(|| {
        assert_eq!(
            auth.check([header.as_str()].into_iter(), Need::Role(Role::Read)),
            Verdict::Unauthenticated("the Authorization header is longer than 4 KiB")
        );
    });
    let took = started.elapsed();
    println!("a 4 MB header against 1,000 tokens: {took:?}, {work} bytes compared");
    assert_eq!(work, 0);
    assert!(took < std::time::Duration::from_millis(100), "{took:?}");
}

#[test]
fn a_token_too_long_for_a_header_is_refused_by_its_line() {
    let table = format!("read:a:{}", "t".repeat(MAX_AUTHORIZATION));
    let error = Tokens::parse(&table, "f").unwrap_err();
    assert!(matches!(error, AuthError::Line { line: 1, .. }), "{error}");
}
