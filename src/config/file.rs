//! The `--config` TOML file, layered under the command line and the
//! environment: its keys become flags for the settings neither set.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches};

use super::error::{bad, ConfigError};

/// The `--config` file's settings as flags, for each setting that neither
/// the command line nor its variable set. A list in the file is replaced as
/// a whole by a list given there; `repair = true` adds `--repair`.
pub(super) fn toml_flags(serve: &clap::Command, given: &ArgMatches, path: &Path) -> Result<Vec<OsString>, ConfigError> {
    let in_file = |reason: String| bad("--config", format!("{}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| in_file(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| in_file(e.message().to_string()))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let Some(arg) = serve.get_arguments().find(|a| {
            a.get_long() == Some(key.as_str())
                && a.get_id() != "config"
                && matches!(a.get_action(), ArgAction::Set | ArgAction::Append | ArgAction::SetTrue)
        }) else {
            return Err(in_file(format!("unknown field `{key}`")));
        };
        let id = arg.get_id().as_str();
        let flag = format!("--{key}");
        let scalar = |v: toml::Value| match v {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            _ => Err(in_file(format!("{key}: expected a string or a number"))),
        };
        let values = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
                if on && !given.get_flag(id) {
                    flags.push(flag.into());
                }
                continue;
            }
            (ArgAction::SetTrue, _) => return Err(in_file(format!("{key}: expected true or false"))),
            (ArgAction::Append, toml::Value::Array(items)) => {
                let items = items.into_iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                if let Some(d) = arg.get_value_delimiter().filter(|&d| items.iter().any(|i| i.contains(d))) {
                    return Err(in_file(format!("{key}: an item cannot contain {d:?}")));
                }
                items
            }
            (ArgAction::Append, _) => return Err(in_file(format!("{key}: expected a list such as [\"a\", \"b\"]"))),
            (_, v) => vec![scalar(v)?],
        };
        if !matches!(given.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            flags.extend(values.into_iter().map(|v| OsString::from(format!("{flag}={v}"))));
        }
    }
    Ok(flags)
}
