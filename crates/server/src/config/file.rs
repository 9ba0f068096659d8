//! Settings from a `--config` / `KEYWARD_CONFIG` TOML file, placed beneath flags and env vars.

use std::path::PathBuf;

use clap::{Args, Parser};

use super::{Cli, Config, GatewayConfig, RotateMasterKeyArgs, StoreConfig};

/// Parses the command line, placing the settings of a `--config` / `KEYWARD_CONFIG` file
/// beneath flags and env vars (precedence: flag > env > file > default). Exits with
/// clap's message on a bad flag; returns the problem with a bad file.
pub fn parse_args() -> Result<Cli, String> {
    use std::ffi::OsString;
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let file = match args.iter().position(|arg| arg == "--config") {
        Some(at) => args.get(at + 1).map(PathBuf::from),
        None => args
            .iter()
            .find_map(|arg| arg.to_str().and_then(|arg| arg.strip_prefix("--config=")).map(PathBuf::from))
            .or_else(|| std::env::var_os("KEYWARD_CONFIG").map(PathBuf::from)),
    };
    let Some(file) = file else { return Ok(Cli::parse_from(args)) };
    let subcommand = args
        .iter()
        .skip(1)
        .find_map(|arg| ["serve", "migrate", "gateway", "rotate-master-key"].into_iter().find(|name| arg == *name));
    let subcommand = subcommand.unwrap_or_else(|| {
        args.insert(1, OsString::from("serve"));
        "serve"
    });
    let given = |flag: &str| {
        args.iter().any(|arg| arg.to_str().is_some_and(|arg| arg == flag || arg.starts_with(&format!("{flag}="))))
    };
    // The file may hold any serve setting; each subcommand takes those it knows.
    let takes = match subcommand {
        "migrate" => <StoreConfig as Args>::augment_args(clap::Command::new(subcommand)),
        "rotate-master-key" => <RotateMasterKeyArgs as Args>::augment_args(clap::Command::new(subcommand)),
        "gateway" => <GatewayConfig as Args>::augment_args(clap::Command::new(subcommand)),
        _ => <Config as Args>::augment_args(clap::Command::new(subcommand)),
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|err| format!("cannot read KEYWARD_CONFIG {}: {err}", file.display()))?;
    let table: toml::Table =
        text.parse().map_err(|err| format!("KEYWARD_CONFIG {} is not valid TOML: {err}", file.display()))?;
    let settings = <Config as Args>::augment_args(clap::Command::new("serve"));
    let gateway_settings = <GatewayConfig as Args>::augment_args(clap::Command::new("gateway"));
    let mut from_file = Vec::new();
    for (key, value) in table {
        let arg = settings
            .get_arguments()
            .chain(gateway_settings.get_arguments())
            .find(|arg| arg.get_id().as_str() == key && arg.get_long().is_some() && key != "config")
            .ok_or_else(|| format!("KEYWARD_CONFIG {}: unknown setting `{key}`", file.display()))?;
        let flag = format!("--{}", arg.get_long().unwrap_or_default());
        let from_env = arg.get_env().is_some_and(|name| std::env::var_os(name).is_some());
        let taken = takes.get_arguments().any(|known| known.get_id() == arg.get_id());
        if !taken || given(&flag) || from_env {
            continue;
        }
        let value = scalar(&value)
            .ok_or_else(|| format!("KEYWARD_CONFIG {}: `{key}` must be a value or a list of values", file.display()))?;
        from_file.push(OsString::from(format!("{flag}={value}")));
    }
    let after = args.iter().position(|arg| arg == subcommand).map_or(args.len(), |at| at + 1);
    args.splice(after..after, from_file);
    Ok(Cli::parse_from(args))
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        toml::Value::Datetime(at) => Some(at.to_string()),
        // Lists become the comma-separated form the flags take.
        toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>().map(|items| items.join(",")),
        toml::Value::Table(_) => None,
    }
}
