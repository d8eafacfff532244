//! Every setting of shortd in one place.
//!
//! Each setting of `shortd serve` is one field of `Config` or
//! `ClusterConfig` (`settings.rs`), and its attributes
//! are all there is to it: flag, `SHORTD_*` variable, default, help text,
//! type and the check of one value. Its TOML key is the flag without `--`.
//!
//! Precedence: command-line flag, then `SHORTD_*` environment variable (clap
//! reads both), then the TOML file named by `--config`, then the default.
//! [`Cli::load`] turns the file's keys into flags for the settings the first
//! two left unset and parses once more; [`ServeArgs::resolve`] then runs the
//! checks that involve more than one setting. Everything is validated before
//! the server binds a socket; a bad value stops the start with one line
//! naming the setting.
//!
//! The files: `settings` (the fields), `command_line` (the subcommands,
//! the loading, the checks across settings), `file` (the TOML layer),
//! `parse` (the check of one value) and `error`.

mod command_line;
mod error;
mod file;
mod parse;
mod settings;

pub use command_line::{Cli, Command, DataDirArg, ServeArgs, MIN_CLUSTER_KEY_LEN};
pub use error::{ConfigError, LoadError};
pub use settings::{ClusterConfig, Config, Durability, LinkLimits, LogFormat, Switch};

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::CommandFactory;

    use super::settings::cores;
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        let argv = ["shortd", "serve"].iter().chain(args);
        match Cli::try_load_from(argv).map_err(|e| e.to_string())?.command {
            Command::Serve(s) => s.resolve().map_err(|e| e.to_string()),
            _ => unreachable!("parsed as serve"),
        }
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temporary file");
        std::fs::write(f.path(), text).expect("writing the TOML file");
        f
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.workers, cores());
        assert_eq!(c.public_url().as_str(), "http://127.0.0.1:8080/");
        assert_eq!((c.create_rate, c.create_burst(), c.redirect_rate), (0, 0, 0));
        assert!(c.api_keys.is_empty() && c.api_key_file.is_none() && c.blocklist.is_none() && c.trusted_proxies.is_empty());
        assert_eq!(c.durability, Durability::Always);
        assert_eq!(c.fsync_interval, Duration::from_millis(10));
        assert_eq!(c.segment_bytes, 64 << 20);
        assert_eq!(c.cache_control, "private, max-age=90");
        assert_eq!((c.links.max_url_bytes, c.max_body_bytes, c.max_connections), (8192, 1 << 20, 10_000));
        assert_eq!((c.header_timeout, c.idle_timeout), (Duration::from_secs(10), Duration::from_secs(60)));
        assert_eq!((c.cache_entries, c.cache_bytes), (1_000_000, 256 << 20));
        assert_eq!((c.cache_ttl, c.cache_ttl_jitter), (Duration::from_secs(60), Duration::from_secs(15)));
        assert_eq!((c.snapshot_records, c.snapshot_interval), (1_000_000, Duration::from_secs(300)));
        assert_eq!(c.compact_ratio, 0.5);
        assert!(!c.repair);
        assert_eq!((c.scrub_rate, c.scrub_interval), (16 << 20, Duration::from_secs(24 * 3600)));
        assert_eq!((c.log_format, c.log_level.as_str()), (LogFormat::Text, "info"));
        assert_eq!(c.drain_delay, Duration::ZERO);
        assert_eq!((c.ui, c.root_redirect.as_ref()), (Switch::On, None));
        assert!(c.cluster.is_none());
    }

    #[test]
    fn cluster_defaults_and_resolved_fields() {
        let key = "0123456789abcdef";
        let c = serve(&["--node-id", "a", "--cluster-key", key]).unwrap().cluster.expect("cluster mode");
        assert_eq!((c.node_id.as_str(), c.cluster_key.as_str()), ("a", key));
        assert_eq!(c.advertise, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((c.replication_factor, c.vnodes, c.partitions), (3, 128, 16));
        assert_eq!(c.dead_after, Duration::from_secs(600));
        assert_eq!(c.peer_timeout, Duration::from_millis(500));
        assert!(c.seeds.is_empty());
        assert!(serve(&["--vnodes", "7"]).unwrap().cluster.is_none(), "cluster settings alone do not turn clustering on");
    }

    #[test]
    fn help_states_every_default() {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        let no_default =
            ["help", "config", "api-key", "api-key-file", "trusted-proxy", "blocklist", "node-id", "seed", "cluster-key", "geoip-db"];
        let serve = Cli::command();
        for arg in serve.find_subcommand("serve").unwrap().get_arguments() {
            let long = arg.get_long().unwrap();
            let stated = arg.get_help().is_some_and(|h| h.to_string().contains("[default: "))
                || (!arg.get_default_values().is_empty() && !arg.is_hide_default_value_set());
            assert!(stated || no_default.contains(&long), "--{long} does not state its default");
        }
        for shown in ["[default: 10ms]", "[default: \"private, max-age=90\"]", "[default: 67108864]", "[default: 0.5]", "[default: 3]"] {
            assert!(help.contains(shown), "help lacks {shown}:\n{help}");
        }
    }

    #[test]
    fn toml_fills_what_the_command_line_leaves_out() {
        let f = toml_file(
            "workers = 3\ncache-ttl = \"5s\"\ncompact-ratio = 0.25\napi-key = [\"key-one-1\", \"key-two-2\"]\nrepair = true\n\
             public-url = \"https://sho.rt/\"\ndurability = \"never\"\ncreate-rate = 4\n",
        );
        let path = f.path().to_str().unwrap();
        let c = serve(&["--config", path, "--workers", "2"]).unwrap();
        assert_eq!(c.workers, 2, "the flag beats the file");
        assert_eq!(c.cache_ttl, Duration::from_secs(5));
        assert_eq!(c.compact_ratio, 0.25);
        assert_eq!(c.api_keys, ["key-one-1", "key-two-2"]);
        assert!(c.repair);
        assert_eq!(c.public_url().as_str(), "https://sho.rt/");
        assert_eq!(c.durability, Durability::Never);
        assert_eq!((c.create_rate, c.create_burst()), (4, 4));
        let c = serve(&["--config", path, "--api-key", "key-three-3"]).unwrap();
        assert_eq!(c.api_keys, ["key-three-3"], "a list on the command line replaces the file's");
    }

    /// The only test that sets a `SHORTD_*` variable; no other test reads
    /// `--cache-ttl-jitter`.
    #[test]
    fn flag_beats_variable_beats_file() {
        let f = toml_file("cache-ttl-jitter = \"3s\"\n");
        let path = f.path().to_str().unwrap();
        assert_eq!(serve(&["--config", path]).unwrap().cache_ttl_jitter, Duration::from_secs(3));
        std::env::set_var("SHORTD_CACHE_TTL_JITTER", "2s");
        let from_env = serve(&["--config", path]).map(|c| c.cache_ttl_jitter);
        let from_flag = serve(&["--config", path, "--cache-ttl-jitter", "1s"]).map(|c| c.cache_ttl_jitter);
        std::env::remove_var("SHORTD_CACHE_TTL_JITTER");
        assert_eq!(from_env.unwrap(), Duration::from_secs(2));
        assert_eq!(from_flag.unwrap(), Duration::from_secs(1));
    }

    #[test]
    fn the_file_is_refused_with_an_unknown_or_mistyped_key() {
        for (text, wanted) in [
            ("cache-tll = \"5s\"\n", "invalid setting --config: "),
            ("config = \"other.toml\"\n", "unknown field `config`"),
            ("help = true\n", "unknown field `help`"),
            ("repair = \"yes\"\n", "repair: expected true or false"),
            ("api-key = \"one-single-key\"\n", "api-key: expected a list"),
            ("api-key = [\"has,a-comma\"]\n", "api-key: an item cannot contain ','"),
            ("workers = [1]\n", "workers: expected a string or a number"),
            ("workers = \n", "invalid setting --config: "),
        ] {
            let f = toml_file(text);
            let err = serve(&["--config", f.path().to_str().unwrap()]).unwrap_err();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
        assert!(serve(&["--config", "/nonexistent/shortd.toml"]).unwrap_err().starts_with("invalid setting --config: "));
    }

    #[test]
    fn a_bad_value_names_its_setting_wherever_it_came_from() {
        for (args, wanted) in [
            (&["--workers", "0"][..], "invalid setting --workers: must be between 1 and 1024"),
            (&["--workers", "many"], "invalid setting --workers: \"many\" is not a number"),
            (&["--durability", "sometimes"], "invalid setting --durability: \"sometimes\" is not one of always, interval, never"),
            (&["--fsync-interval", "0s"], "invalid setting --fsync-interval: must be more than zero"),
            (&["--header-timeout", "soon"], "invalid setting --header-timeout: \"soon\" is not a duration"),
            (&["--listen", "nowhere"], "invalid setting --listen: \"nowhere\" is not ADDR:PORT"),
            (&["--compact-ratio", "2"], "invalid setting --compact-ratio: must be between 0.05 and 1.0"),
            (&["--segment-bytes", "65536", "--max-url-bytes", "16384"], "invalid setting --segment-bytes: must hold at least four"),
            (&["--seed", "127.0.0.1:9"], "invalid setting --seed: needs --node-id"),
            (&["--node-id", "a"], "invalid setting --cluster-key: is required in cluster mode"),
            (&["--node-id", "a", "--cluster-key", "too-short"], "invalid setting --cluster-key: needs at least 16"),
            (&["--node-id", "a b"], "invalid setting --node-id: "),
            (&["--node-id", "a", "--cluster-key", "0123456789abcdef", "--listen", "0.0.0.0:80"], "invalid setting --advertise: "),
            (&["--api-key-file", "/nonexistent/keys"], "invalid setting --api-key-file: "),
        ] {
            let err = serve(args).unwrap_err();
            assert!(err.starts_with(wanted), "{args:?}: {err}");
        }
        let f = toml_file("max-body-bytes = 100\n");
        let err = serve(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert_eq!(err, "invalid setting --max-body-bytes: must be at least 1024");
    }
}
