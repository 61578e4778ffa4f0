//! gateway-client as a command-line user meets it: `help`, suggestions for a mistyped command
//! or flag, shell completions, the manual page, and errors in words a user can act on (an
//! HTML page for an answer, a 401, a certificate from an unknown CA: `tls.rs`).

use std::process::{Command, Output};

use crate::client_cli::run;
use crate::support::{FakeGateway, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-client");

fn cli(args: &[&str]) -> Output {
    run(Command::new(BIN)
        .args(args)
        .env_remove("GATEWAY_URL")
        .env_remove("GATEWAY_TOKEN"))
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command names `--help` lists.
fn commands() -> Vec<String> {
    let help = String::from_utf8(cli(&["--help"]).stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn help_is_a_command_for_the_program_and_for_each_command() {
    let top = cli(&["--help"]);
    let help = cli(&["help"]);
    assert_eq!(help.status.code(), Some(0), "{}", said(&help));
    assert_eq!(help.stdout, top.stdout);
    assert!(said(&help).contains("help [COMMAND]"), "{}", said(&help));
    for command in ["nodes", "set-leader", "completions"] {
        let help = cli(&["help", command]);
        assert_eq!(help.status.code(), Some(0), "{}", said(&help));
        assert_eq!(help.stdout, cli(&[command, "--help"]).stdout, "{command}");
        assert!(
            said(&help).contains(&format!(" {command} ")),
            "{}",
            said(&help)
        );
    }
}

#[test]
fn a_mistyped_command_or_flag_gets_a_suggestion_and_exit_2() {
    for (args, meant) in [
        (&["nodez"][..], "nodes"),
        (&["lader"], "leader"),
        (&["--gatway", "x", "nodes"], "--gateway"),
        (&["nodes", "--al"], "--all"),
        (&["nodes", "--capabilty", "raft"], "--capability"),
        (&["completion", "bash"], "completions"),
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", said(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("Did you mean '{meant}'?")),
            "{args:?}: {stderr}"
        );
    }
    // Nothing near: no guess.
    let out = cli(&["xyzzy"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(!said(&out).contains("Did you mean"), "{}", said(&out));
}

/// What bash completes for the words typed so far (the last one being completed).
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_gateway_client\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" "),
        words.len() - 1
    );
    let out = run(Command::new("bash").args(["--norc", "--noprofile", "-c", &program]));
    assert!(out.status.success(), "{}", said(&out));
    let mut words: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    words.sort();
    words
}

#[test]
fn completions_for_bash_complete_commands_flags_and_shells() {
    let out = cli(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        bash_completes(&script, &["gateway-client", "nod"]),
        ["node", "nodes"]
    );
    assert_eq!(
        bash_completes(&script, &["gateway-client", "nodes", "--a"]),
        ["--all"]
    );
    // Global flags after a command too, joining flags only before one.
    assert_eq!(
        bash_completes(&script, &["gateway-client", "stats", "--gateway-p"]),
        ["--gateway-port"]
    );
    assert!(bash_completes(&script, &["gateway-client", "stats", "--node-"]).is_empty());
    assert_eq!(
        bash_completes(&script, &["gateway-client", "--node-"]),
        ["--node-id"]
    );
    let shells = bash_completes(&script, &["gateway-client", "completions", ""]);
    for shell in ["bash", "fish", "zsh"] {
        assert!(shells.contains(&shell.to_owned()), "{shells:?}");
    }
    // Every command --help lists is completed.
    let all = bash_completes(&script, &["gateway-client", ""]);
    for command in commands() {
        assert!(all.contains(&command), "{command} not in {all:?}");
    }
}

#[test]
fn completions_for_zsh_and_fish_list_every_command_and_an_unknown_shell_is_usage() {
    let zsh = cli(&["completions", "zsh"]);
    let zsh = String::from_utf8(zsh.stdout).unwrap();
    assert!(zsh.starts_with("#compdef gateway-client\n"), "{zsh}");
    let fish = cli(&["completions", "fish"]);
    let fish = String::from_utf8(fish.stdout).unwrap();
    for command in commands() {
        assert!(zsh.contains(&format!("'{command}:")), "{command}: {zsh}");
        assert!(
            fish.contains(&format!("-n __fish_use_subcommand -a {command} ")),
            "{command}: {fish}"
        );
    }
    assert!(
        fish.contains("-n '__fish_seen_subcommand_from nodes' -l all"),
        "{fish}"
    );
    // The shells' own syntax checks, where they are installed.
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        if let Ok(out) = Command::new(shell).args(["-n", "-c", script]).output() {
            assert!(out.status.success(), "{shell} -n: {}", said(&out));
        }
    }
    let out = cli(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("bash, zsh, fish"), "{}", said(&out));
}

#[test]
fn the_shipped_man_page_is_what_gateway_client_man_prints() {
    let out = cli(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let page = String::from_utf8(out.stdout).unwrap();
    let shipped = include_str!("../../docs/gateway-client.1");
    assert!(
        page == shipped,
        "docs/gateway-client.1 is out of date: gateway-client man > docs/gateway-client.1"
    );
    assert!(page.starts_with(".TH GATEWAY\\-CLIENT 1 "), "{page}");
    for command in commands() {
        let command = command.replace('-', "\\-");
        assert!(page.contains(&format!("\\fB{command}\\fR")), "{command}");
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "ENVIRONMENT",
        "EXIT STATUS",
    ] {
        assert!(page.contains(&format!(".SH {section}\n")), "{section}");
    }
}

#[test]
fn an_html_page_for_an_answer_is_called_one_not_a_json_error() {
    let page = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\
                <body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>\
                </body></html>";
    for status in [502, 200] {
        let proxy = FakeGateway::start(Some(status), page);
        let out = cli(&["--gateway", &proxy.url(), "nodes"]);
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("an HTML page titled \"502 Bad Gateway\", not the gateway's JSON"),
            "{status}: {stderr}"
        );
        assert!(
            !stderr.contains("<html>") && !stderr.contains("expected value"),
            "{stderr}"
        );
    }
}

#[test]
fn a_401_says_which_flag_or_variable_gives_the_token() {
    let server = TestServer::with(|c| {
        c.tokens.inline = Some(cluster_gateway::server::auth::Secret::new(
            "read:ops:cli-r3ad-t0ken-555555555\n",
        ));
    });
    let out = cli(&["--gateway", &server.url, "nodes"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert!(
        stderr.contains("--token-file FILE") && stderr.contains("GATEWAY_TOKEN"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(".token()"),
        "a library call, not a flag: {stderr}"
    );
}
