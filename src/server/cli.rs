//! What the two binaries share: reading their flags with argh, and letting a command's global
//! flags come after its subcommand too (argh alone takes them only before it).

use std::io::Write;
use std::process::ExitCode;

use argh::{FromArgs, SubCommands};

/// Parses the process's arguments into `T`.
///
/// `--help` prints to stdout and ends with success; `--version` prints `default_name` and the
/// version and ends with success; a usage error prints the reason and a hint to stderr and
/// ends with exit status 2 (argh's own `from_env` would exit 1 for both). A flag that takes a
/// value may be written `--flag=value`, as Python's argparse (the original's) takes it.
pub fn parse_args<T: FromArgs>(default_name: &str) -> Result<T, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map(String::as_str).unwrap_or(default_name);
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    match split_equals::<T>(name, &rest) {
        Ok(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            parse(default_name, name, &args)
        }
        Err(reason) => {
            eprintln!("{reason}");
            eprintln!("Run {name} --help for more information.");
            Err(ExitCode::from(2))
        }
    }
}

/// `args` with each `--flag=value` before any `--` as `--flag value`, for the flags of `T`
/// that take a value (read from argh's own usage line); `Err` for a switch given a value. An
/// unknown flag is left for argh to report.
fn split_equals<T: FromArgs>(name: &str, args: &[&str]) -> Result<Vec<String>, String> {
    let usage = T::from_args(&[name], &["--help"])
        .err()
        .map(|exit| exit.output)
        .unwrap_or_default();
    let usage = usage.lines().next().unwrap_or_default();
    // `[--name <value>]` is an option, `[--name]` a switch.
    let (mut options, mut switches) = (Vec::new(), Vec::new());
    for part in usage.split('[').skip(1) {
        let mut words = part.trim_end().trim_end_matches(']').split_whitespace();
        let Some(flag) = words.next().filter(|w| w.starts_with("--")) else {
            continue;
        };
        match words.next() {
            Some(_) => options.push(flag),
            None => switches.push(flag),
        }
    }
    let mut out = Vec::new();
    let mut rest = args.iter();
    for &arg in rest.by_ref() {
        if arg == "--" {
            out.push(arg.to_owned());
            break;
        }
        match arg.split_once('=') {
            Some((flag, value)) if options.contains(&flag) => {
                out.push(flag.to_owned());
                out.push(value.to_owned());
            }
            Some((flag, _)) if switches.contains(&flag) => {
                return Err(format!(
                    "{flag} is a switch: it takes no value, got {arg:?}"
                ));
            }
            _ => out.push(arg.to_owned()),
        }
    }
    out.extend(rest.map(|a| a.to_string()));
    Ok(out)
}

/// Like [`parse_args`], for a command `T` whose subcommands are `C`: the flags `flags.global`
/// names may come before or after the subcommand, and every flag that takes a value may be
/// written `--flag=value` as well as `--flag value`. A subcommand must not declare a flag that
/// `flags.global` names: given after the subcommand, it is moved to the top-level command.
pub fn parse_args_with_globals<T: FromArgs, C: SubCommands>(
    default_name: &str,
    flags: &TopLevelFlags<'_>,
) -> Result<T, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map(String::as_str).unwrap_or(default_name);
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let commands: Vec<&str> = C::COMMANDS
        .iter()
        .chain(C::dynamic_commands())
        .map(|c| c.name)
        .collect();
    let rest = help_command(&rest, flags, &commands);
    match hoist_globals(&rest, flags, &commands) {
        Ok(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            parse(default_name, name, &args)
        }
        Err(reason) => {
            eprintln!("{reason}");
            eprintln!("Run {name} --help for more information.");
            Err(ExitCode::from(2))
        }
    }
}

