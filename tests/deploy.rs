//! deploy/ against the CLI: `instancemap.env.example` lists every
//! `INSTANCEMAP_*` variable clap reads (taken from `Cli::command()`), once,
//! at its default, with the commands that read it, and its values parse;
//! the other deploy files name only variables that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use instancemap::config::Cli;

/// One variable as clap knows it.
#[derive(Debug, Default)]
struct EnvArg {
    /// Default values by command (one entry per command that reads it).
    defaults: BTreeMap<String, Vec<String>>,
}

/// Every `env = "…"` of every subcommand (flattened args included).
fn cli_env() -> BTreeMap<String, EnvArg> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut BTreeMap<String, EnvArg>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                let defaults = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
                out.entry(env.to_string_lossy().into_owned()).or_default().defaults.insert(path.to_owned(), defaults);
            }
        }
        for sub in cmd.get_subcommands() {
            let p = if path.is_empty() { sub.get_name().to_owned() } else { format!("{path} {}", sub.get_name()) };
            walk(sub, &p, out);
        }
    }
    let mut out = BTreeMap::new();
    let mut cmd = Cli::command();
    cmd.build(); // fills in the implicit defaults (`false` for flags)
    walk(&cmd, "", &mut out);
    out
}

/// One setting of the example file.
#[derive(Debug)]
struct Example {
    value: String,
    commented: bool,
    commands: BTreeSet<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn parse_example(text: &str) -> Result<BTreeMap<String, Example>, String> {
    let mut out = BTreeMap::new();
    let mut commands: Option<BTreeSet<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(list) = line.strip_prefix("# commands:") {
            commands = Some(list.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect());
            continue;
        }
        let (commented, rest) = match line.strip_prefix('#') {
            Some(r) => (true, r),
            None => (false, line),
        };
        if !rest.starts_with("INSTANCEMAP_") {
            if line.contains("INSTANCEMAP_") && !line.starts_with('#') {
                return Err(format!("line {n}: not NAME=value: {line:?}"));
            }
            continue;
        }
        let (name, value) = rest.split_once('=').ok_or(format!("line {n}: no '=': {line:?}"))?;
        let commands = commands.take().ok_or(format!("line {n}: {name} has no '# commands:' line before it"))?;
        let e = Example { value: value.to_owned(), commented, commands };
        if out.insert(name.to_owned(), e).is_some() {
            return Err(format!("line {n}: {name} listed twice"));
        }
    }
    Ok(out)
}

/// Whether `value` is accepted for the variable `env` of `command`: a flag
/// (no value) must be one of its possible values (`true`, `false`); any
/// other setting is passed as `--long value`, with placeholders for the
/// command's required arguments, through clap's own parsing.
fn parses(command: &str, env: &str, value: &str) -> Result<(), String> {
    let cmd = Cli::command();
    let sub = command.split(' ').fold(&cmd, |c, s| c.find_subcommand(s).expect("subcommand"));
    let arg = sub.get_arguments().find(|a| a.get_env() == Some(OsStr::new(env))).expect("arg");
    if !arg.get_action().takes_values() {
        let possible: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_owned()).collect();
        return if possible.iter().any(|p| p == value) { Ok(()) } else { Err(format!("not one of {possible:?}")) };
    }
    let mut argv: Vec<String> = vec!["instancemap".into()];
    argv.extend(command.split(' ').map(str::to_owned));
    for a in sub.get_arguments().filter(|a| a.is_required_set() && a.get_id() != arg.get_id()) {
        match a.get_long() {
            Some(long) => argv.extend([format!("--{long}"), "placeholder".into()]),
            None => argv.push("placeholder".into()),
        }
    }
    let long = arg.get_long().ok_or("no --long")?;
    argv.extend([format!("--{long}"), value.to_owned()]);
    match Cli::try_parse_from(&argv) {
        Ok(_) => Ok(()),
        // the value parsed; the command only wants its own subcommand too
        Err(e) if e.kind() == clap::error::ErrorKind::MissingSubcommand => Ok(()),
        Err(e) => Err(format!("{argv:?}: {e}")),
    }
}

#[test]
fn env_example_lists_every_setting_at_its_default() {
    let cli = cli_env();
    assert!(cli.len() >= 5, "clap lists only {} variables: {:?}", cli.len(), cli.keys());
    let all_commands: BTreeSet<String> = Cli::command().get_subcommands().map(|s| s.get_name().to_owned()).collect();
    let path = root().join("deploy/instancemap.env.example");
    let example = parse_example(&std::fs::read_to_string(&path).unwrap()).unwrap();

    let mut problems = Vec::new();
    for (name, arg) in &cli {
        // One default per variable, whichever command reads it.
        let distinct: BTreeSet<&Vec<String>> = arg.defaults.values().collect();
        if distinct.len() > 1 {
            problems.push(format!("{name}: defaults differ between commands: {:?}", arg.defaults));
        }
        let Some(e) = example.get(name) else {
            problems.push(format!("{name}: missing from {}", path.display()));
            continue;
        };
        if !e.commented {
            problems.push(format!("{name}: set in the example; list it commented out at its default"));
        }
        let default = arg.defaults.values().next().unwrap().join(",");
        if e.value != default {
            problems.push(format!("{name}: example says {:?}, default is {default:?}", e.value));
        }
        let mut want: BTreeSet<String> = arg.defaults.keys().cloned().collect();
        if want == all_commands {
            want = ["all".to_owned()].into();
        }
        if e.commands != want {
            problems.push(format!("{name}: example says commands {:?}, clap says {:?}", e.commands, want));
        }
        // The value, once uncommented, must parse as that setting's flag.
        if !e.value.is_empty() {
            for command in arg.defaults.keys() {
                if let Err(err) = parses(command, name, &e.value) {
                    problems.push(format!("{name}={}: not valid for {command}: {err}", e.value));
                }
            }
        }
    }
    for name in example.keys() {
        if !cli.contains_key(name) {
            problems.push(format!("{name}: in the example but no command reads it"));
        }
    }
    assert!(problems.is_empty(), "{}:\n{}", path.display(), problems.join("\n"));
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn deploy_files_name_only_variables_that_exist() {
    let cli = cli_env();
    let mut files = Vec::new();
    files_under(&root().join("deploy"), &mut files);
    files_under(&root().join("dashboards"), &mut files);
    let mut problems = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        let mut rest = text.as_str();
        while let Some(i) = rest.find("INSTANCEMAP_") {
            let tail = &rest[i..];
            let end =
                tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            if name.len() > "INSTANCEMAP_".len() && !cli.contains_key(name) {
                problems.push(format!("{}: {name} is not a setting", f.display()));
            }
            rest = &tail[end..];
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn example_parser_rejects_what_it_should() {
    assert!(parse_example("# commands: run\n#INSTANCEMAP_A=1\n").is_ok());
    assert!(parse_example("#INSTANCEMAP_A=1\n").is_err(), "no commands line");
    assert!(parse_example("# commands: run\n#INSTANCEMAP_A\n").is_err(), "no '='");
    assert!(parse_example("# commands: run\n#INSTANCEMAP_A=1\n# commands: run\nINSTANCEMAP_A=2\n").is_err(), "twice");
    assert!(parse_example("export INSTANCEMAP_A=1\n").is_err(), "not NAME=value");
}
