use super::*;

fn trusted(list: &str) -> TrustedProxies {
    TrustedProxies::parse(list).unwrap()
}

fn peer(address: &str) -> Option<SocketAddr> {
    Some(address.parse().unwrap())
}

#[test]
fn addresses_and_ranges_parse_and_match() {
    let proxies = trusted("127.0.0.1, 10.1.0.0/16,fd00::/8");
    assert!(proxies.contains("127.0.0.1".parse().unwrap()));
    assert!(!proxies.contains("127.0.0.2".parse().unwrap()));
    assert!(proxies.contains("10.1.200.3".parse().unwrap()));
    assert!(!proxies.contains("10.2.0.1".parse().unwrap()));
    assert!(proxies.contains("fd12::1".parse().unwrap()));
    assert!(!proxies.contains("fe80::1".parse().unwrap()));
    // An IPv4 peer seen on a dual-stack socket.
    assert!(proxies.contains("::ffff:127.0.0.1".parse().unwrap()));
    assert!(trusted("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
    assert!(trusted("").is_empty());
    for bad in ["localhost", "10.0.0.0/33", "::/129", "10.0.0.1/x", "1.2.3"] {
        assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn x_forwarded_for_is_believed_only_from_a_trusted_peer() {
    let proxies = trusted("127.0.0.1");
    let from_front = proxies.client(peer("127.0.0.1:5000"), ["203.0.113.7"].into_iter());
    assert_eq!(from_front.to_string(), "203.0.113.7 via 127.0.0.1:5000");
    let direct = proxies.client(peer("198.51.100.2:6000"), ["203.0.113.7"].into_iter());
    assert_eq!(direct.to_string(), "198.51.100.2:6000");
    let nobody = TrustedProxies::default().client(peer("127.0.0.1:5000"), ["1.2.3.4"].into_iter());
    assert_eq!(nobody.to_string(), "127.0.0.1:5000");
}

#[test]
fn the_client_is_the_rightmost_address_no_trusted_proxy_added() {
    let proxies = trusted("127.0.0.1,10.0.0.0/8");
    // The client wrote 6.6.6.6 itself; the front appended what it saw, 203.0.113.7, and an
    // inner proxy 10.0.0.5.
    let client = proxies.client(
        peer("127.0.0.1:5000"),
        ["6.6.6.6, 203.0.113.7", "10.0.0.5"].into_iter(),
    );
    assert_eq!(client.forwarded, Some("203.0.113.7".parse().unwrap()));
    // Only proxies: the first.
    let client = proxies.client(peer("127.0.0.1:5000"), ["10.0.0.9, 10.0.0.5"].into_iter());
    assert_eq!(client.forwarded, Some("10.0.0.9".parse().unwrap()));
    // Not an address list: ignored.
    let client = proxies.client(peer("127.0.0.1:5000"), ["unknown, 1.2.3.4"].into_iter());
    assert_eq!(client.forwarded, None);
    assert_eq!(client.to_string(), "127.0.0.1:5000");
}

#[test]
fn an_access_line_names_the_token_and_quotes_the_user_agent() {
    let line = AccessLine {
        client: trusted("127.0.0.1").client(peer("127.0.0.1:5000"), ["203.0.113.7"].into_iter()),
        method: "GET",
        url: "/nodes?index=3&wait=30",
        status: 200,
        bytes: 1834,
        took: Duration::from_millis(30_012),
        token: Some("dashboard"),
        user_agent: Some("curl/8.0 \"x\"\u{7}"),
    };
    assert_eq!(
        line.to_string(),
        "203.0.113.7 via 127.0.0.1:5000 GET /nodes?index=3&wait=30 200 1834 bytes 30012.0 ms \
         token=dashboard agent=\"curl/8.0 \\\"x\\\"\\u{7}\""
    );
}

#[test]
fn refusals_come_in_a_burst_then_one_a_second_with_the_count_left_out() {
    let mut refusals = Refusals::default();
    let start = Instant::now();
    let admitted = (0..1000)
        .filter(|_| refusals.admit(start).is_some())
        .count();
    assert_eq!(admitted, REFUSALS_BURST as usize);
    // Half a second on: still nothing.
    assert_eq!(refusals.admit(start + Duration::from_millis(500)), None);
    // A second on: one, saying how many were left out (990 and the one above).
    assert_eq!(refusals.admit(start + Duration::from_secs(1)), Some(991));
    assert_eq!(refusals.admit(start + Duration::from_millis(1500)), None);
    // A quiet minute fills the bucket again, no more.
    let later = start + Duration::from_secs(61);
    let admitted = (0..100).filter(|_| refusals.admit(later).is_some()).count();
    assert_eq!(admitted, REFUSALS_BURST as usize);
    // A day of flooding: about one line a second.
    let mut refusals = Refusals::default();
    let logged = (0..86_400 * 10u64)
        .filter(|i| {
            refusals
                .admit(start + Duration::from_millis(i * 100))
                .is_some()
        })
        .count();
    assert!((86_400..=86_400 + 10).contains(&logged), "{logged}");
}