fn parse<T: FromArgs>(default_name: &str, name: &str, rest: &[&str]) -> Result<T, ExitCode> {
    // After `--` it is an argument like any other (`set-leader -- --version` is no node id).
    if asks_for_version(rest) {
        // Written, not `println!`: a closed stdout (`--version | true`) is no panic.
        let _ = writeln!(std::io::stdout(), "{default_name} {}", crate::VERSION);
        return Err(ExitCode::SUCCESS);
    }
    match T::from_args(&[name], rest) {
        Ok(args) => Ok(args),
        Err(exit) if exit.status.is_ok() => {
            // argh knows nothing of --version: list it beside --help.
            let help = exit.output.replacen(
                "  -h, --help",
                "  --version         print the name and version, and exit\n  -h, --help",
                1,
            );
            let _ = std::io::stdout().write_all(help.as_bytes());
            Err(ExitCode::SUCCESS)
        }
        Err(exit) => {
            eprintln!("{}", exit.output.trim_end());
            if let Some(suggestion) = suggestion::<T>(name, rest, &exit.output) {
                eprintln!("Did you mean '{suggestion}'?");
            }
            eprintln!("Run {name} --help for more information.");
            Err(ExitCode::from(2))
        }
    }
}

/// `help` as a command (`git help`, `cargo help`): `help` alone is `--help`, `help COMMAND`
/// is `COMMAND --help`. Only where `help` stands for the command: a value of a flag, or
/// anything after a command or `--`, is left alone.
pub fn help_command<'a>(
    args: &[&'a str],
    flags: &TopLevelFlags<'_>,
    commands: &[&str],
) -> Vec<&'a str> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if arg == "--" || commands.contains(&arg) {
            break;
        }
        if flags.is_flag(arg) {
            i += if !arg.contains('=') && flags.takes_value(arg) {
                2
            } else {
                1
            };
            continue;
        }
        if arg == "help" {
            let mut out: Vec<&str> = args[..i].to_vec();
            match args.get(i + 1) {
                Some(command) if commands.contains(command) => out.extend([*command, "--help"]),
                _ => out.push("--help"),
            }
            return out;
        }
        break;
    }
    args.to_vec()
}

/// For argh's "Unrecognized argument: X": the flag or command of `T` (or of the command
/// given) closest to `X`, if one is close enough to be the one meant.
fn suggestion<T: FromArgs>(name: &str, rest: &[&str], said: &str) -> Option<String> {
    let unknown = said
        .lines()
        .find_map(|l| l.strip_prefix("Unrecognized argument: "))?
        .trim();
    let help = |args: &[&str]| {
        T::from_args(&[name], args)
            .err()
            .map(|exit| exit.output)
            .unwrap_or_default()
    };
    let top = help(&["--help"]);
    let mut words = help_words(&top);
    // The command's own flags, when one was given.
    let commands = section(&top, "Commands:");
    if let Some(command) = rest.iter().find(|a| commands.contains(&a.to_string())) {
        words.extend(help_words(&help(&[command, "--help"])));
    }
    closest(unknown, &words)
}

/// The flags (`--name`) and commands a help text lists.
fn help_words(help: &str) -> Vec<String> {
    let mut words = section(help, "Commands:");
    for line in help.lines().skip_while(|l| !l.starts_with("Options:")) {
        words.extend(
            line.split([' ', ','])
                .take_while(|w| w.is_empty() || w.starts_with('-'))
                .filter(|w| w.starts_with("--"))
                .map(str::to_owned),
        );
    }
    words
}

