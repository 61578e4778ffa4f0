//! Tells the integration tests which outside programs this machine has, one cfg flag each
//! (`has_etcd`, `has_nginx`, ...). A test that needs a missing program is marked ignored with
//! the reason (`cargo test` lists it and exits 0 on a machine with only Rust); where the program
//! is there, the test runs. CI installs every program and fails if any test was ignored.
//!
//! It only looks at PATH (and the usual sbin folders) and asks Python one question; the library
//! itself is the same whatever it finds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The flags, and the programs each needs (all of them).
const PROBES: &[(&str, &[&str])] = &[
    ("has_etcd", &["etcd"]),
    ("has_nginx", &["nginx"]),
    ("has_openssl", &["openssl"]),
    ("has_promtool", &["promtool"]),
    ("has_prometheus", &["prometheus"]),
    ("has_systemd_analyze", &["systemd-analyze"]),
    ("has_curl", &["curl"]),
    ("has_chromedriver", &["chromedriver", "chromium"]),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    let dirs = search_path();
    for (flag, programs) in PROBES {
        println!("cargo::rustc-check-cfg=cfg({flag})");
        if programs.iter().all(|p| find(&dirs, p).is_some()) {
            println!("cargo::rustc-cfg={flag}");
        }
    }
    println!("cargo::rustc-check-cfg=cfg(has_python_requests)");
    if find(&dirs, "python3").is_some() && python_has_requests() {
        println!("cargo::rustc-cfg=has_python_requests");
    }
}

fn search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    // nginx lives in sbin, which a user's PATH may leave out.
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs
}

fn find(dirs: &[PathBuf], program: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

fn python_has_requests() -> bool {
    Command::new("python3")
        .args(["-c", "import requests, urllib3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
