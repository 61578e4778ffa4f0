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
        if !name.starts_with("--") {
            continue;
        }
        if words.next().is_some() {
            options.push(name);
        } else {
            switches.push(name);
        }
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
        assert!(usage.contains(&format!("[{flag}")), "{flag}: {usage}");
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
