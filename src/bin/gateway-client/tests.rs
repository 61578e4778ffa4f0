use super::*;

/// `FLAGS` must name every top-level flag of `Cli`, each as taking a value or not: a value
/// that looks like a command name would otherwise be taken for the command.
#[test]
fn flags_names_every_top_level_flag_as_cli_declares_it() {
    let help = Cli::from_args(&["gateway-client"], &["--help"])
        .expect_err("--help ends early")
        .output;
    let usage = help.lines().next().unwrap();
    let (mut options, mut switches) = (Vec::new(), Vec::new());
    // The usage line shows `[--name <value>]` for an option, `[--name]` for a switch.
    for part in usage.split('[').skip(1) {
        let mut words = part.trim_end().trim_end_matches(']').split_whitespace();
        let name = words.next().unwrap();
        if !name.starts_with('-') {
            continue;
        }
        // A short flag (`-o`) stands for its long one too (`-o, --output` in the help).
        let long = (!name.starts_with("--")).then(|| {
            help.lines()
                .find_map(|line| line.trim().strip_prefix(&format!("{name}, ")))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("{name} has a long form: {help}"))
        });
        let list = if words.next().is_some() {
            &mut options
        } else {
            &mut switches
        };
        list.push(name);
        list.extend(long);
    }
    let sorted = |list: &[&'static str]| {
        let mut list = list.to_vec();
        list.sort_unstable();
        list
    };
    options.sort_unstable();
    switches.sort_unstable();
    assert_eq!(options, sorted(FLAGS.options), "{usage}");
    assert_eq!(switches, sorted(FLAGS.switches), "{usage}");
    for flag in FLAGS.global {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn a_printed_cell_is_one_line_without_control_characters() {
    assert_eq!(shown("10.0.0.1:5001"), "10.0.0.1:5001");
    assert_eq!(shown("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
    assert_eq!(shown("grün"), "grün");
}

/// `FLAGS.command_switches` must name every subcommand's switch, so that `--all=1` is
/// refused by name.
#[test]
fn flags_names_every_switch_of_the_subcommands() {
    let mut switches = Vec::new();
    for command in <Command as argh::SubCommands>::COMMANDS {
        let help = Cli::from_args(&["gateway-client"], &[command.name, "--help"])
            .expect_err("--help ends early")
            .output;
        let usage = help.lines().next().unwrap();
        for part in usage.split('[').skip(1) {
            let mut words = part.trim_end().trim_end_matches(']').split_whitespace();
            let name = words.next().unwrap();
            if name.starts_with("--") && words.next().is_none() {
                switches.push(name.to_owned());
            }
        }
    }
    switches.sort_unstable();
    switches.dedup();
    let mut listed: Vec<String> = FLAGS
        .command_switches
        .iter()
        .map(|s| s.to_string())
        .collect();
    listed.sort_unstable();
    assert_eq!(switches, listed);
}

#[test]
fn stats_read_in_words() {
    assert_eq!(duration(0.25), "250ms");
    assert_eq!(duration(30.0), "30s");
    assert_eq!(duration(303.0), "5m 3s");
    assert_eq!(duration(7500.0), "2h 5m");
    let shown = stats_in_words(&serde_json::json!({
        "uptime": 7500.4, "node_timeout": 300.0, "last_compaction": 1_796_288_609.0,
        "total_nodes": 3, "data_dir": null
    }));
    assert_eq!(shown["uptime"], "2h 5m");
    assert_eq!(shown["node_timeout"], "5m 0s");
    assert_eq!(shown["last_compaction"], "2026-12-03T09:03:29Z");
    assert_eq!(shown["total_nodes"], 3);
}
