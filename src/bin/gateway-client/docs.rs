//! `gateway-client completions bash|zsh|fish` and `gateway-client man`: written from argh's own
//! help texts for the program and each command, so they list exactly the flags and commands
//! the parser takes. `docs/gateway-client.1` is `gateway-client man` as shipped; a test keeps
//! the two the same.

/// One entry of a help section: a flag (`--gateway`, with `-o` for `-o, --output`), a
/// command or a positional argument, whether it takes a value, and what it is for.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) short: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) about: String,
}

/// What a help text says.
#[derive(Debug, Clone, Default)]
pub(crate) struct Help {
    pub(crate) usage: String,
    pub(crate) about: String,
    pub(crate) options: Vec<Entry>,
    pub(crate) positionals: Vec<Entry>,
    pub(crate) commands: Vec<Entry>,
    pub(crate) notes: Vec<String>,
    pub(crate) exit_codes: Vec<Entry>,
}

/// The program's help and each command's, as `help(args)` gives them (argh's `--help` text).
pub(crate) struct Program {
    pub(crate) top: Help,
    pub(crate) commands: Vec<(Entry, Help)>,
}

impl Program {
    pub(crate) fn read(help: impl Fn(&[&str]) -> String) -> Program {
        let top = parse(&help(&["--help"]));
        let commands = top
            .commands
            .iter()
            .map(|c| (c.clone(), parse(&help(&[&c.name, "--help"]))))
            .collect();
        Program { top, commands }
    }

    /// The flags that may come after a command as well (the globals).
    fn globals<'a>(&'a self, global: &'a [&str]) -> impl Iterator<Item = &'a Entry> {
        self.top
            .options
            .iter()
            .filter(move |o| global.contains(&o.name.as_str()))
    }
}

/// Parses argh's help layout: `Usage: ...`, a description, then sections whose entries start
/// two spaces in, with their text from the column argh aligns it to.
pub(crate) fn parse(text: &str) -> Help {
    let mut help = Help::default();
    let mut lines = text.lines().peekable();
    if let Some(usage) = lines.next() {
        help.usage = usage.trim_start_matches("Usage: ").to_owned();
    }
    let mut section = "about".to_owned();
    for line in lines {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':').to_owned();
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if section == "about" {
            push_text(&mut help.about, line.trim());
            continue;
        }
        if section == "Notes" {
            help.notes.push(line.trim().to_owned());
            continue;
        }
        let list = match section.as_str() {
            "Options" => &mut help.options,
            "Positional Arguments" => &mut help.positionals,
            "Commands" => &mut help.commands,
            "Error codes" => &mut help.exit_codes,
            _ => continue,
        };
        let entry_start = line.starts_with("  ") && !line.starts_with("   ");
        match list.last_mut() {
            Some(last) if !entry_start => push_text(&mut last.about, line.trim()),
            _ => {
                let body = line.trim_start();
                let (name, about) = match body.split_once("  ") {
                    Some((name, about)) => (name.trim(), about.trim()),
                    None => (body.trim(), ""),
                };
                // `-o, --output`, and `--help, help` for commands.
                let mut names = name.split(", ");
                let first = names.next().unwrap_or_default();
                let (short, name) = match names.next() {
                    Some(long) if first.len() == 2 && first.starts_with('-') => {
                        (Some(first.to_owned()), long.to_owned())
                    }
                    _ => (None, first.to_owned()),
                };
                list.push(Entry {
                    value: takes_value(&help.usage, &name, short.as_deref()),
                    name,
                    short,
                    about: about.to_owned(),
                });
            }
        }
    }
    help
}

fn push_text(text: &mut String, more: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(more);
}

/// The value a flag takes, from the usage line (`[--gateway <gateway...>]`), if any.
fn takes_value(usage: &str, name: &str, short: Option<&str>) -> Option<String> {
    usage.split('[').find_map(|part| {
        let mut words = part.trim_end().trim_end_matches(']').split_whitespace();
        let flag = words.next()?;
        if flag != name && Some(flag) != short {
            return None;
        }
        words.next().map(|v| {
            v.trim_matches(['<', '>'])
                .trim_end_matches("...")
                .replace('-', "_")
        })
    })
}

