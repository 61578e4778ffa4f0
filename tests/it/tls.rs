//! The TLS recipe end to end: a private CA and a server certificate made with openssl, the
//! shipped `scripts/deploy/nginx.conf` ending TLS in front of a gateway with tokens, and
//! gateway-client (the CLI and the library) speaking https:// through it; a wrong CA refused.
//!
//! Needs nginx and openssl (`build.rs` sets `has_nginx`, `has_openssl`): without them the test is
//! listed as ignored, with the reason; `.ci/run` installs them and fails if any test was ignored.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cluster_gateway::api::Registration;
use cluster_gateway::client::GatewayClient;
use cluster_gateway::server::auth::Secret;

use crate::front::{Front, Tls, nginx_binary};
use crate::support::Guarded;
use crate::support::{TestServer, eventually, within};

const READ: &str = "tls-r3ad-t0ken-1111111111";
const WRITE: &str = "tls-wr1te-t0ken-222222222";

pub(crate) struct Scratch(pub(crate) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .guarded_output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.crt`, `{name}.key`) in `dir`.
pub(crate) fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=cluster-gateway test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `server.crt` and `server.key` for `host`, signed by the CA `ca`.
pub(crate) fn make_server_certificate(dir: &Path, ca: &str, host: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={host}"),
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

fn cli(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway-client"));
    command
        .args(["--gateway", url, "--timeout", "10"])
        .args(args)
        .env_remove("GATEWAY_URL")
        .env_remove("GATEWAY_TOKEN")
        .env_remove("GATEWAY_CA_FILE")
        .stdin(Stdio::null());
    within(Duration::from_secs(60), move || {
        command.guarded_output().unwrap()
    })
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[cfg_attr(
    not(all(has_nginx, has_openssl)),
    ignore = "needs nginx and openssl: apt-get install nginx openssl"
)]
fn gateway_client_speaks_https_through_the_shipped_front_with_tokens_and_refuses_a_wrong_ca() {
    let has_openssl = Command::new("openssl")
        .arg("version")
        .guarded_output()
        .is_ok_and(|o| o.status.success());
    let (Some(nginx), true) = (nginx_binary(), has_openssl) else {
        panic!("nginx or openssl is not installed (apt-get install nginx openssl)");
    };
    let dir = std::env::temp_dir().join(format!("gateway-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir.clone());
    let host = "127.0.0.9";
    make_ca(&dir, "ca");
    make_ca(&dir, "wrong-ca");
    make_server_certificate(&dir, "ca", host);
    let token_file = dir.join("write.token");
    std::fs::write(&token_file, format!("{WRITE}\n")).unwrap();

    let gateway = TestServer::with(|config| {
        config.tokens.inline = Some(Secret::new(format!(
            "read:dash:{READ}\nwrite:ops:{WRITE}\n"
        )));
    });
    let front = Front::start_tls(
        &nginx,
        &gateway.addr().to_string(),
        Tls {
            certificate: &dir.join("server.crt"),
            key: &dir.join("server.key"),
        },
    );
    assert!(front.address.starts_with(host));
    let url = format!("https://{}", front.address);
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let token_file = token_file.to_str().unwrap();

    // The library: registers over https with a write token.
    let node = GatewayClient::builder()
        .gateway(&url)
        .ca_file(dir.join("ca.crt"))
        .token(WRITE)
        .build()
        .unwrap();
    let registration = Registration::new(1, "127.0.0.1", 7001).capabilities(["raft"]);
    let answer = node.register_node(registration).unwrap();
    assert!(answer.is_bootstrap);
    node.heartbeat().unwrap();

    // The CLI joins over https and heartbeats until it is stopped.
    let mut joined = Command::new(env!("CARGO_BIN_EXE_gateway-client"))
        .args([
            "--gateway",
            &url,
            "--ca-file",
            ca,
            "--token-file",
            token_file,
        ])
        .args([
            "--node-id",
            "2",
            "--port",
            "7002",
            "--heartbeat-interval",
            "0.2",
        ])
        .env_remove("GATEWAY_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .guarded_spawn()
        .unwrap();
    let both = eventually(Duration::from_secs(60), || {
        node.get_nodes(false).is_ok_and(|nodes| nodes.len() == 2)
    });
    let _ = joined.kill();
    let _ = joined.wait();
    assert!(both, "the CLI did not join over https");

    // Operator commands: a read token reads, and is refused a write with 403; no token is 401.
    let out = cli(&url, &["--ca-file", ca, "--token", READ, "nodes", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["nodes"][0]["node_id"], 1, "{}", text(&out));
    let out = cli(&url, &["--ca-file", ca, "--token", READ, "remove", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("403 Forbidden"), "{}", text(&out));
    let out = cli(&url, &["--ca-file", ca, "stats"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401 Unauthorized"), "{}", text(&out));
    let out = cli(
        &url,
        &["--ca-file", ca, "--token-file", token_file, "remove", "2"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(node.get_nodes(false).unwrap().len(), 1);
    // /health stays open to probes, over TLS too.
    let out = cli(&url, &["--ca-file", ca, "health"]);
    assert!(out.status.success(), "{}", text(&out));

    // A certificate from another CA, or the public roots alone: refused before any request.
    let wrong = dir.join("wrong-ca.crt");
    for args in [
        vec![
            "--ca-file",
            wrong.to_str().unwrap(),
            "--token",
            READ,
            "nodes",
        ],
        vec!["--token", READ, "nodes"],
    ] {
        let out = cli(&url, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let said = text(&out).to_lowercase();
        assert!(
            said.contains("certificate") || said.contains("issuer"),
            "{args:?}: {said}"
        );
        // What to do about it, in the CLI's terms.
        assert!(
            said.contains("hint:") && said.contains("--ca-file"),
            "{args:?}: {said}"
        );
        assert!(!said.contains(READ), "{said}");
    }
    // A CA file that is not one is a usage error.
    let out = cli(&url, &["--ca-file", token_file, "nodes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    drop(front);
    drop(scratch);
}