/// The first word of each entry under `heading` (two spaces in, up to the next blank line).
fn section(help: &str, heading: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The word of `candidates` nearest `typed`: within two edits and less than half its length
/// (`nodez`, `--gatway`), or one it begins (`--cap` for `--capability`).
pub fn closest(typed: &str, candidates: &[String]) -> Option<String> {
    let flag = typed.split_once('=').map_or(typed, |(flag, _)| flag);
    let bare = flag.trim_start_matches('-');
    if bare.is_empty() {
        return None;
    }
    candidates
        .iter()
        .filter(|c| c.starts_with("--") == flag.starts_with("--"))
        .map(|c| {
            let distance = edit_distance(flag, c);
            let prefix = bare.len() >= 2 && c.trim_start_matches('-').starts_with(bare);
            (if prefix { 0 } else { distance }, distance, c)
        })
        .filter(|&(rank, distance, _)| rank == 0 || (distance <= 2 && distance * 2 < bare.len()))
        .min_by_key(|&(rank, distance, _)| (rank, distance))
        .map(|(_, _, c)| c.clone())
}

/// Levenshtein's distance between `a` and `b`, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// True if `args` asks for the version: `--version` before any `--`.
fn asks_for_version(args: &[&str]) -> bool {
    args.iter()
        .take_while(|a| **a != "--")
        .any(|a| *a == "--version")
}

/// The flags of a top-level command, for [`parse_args_with_globals`].
#[derive(Debug, Clone, Copy)]
pub struct TopLevelFlags<'a> {
    /// Every top-level flag that takes a value, e.g. `--gateway`.
    pub options: &'a [&'a str],
    /// Every top-level switch, e.g. `--json`.
    pub switches: &'a [&'a str],
    /// Those of both that may also come after the subcommand.
    pub global: &'a [&'a str],
    /// The subcommands' switches (e.g. `nodes --all`), so that `--all=yes` is refused by
    /// name rather than as a stray `yes`.
    pub command_switches: &'a [&'a str],
}

impl TopLevelFlags<'_> {
    /// `--anything`, or a short flag (`-o`) this binary declares.
    fn is_flag(&self, arg: &str) -> bool {
        arg.starts_with("--")
            || (arg.len() == 2
                && arg.starts_with('-')
                && (self.options.contains(&arg) || self.switches.contains(&arg)))
    }

    fn takes_value(&self, flag: &str) -> bool {
        self.options.contains(&flag)
    }

    fn is_switch(&self, flag: &str) -> bool {
        self.switches.contains(&flag) || self.command_switches.contains(&flag)
    }
}

/// Rewrites `args` (without the program's name) for argh: a global flag after the subcommand
/// moves, with its value, to just before it; `--flag=value` becomes `--flag value`. Whatever
/// follows `--` is left alone, as are the subcommand's own flags and positionals.
///
/// `Err` says what is wrong: a global flag after the subcommand without its value, or a value
/// given to a switch.
pub fn hoist_globals(
    args: &[&str],
    flags: &TopLevelFlags<'_>,
    commands: &[&str],
) -> Result<Vec<String>, String> {
    let mut before = Vec::new();
    let mut rest = args.iter().copied();
    // Before the subcommand: top-level flags stay where they are.
    let command = loop {
        let Some(arg) = rest.next() else {
            return Ok(before);
        };
        if arg == "--" {
            before.push(arg.to_owned());
            before.extend(rest.map(str::to_owned));
            return Ok(before);
        }
        if flags.is_flag(arg) {
            let (flag, value) = split_flag(arg, flags)?;
            before.push(flag.to_owned());
            match value {
                Some(value) => before.push(value.to_owned()),
                None if flags.takes_value(flag) => {
                    // Its value, whatever it looks like (argh reports it if missing).
                    before.extend(rest.next().map(str::to_owned));
                }
                None => {}
            }
            continue;
        }
        if commands.contains(&arg) {
            break arg;
        }
        before.push(arg.to_owned());
    };
    // After it: global flags move before it; the rest stays in order.
    let mut after = Vec::new();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            after.push(arg.to_owned());
            after.extend(rest.by_ref().map(str::to_owned));
            break;
        }
        if !flags.is_flag(arg) {
            after.push(arg.to_owned());
            continue;
        }
        let (flag, value) = split_flag(arg, flags)?;
        let target = if flags.global.contains(&flag) {
            &mut before
        } else {
            &mut after
        };
        target.push(flag.to_owned());
        match value {
            Some(value) => target.push(value.to_owned()),
            None if flags.global.contains(&flag) && flags.takes_value(flag) => {
                let value = rest
                    .next()
                    .ok_or_else(|| format!("No value provided for option '{flag}'."))?;
                target.push(value.to_owned());
            }
            None => {}
        }
    }
    before.push(command.to_owned());
    before.extend(after);
    Ok(before)
}

