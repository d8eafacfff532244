//! Why a setting or the command line could not be used: one line naming
//! the setting for the operator, or clap's own usage message.

use std::fmt::Debug;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// A setting that could not be used, with its name.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub reason: String,
}

pub(super) fn bad(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { name: name.into(), reason: reason.into() }
}

/// Why the command line could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting's value, or the `--config` file: one line to print.
    #[error(transparent)]
    Setting(#[from] ConfigError),
    /// Anything else clap refuses, and `--help`/`--version`: clap prints it.
    #[error(transparent)]
    Usage(clap::Error),
}

/// A bad value clap found becomes `invalid setting --NAME: reason`.
pub(super) fn from_clap(e: clap::Error) -> LoadError {
    let name = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or(arg).to_string(),
        _ => return LoadError::Usage(e),
    };
    let reason = match e.kind() {
        ErrorKind::ValueValidation => match std::error::Error::source(&e) {
            Some(why) => why.to_string(),
            None => return LoadError::Usage(e),
        },
        ErrorKind::InvalidValue => match (e.get(ContextKind::InvalidValue), e.get(ContextKind::ValidValue)) {
            (Some(ContextValue::String(v)), Some(ContextValue::Strings(valid))) if !v.is_empty() => {
                format!("{v:?} is not one of {}", valid.join(", "))
            }
            _ => "needs a value".to_string(),
        },
        _ => return LoadError::Usage(e),
    };
    LoadError::Setting(ConfigError { name, reason })
}