/// Flags whose value is a file: the shells complete file names for them.
const FILE_FLAGS: [&str; 3] = ["--token-file", "--ca-file", "--config"];
/// The shells `completions` writes for.
pub(crate) const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// The completion script for `shell`; `global` names the flags that may follow a command.
pub(crate) fn completions(program: &Program, global: &[&str], shell: &str) -> Option<String> {
    match shell {
        "bash" => Some(bash(program, global)),
        "zsh" => Some(zsh(program, global)),
        "fish" => Some(fish(program, global)),
        _ => None,
    }
}

fn flags_of(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.name.starts_with("--") && e.name != "--help")
        .map(|e| e.name.clone())
        .collect()
}

fn bash(program: &Program, global: &[&str]) -> String {
    let commands: Vec<&str> = program
        .top
        .commands
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let globals: Vec<String> = program.globals(global).map(|e| e.name.clone()).collect();
    let mut cases = String::new();
    for (command, help) in &program.commands {
        let mut words = flags_of(&help.options);
        words.extend(globals.iter().cloned());
        if command.name == "completions" {
            words.extend(SHELLS.map(str::to_owned));
        }
        cases += &format!("    {}) words=\"{}\" ;;\n", command.name, words.join(" "));
    }
    let mut top = commands.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    top.extend(flags_of(&program.top.options));
    format!(
        "# bash completion for gateway-client (gateway-client completions bash)\n\
         _gateway_client() {{\n\
         \x20 local cur=\"${{COMP_WORDS[COMP_CWORD]}}\" prev=\"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         \x20 local command=\"\" word words\n\
         \x20 for word in \"${{COMP_WORDS[@]:1:COMP_CWORD-1}}\"; do\n\
         \x20   case \" {commands} \" in *\" $word \"*) command=$word; break ;; esac\n\
         \x20 done\n\
         \x20 case \"$prev\" in\n\
         \x20   {files}) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n\
         \x20 esac\n\
         \x20 case \"$command\" in\n\
         {cases}\
         \x20   *) words=\"{top}\" ;;\n\
         \x20 esac\n\
         \x20 COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n\
         }}\n\
         complete -F _gateway_client gateway-client\n",
        commands = commands.join(" "),
        files = FILE_FLAGS.join("|"),
        top = top.join(" "),
    )
}

/// Quoted for a shell's single quotes.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn zsh(program: &Program, global: &[&str]) -> String {
    // Only the name's colons would need escaping: flags and commands have none.
    let described = |e: &Entry| quoted(&format!("{}:{}", e.name, e.about));
    let mut cases = String::new();
    for (command, help) in &program.commands {
        let mut items: Vec<String> = help
            .options
            .iter()
            .filter(|e| e.name != "--help")
            .map(described)
            .collect();
        items.extend(program.globals(global).map(described));
        if command.name == "completions" {
            items.extend(SHELLS.map(|s| quoted(&format!("{s}:a script for {s}"))));
        }
        cases += &format!("    {}) items=({}) ;;\n", command.name, items.join(" "));
    }
    let mut top: Vec<String> = program.top.commands.iter().map(described).collect();
    top.extend(
        program
            .top
            .options
            .iter()
            .filter(|e| e.name != "--help")
            .map(described),
    );
    let names: Vec<&str> = program
        .top
        .commands
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    format!(
        "#compdef gateway-client\n\
         # zsh completion for gateway-client (gateway-client completions zsh)\n\
         _gateway_client() {{\n\
         \x20 local command i\n\
         \x20 local -a items\n\
         \x20 for ((i = 2; i < CURRENT; i++)); do\n\
         \x20   case ${{words[i]}} in ({names}) command=${{words[i]}}; break ;; esac\n\
         \x20 done\n\
         \x20 case ${{words[CURRENT-1]}} in\n\
         \x20   ({files}) _files; return ;;\n\
         \x20 esac\n\
         \x20 case $command in\n\
         {cases}\
         \x20   *) items=({top}) ;;\n\
         \x20 esac\n\
         \x20 _describe gateway-client items\n\
         }}\n\
         _gateway_client \"$@\"\n",
        names = names.join("|"),
        files = FILE_FLAGS.join("|"),
        top = top.join(" "),
    )
}

