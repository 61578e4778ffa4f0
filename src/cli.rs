//! What the two binaries share: reading their flags with argh.

use std::process::ExitCode;

use argh::FromArgs;

/// Parses the process's arguments into `T`.
///
/// `--help` prints to stdout and ends with success; `--version` prints `default_name` and the
/// version and ends with success; a usage error prints the reason and a hint to stderr and
/// ends with exit status 2 (argh's own `from_env` would exit 1 for both).
pub fn parse_args<T: FromArgs>(default_name: &str) -> Result<T, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map(String::as_str).unwrap_or(default_name);
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    if rest.contains(&"--version") {
        println!("{default_name} {}", crate::VERSION);
        return Err(ExitCode::SUCCESS);
    }
    match T::from_args(&[name], &rest) {
        Ok(args) => Ok(args),
        Err(exit) if exit.status.is_ok() => {
            // argh knows nothing of --version: list it beside --help.
            let help = exit.output.replacen(
                "  -h, --help",
                "  --version         print the name and version, and exit\n  -h, --help",
                1,
            );
            print!("{help}");
            Err(ExitCode::SUCCESS)
        }
        Err(exit) => {
            eprintln!("{}", exit.output.trim_end());
            eprintln!("Run {name} --help for more information.");
            Err(ExitCode::from(2))
        }
    }
}