/// `--flag=value` as (`--flag`, `value`); `--flag` as (`--flag`, none). A switch takes no value.
fn split_flag<'a>(
    arg: &'a str,
    flags: &TopLevelFlags<'_>,
) -> Result<(&'a str, Option<&'a str>), String> {
    match arg.split_once('=') {
        Some((flag, _)) if flags.is_switch(flag) => Err(format!(
            "{flag} is a switch: it takes no value, got {arg:?}"
        )),
        Some((flag, value)) => Ok((flag, Some(value))),
        None => Ok((arg, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: TopLevelFlags<'static> = TopLevelFlags {
        options: &["--gateway", "--timeout", "--node-id", "--capabilities"],
        switches: &["--json", "--leave-on-exit"],
        global: &["--gateway", "--timeout", "--json"],
        command_switches: &["--all"],
    };
    const COMMANDS: &[&str] = &["nodes", "health", "set-leader"];

    fn help(args: &str) -> String {
        let args: Vec<&str> = args.split_whitespace().collect();
        help_command(&args, &FLAGS, COMMANDS).join(" ")
    }

    #[test]
    fn help_as_a_command_is_help_for_the_program_or_the_command_named() {
        assert_eq!(help("help"), "--help");
        assert_eq!(help("help nodes"), "nodes --help");
        assert_eq!(
            help("--gateway x help set-leader"),
            "--gateway x set-leader --help"
        );
        assert_eq!(help("help nosuch"), "--help");
        // Not the command: a flag's value, a command's argument, after `--`.
        assert_eq!(help("--gateway help nodes"), "--gateway help nodes");
        assert_eq!(help("nodes help"), "nodes help");
        assert_eq!(help("-- help"), "-- help");
    }

    #[test]
    fn the_closest_flag_or_command_is_suggested_only_when_close() {
        let words: Vec<String> = [
            "nodes",
            "node",
            "leader",
            "set-leader",
            "--gateway",
            "--all",
            "--capability",
            "--timeout",
        ]
        .map(str::to_owned)
        .to_vec();
        let said = |typed: &str| closest(typed, &words);
        assert_eq!(said("nodez").as_deref(), Some("nodes"));
        assert_eq!(said("lader").as_deref(), Some("leader"));
        assert_eq!(said("--gatway").as_deref(), Some("--gateway"));
        assert_eq!(said("--gatway=x").as_deref(), Some("--gateway"));
        assert_eq!(said("--al").as_deref(), Some("--all"));
        assert_eq!(said("--cap").as_deref(), Some("--capability"));
        assert_eq!(said("set-lead").as_deref(), Some("set-leader"));
        // Too far, or a flag for a command: nothing.
        assert_eq!(said("xyz"), None);
        assert_eq!(said("--verbose"), None);
        assert_eq!(said("--nodes"), None);
        assert_eq!(said("-"), None);
    }

    fn hoist(args: &str) -> Result<String, String> {
        let args: Vec<&str> = args.split_whitespace().collect();
        hoist_globals(&args, &FLAGS, COMMANDS).map(|a| a.join(" "))
    }

    #[test]
    fn global_flags_after_the_subcommand_move_before_it_with_their_values() {
        assert_eq!(
            hoist("nodes --json --gateway x --all"),
            Ok("--json --gateway x nodes --all".to_owned())
        );
        assert_eq!(
            hoist("--gateway a set-leader 2 --gateway b --timeout=3"),
            Ok("--gateway a --gateway b --timeout 3 set-leader 2".to_owned())
        );
        // Already in place: unchanged.
        assert_eq!(
            hoist("--gateway x --json nodes --all"),
            Ok("--gateway x --json nodes --all".to_owned())
        );
    }

    #[test]
    fn a_value_that_looks_like_a_command_or_a_flag_stays_a_value() {
        // "health" is the value of --capabilities, not the subcommand.
        assert_eq!(
            hoist("--node-id 1 --capabilities health"),
            Ok("--node-id 1 --capabilities health".to_owned())
        );
        assert_eq!(
            hoist("nodes --gateway --json"),
            Ok("--gateway --json nodes".to_owned())
        );
        assert_eq!(
            hoist("--gateway nodes health --json"),
            Ok("--gateway nodes --json health".to_owned())
        );
    }

    #[test]
    fn flag_equals_value_is_split_and_a_switch_refuses_a_value() {
        assert_eq!(
            hoist("--gateway=h:1 nodes --all"),
            Ok("--gateway h:1 nodes --all".to_owned())
        );
        assert_eq!(
            hoist("nodes --capability=raft"),
            Ok("nodes --capability raft".to_owned())
        );
        // Only the first '=' splits.
        assert_eq!(
            hoist("--gateway=http://h/?a=b nodes"),
            Ok("--gateway http://h/?a=b nodes".to_owned())
        );
        let err = hoist("nodes --json=yes").unwrap_err();
        assert!(err.contains("--json") && err.contains("no value"), "{err}");
        // A subcommand's switch too (argh would say only "Unrecognized argument: 1").
        let err = hoist("nodes --all=1").unwrap_err();
        assert!(err.contains("--all") && err.contains("no value"), "{err}");
    }

    /// A command of two options and a switch, for `split_equals`.
    #[derive(FromArgs, Debug)]
    /// test command
    struct Server {
        /// port
        #[argh(option)]
        port: Option<u16>,
        /// host
        #[argh(option)]
        host: Option<String>,
        /// switch
        #[argh(switch)]
        access_log: bool,
    }

    #[test]
    fn an_option_may_be_written_with_an_equals_sign_as_argparse_takes_it() {
        let split = |args: &str| {
            let args: Vec<&str> = args.split_whitespace().collect();
            split_equals::<Server>("gateway-server", &args).map(|a| a.join(" "))
        };
        assert_eq!(
            split("--port=0 --host=::1 --access-log"),
            Ok("--port 0 --host ::1 --access-log".to_owned())
        );
        // Only the first `=` splits; an empty value stays (argh reports it).
        assert_eq!(split("--host=a=b"), Ok("--host a=b".to_owned()));
        assert_eq!(split("--port="), Ok("--port ".to_owned()));
        // Unknown flags and whatever follows `--` are left for argh.
        assert_eq!(split("--colour=blue"), Ok("--colour=blue".to_owned()));
        assert_eq!(split("-- --port=1"), Ok("-- --port=1".to_owned()));
        let err = split("--access-log=true").unwrap_err();
        assert!(
            err.contains("--access-log") && err.contains("no value"),
            "{err}"
        );
        let parsed = Server::from_args(&["s"], &["--port", "7"]).unwrap();
        assert_eq!(
            (parsed.port, parsed.host, parsed.access_log),
            (Some(7), None, false)
        );
    }

    #[test]
    fn version_is_asked_for_only_before_a_double_dash() {
        assert!(asks_for_version(&["--version"]));
        assert!(asks_for_version(&["nodes", "--version"]));
        assert!(!asks_for_version(&["set-leader", "--", "--version"]));
        assert!(!asks_for_version(&["--", "--version"]));
        assert!(!asks_for_version(&[]));
    }

    #[test]
    fn nothing_after_a_double_dash_moves_and_a_missing_value_is_an_error() {
        assert_eq!(
            hoist("set-leader -- --json"),
            Ok("set-leader -- --json".to_owned())
        );
        assert_eq!(hoist("-- nodes --json"), Ok("-- nodes --json".to_owned()));
        let err = hoist("nodes --timeout").unwrap_err();
        assert!(err.contains("--timeout"), "{err}");
        // No subcommand: nothing moves.
        assert_eq!(
            hoist("--node-id 1 --json"),
            Ok("--node-id 1 --json".to_owned())
        );
        assert_eq!(hoist(""), Ok(String::new()));
    }
}