fn fish(program: &Program, global: &[&str]) -> String {
    let mut out = String::from(
        "# fish completion for gateway-client (gateway-client completions fish)\n\
         complete -c gateway-client -f\n",
    );
    let flag = |e: &Entry, condition: &str| {
        let mut line = format!("complete -c gateway-client{condition} -l {}", &e.name[2..]);
        if let Some(short) = &e.short {
            line += &format!(" -s {}", &short[1..]);
        }
        if FILE_FLAGS.contains(&e.name.as_str()) {
            line += " -r -F";
        } else if e.value.is_some() {
            line += " -r";
        }
        line + &format!(" -d {}\n", quoted(&e.about))
    };
    for command in &program.top.commands {
        out += &format!(
            "complete -c gateway-client -n __fish_use_subcommand -a {} -d {}\n",
            command.name,
            quoted(&command.about)
        );
    }
    for option in program.top.options.iter().filter(|e| e.name != "--help") {
        let condition = if global.contains(&option.name.as_str()) {
            ""
        } else {
            " -n __fish_use_subcommand"
        };
        out += &flag(option, condition);
    }
    for (command, help) in &program.commands {
        let condition = format!(" -n '__fish_seen_subcommand_from {}'", command.name);
        for option in help.options.iter().filter(|e| e.name != "--help") {
            out += &flag(option, &condition);
        }
        if command.name == "completions" {
            out += &format!(
                "complete -c gateway-client{condition} -a '{}'\n",
                SHELLS.join(" ")
            );
        }
    }
    out
}

/// Text for roff: backslashes and hyphens escaped, no line starting with a control character.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

/// The manual page, in roff (`man -l docs/gateway-client.1`).
pub(crate) fn man(program: &Program, version: &str) -> String {
    let mut out = format!(
        ".TH GATEWAY\\-CLIENT 1 \"\" \"cluster-gateway {version}\" \"User Commands\"\n\
         .SH NAME\n\
         gateway\\-client \\- join a cluster through its gateway, or ask the gateway about it\n\
         .SH SYNOPSIS\n\
         .B gateway\\-client\n\
         [\\fIFLAGS\\fR] [\\fICOMMAND\\fR [\\fIARGUMENTS\\fR]]\n\
         .SH DESCRIPTION\n{}\n",
        roff(&program.top.about)
    );
    out += "Without a command it joins: it registers the node its flags describe and heartbeats \
            until SIGINT or SIGTERM. \\fBgateway\\-client help\\fR [\\fICOMMAND\\fR] prints the \
            help of the program or of a command.\n";
    out += ".SH OPTIONS\n";
    for option in &program.top.options {
        out += &entry(option);
    }
    out += ".SH COMMANDS\n";
    for (command, help) in &program.commands {
        let usage = help
            .usage
            .split_once(&format!(" {} ", command.name))
            .map_or("", |(_, rest)| rest)
            .replace("[--] ", "");
        out += &format!(
            ".TP\n\\fB{}\\fR {}\n{}\n",
            roff(&command.name),
            roff(&usage),
            roff(&help.about)
        );
        let entries: Vec<&Entry> = help
            .positionals
            .iter()
            .chain(help.options.iter().filter(|e| e.name != "--help"))
            .collect();
        if !entries.is_empty() {
            out += ".RS\n";
            for e in entries {
                out += &entry(e);
            }
            out += ".RE\n";
        }
    }
    for note in &program.top.notes {
        let title = if note.starts_with("Environment") {
            "ENVIRONMENT"
        } else if note.starts_with("Config file") {
            "FILES"
        } else {
            "NOTES"
        };
        out += &format!(".SH {title}\n{}\n", roff(note));
    }
    out += ".SH EXIT STATUS\n";
    for code in &program.top.exit_codes {
        out += &format!(".TP\n.B {}\n{}\n", roff(&code.name), roff(&code.about));
    }
    out += ".SH SEE ALSO\n\
            \\fBgateway\\-server\\fR(1); docs/cli.md and docs/operations.md in the \
            cluster\\-gateway sources.\n";
    out
}

fn entry(e: &Entry) -> String {
    let name = match (&e.short, &e.value) {
        (Some(short), Some(value)) => format!(
            "\\fB{}\\fR, \\fB{}\\fR \\fI{}\\fR",
            roff(short),
            roff(&e.name),
            roff(value)
        ),
        (Some(short), None) => format!("\\fB{}\\fR, \\fB{}\\fR", roff(short), roff(&e.name)),
        (None, Some(value)) => format!("\\fB{}\\fR \\fI{}\\fR", roff(&e.name), roff(value)),
        (None, None) => format!("\\fB{}\\fR", roff(&e.name)),
    };
    format!(".TP\n{name}\n{}\n", roff(&e.about))
}
