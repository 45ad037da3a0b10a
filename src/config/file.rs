//! `--config`: a TOML file where every `serve` setting may also live, under its flag's name in
//! snake_case, plus the `[namespaces]` table. A file value becomes the default of its flag, so
//! clap itself applies flag > environment variable > file > built-in default and parses the
//! value with the flag's own value parser. Whatever is refused is reported as
//! `path:line:column: reason`.

use std::{
    any::TypeId,
    ffi::OsString,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{
    Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches,
    error::{ContextKind, ContextValue},
    parser::ValueSource,
};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{Config, ConfigError, DefaultsOnly, NamespaceError, Namespaces, suggest};

/// Why `Config::load` refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or environment variable clap refused; `clap::Error::exit` prints it clap's way.
    #[error(transparent)]
    Args(#[from] clap::Error),
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    File(#[from] FileError),
    /// A rule of `Config::check` broken by settings that do not come from the file.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Something wrong in the configuration file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl Config {
    /// The configuration `rtgate serve` runs with: `args` as its command line (the first item
    /// is the program name), the environment, and the file `--config` / `RTGATE_CONFIG`
    /// names, if any; then `Config::check`. Flags win over variables, variables over the
    /// file, the file over the built-in defaults.
    pub fn load<I, T>(args: I) -> Result<Config, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let cmd = DefaultsOnly::command();
        // A first pass learns the file's name, which a flag or a variable gives.
        let first = cmd.clone().try_get_matches_from(&args)?;
        let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
            let config = DefaultsOnly::from_arg_matches(&first)?.config;
            config.check()?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|source| LoadError::Read { path: path.clone(), source })?;
        let file = ConfigFile::parse(&path, &text)?;
        let matches = file.under(cmd)?.try_get_matches_from(&args)?;
        let mut config = DefaultsOnly::from_arg_matches(&matches)?.config;
        if let Some(namespaces) = file.namespaces()? {
            config.namespaces = namespaces;
        }
        config.check().map_err(|e| file.blame(e, &matches))?;
        Ok(config)
    }
}

/// The key under which a file sets each flag: its long name in snake_case.
fn key(arg: &Arg) -> Option<String> {
    let settable =
        matches!(arg.get_action(), ArgAction::Set | ArgAction::Append | ArgAction::SetTrue);
    let long = arg.get_long().filter(|_| settable && arg.get_id() != "config")?;
    Some(long.replace('-', "_"))
}

/// What a flag's value looks like in TOML.
#[derive(Clone, Copy)]
enum Shape {
    Bool,
    List,
    Integer,
    Duration,
    Text,
}

impl Shape {
    fn of(arg: &Arg) -> Shape {
        let ty = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
        ];
        match arg.get_action() {
            ArgAction::SetTrue => Shape::Bool,
            ArgAction::Append => Shape::List,
            _ if integers.iter().any(|t| ty == *t) => Shape::Integer,
            _ if ty == TypeId::of::<Duration>() => Shape::Duration,
            _ => Shape::Text,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Shape::Bool => "true or false",
            Shape::List => "an array of strings",
            Shape::Integer => "an integer",
            Shape::Duration => "a duration such as \"25s\"",
            Shape::Text => "a string",
        }
    }

    /// The value as the command-line strings that would say the same, if it has this shape.
    fn strings(self, value: &DeValue<'_>) -> Option<Vec<String>> {
        match (self, value) {
            (Shape::Bool, DeValue::Boolean(b)) => Some(vec![b.to_string()]),
            (Shape::Integer, DeValue::Integer(n)) => {
                // Wider than any flag, so the flag's parser is what says "too large".
                let n = i128::from_str_radix(n.as_str(), n.radix()).ok()?;
                Some(vec![n.to_string()])
            }
            (Shape::Duration | Shape::Text, DeValue::String(s)) => Some(vec![s.to_string()]),
            (Shape::List, DeValue::Array(items)) => items
                .iter()
                .map(|item| item.get_ref().as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        }
    }
}

/// A parsed configuration file: its settings (with where each is) and its namespaces.
struct ConfigFile<'a> {
    path: &'a Path,
    text: &'a str,
    root: DeTable<'a>,
}

impl<'a> ConfigFile<'a> {
    fn parse(path: &'a Path, text: &'a str) -> Result<Self, FileError> {
        let root = DeTable::parse(text).map_err(|e| {
            // Every syntax error has a span; the start of the file is a last resort.
            let at = e.span().map_or(0, |s| s.start);
            FileError::at(path, text, at, e.message().trim_end().to_owned())
        })?;
        Ok(ConfigFile { path, text, root: root.into_inner() })
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> FileError {
        FileError::at(self.path, self.text, span.start, message.into())
    }

    /// `cmd` with every setting of the file as the default of its flag. Each value is checked
    /// here, with its flag's parser, even where a flag or a variable will override it: a file
    /// that says something wrong is refused whatever else is set.
    fn under(&self, cmd: Command) -> Result<Command, FileError> {
        let mut built = cmd.clone();
        built.build();
        let args: Vec<(String, &Arg)> =
            built.get_arguments().filter_map(|a| Some((key(a)?, a))).collect();
        // In the file's order, so the first mistake reported is the first one in the file.
        let mut entries: Vec<_> = self.root.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut defaults = Vec::new();
        for (k, v) in entries {
            let name = k.get_ref().as_ref();
            if name == "namespaces" {
                continue;
            }
            let Some((_, arg)) = args.iter().find(|(key, _)| key == name) else {
                let message = if name == "config" {
                    "\"config\" cannot be set in the configuration file; it names the file \
                     (--config, RTGATE_CONFIG)"
                        .to_owned()
                } else {
                    let hint = suggest::closest(name, args.iter().map(|(k, _)| k.as_str()));
                    format!("unknown key {name:?}{}", suggest::hint(hint))
                };
                return Err(self.error(k.span(), message));
            };
            let shape = Shape::of(arg);
            let value = v.get_ref();
            let strings = shape.strings(value).ok_or_else(|| {
                let found = value.type_str();
                self.error(v.span(), format!("{name} must be {}, not {found}", shape.expected()))
            })?;
            if !matches!(shape, Shape::Bool) {
                for s in &strings {
                    parse_as_flag(arg, s).map_err(|e| {
                        let why = reason(&e);
                        self.error(v.span(), format!("invalid value {s:?} for {name}: {why}"))
                    })?;
                }
            }
            defaults.push((arg.get_id().clone(), strings));
        }
        Ok(defaults
            .into_iter()
            .fold(cmd, |cmd, (id, values)| cmd.mut_arg(id, |a| a.default_values(values))))
    }

    /// The `[namespaces]` table, if the file has one.
    fn namespaces(&self) -> Result<Option<Namespaces>, FileError> {
        let Some((key, value)) = self.entry(&self.root, "namespaces") else { return Ok(None) };
        let DeValue::Table(_) = value.get_ref() else {
            let found = value.get_ref().type_str();
            return Err(
                self.error(value.span(), format!("namespaces must be a table, not {found}"))
            );
        };
        // The same text read again as plain values; it parsed once, so it parses again.
        let mut doc: toml::Table = toml::from_str(self.text)
            .map_err(|e| self.error(key.span(), e.message().to_owned()))?;
        let Some(toml::Value::Table(table)) = doc.remove("namespaces") else {
            return Err(self.error(key.span(), "namespaces must be a table"));
        };
        Namespaces::from_table(&table)
            .map(Some)
            .map_err(|e| self.error(self.namespace_span(&e).unwrap_or(key.span()), e.to_string()))
    }

    /// Where a namespace error points: its option's key, else the namespace's.
    fn namespace_span(&self, e: &NamespaceError) -> Option<Range<usize>> {
        let (_, namespaces) = self.entry(&self.root, "namespaces")?;
        let DeValue::Table(namespaces) = namespaces.get_ref() else { return None };
        let (name, options) = self.entry(namespaces, e.namespace())?;
        let option = match (options.get_ref(), e.option()) {
            (DeValue::Table(options), Some(option)) => self.entry(options, option),
            _ => None,
        };
        Some(option.map_or(name.span(), |(key, _)| key.span()))
    }

    /// A key of `table` and its value.
    fn entry<'t>(
        &self,
        table: &'t DeTable<'a>,
        name: &str,
    ) -> Option<(&'t Spanned<std::borrow::Cow<'a, str>>, &'t Spanned<DeValue<'a>>)> {
        table.iter().find(|(k, _)| k.get_ref() == name)
    }

    /// `Config::check`'s error, pointed at the line of the file it comes from when it does:
    /// a setting counts only when the file's value is the one in effect.
    fn blame(&self, err: ConfigError, matches: &ArgMatches) -> LoadError {
        let from_file = |key: &str| -> Option<Range<usize>> {
            let cmd = DefaultsOnly::command();
            let arg = cmd.get_arguments().find(|a| self::key(a).as_deref() == Some(key))?;
            let in_effect =
                matches.value_source(arg.get_id().as_str()) == Some(ValueSource::DefaultValue);
            let (k, _) = self.entry(&self.root, key)?;
            in_effect.then(|| k.span())
        };
        let span = match &err {
            ConfigError::SplitHistory { .. } => {
                ["redis_url", "allow_local_database"].into_iter().find_map(from_file)
            }
            ConfigError::InstanceId(_) => from_file("instance_id"),
            ConfigError::TlsPair => from_file("tls_cert").or_else(|| from_file("tls_key")),
            ConfigError::RedisTls(_) => {
                ["redis_tls_cert", "redis_tls_key", "redis_tls_ca"].into_iter().find_map(from_file)
            }
            ConfigError::Api { key, .. } => from_file(key),
            ConfigError::Namespace(e) => self.namespace_span(e).or_else(|| match e {
                NamespaceError::HistoryTooLarge { .. } => from_file("max_history_size"),
                NamespaceError::HistoryOutlivesMeta { .. } => from_file("history_meta_ttl"),
                _ => None,
            }),
        };
        match span {
            Some(span) => LoadError::File(self.error(span, err.to_string())),
            None => LoadError::Config(err),
        }
    }
}

impl FileError {
    fn at(path: &Path, text: &str, offset: usize, message: String) -> FileError {
        let offset = (0..=offset.min(text.len())).rev().find(|&i| text.is_char_boundary(i));
        let before = &text[..offset.unwrap_or(0)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        FileError { path: path.to_owned(), line, column, message }
    }
}

/// Parses `value` exactly as `--flag=value` would be (clap keeps a flag's value parser to
/// itself), in a command of that flag alone and without its variable, which would otherwise be
/// read instead.
fn parse_as_flag(arg: &Arg, value: &str) -> Result<(), clap::Error> {
    let long = arg.get_long().unwrap_or_default();
    let alone = arg.clone().env(None).required(false);
    let argv = ["rtgate".to_owned(), format!("--{long}={value}")];
    Command::new("rtgate").arg(alone).try_get_matches_from(argv).map(drop)
}

/// Why a flag's parser refused a value, without clap's "error: invalid value … for --flag"
/// framing (the file error says which key).
fn reason(err: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(err) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    let shown = err.to_string();
    let first = shown.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_1_based_lines_and_character_columns() {
        let at = |text: &str, offset| {
            let e = FileError::at(Path::new("f.toml"), text, offset, String::new());
            (e.line, e.column)
        };
        assert_eq!(at("abc", 0), (1, 1));
        assert_eq!(at("abc\ndef", 5), (2, 2));
        assert_eq!(at("é = 1\nx", 7), (2, 1));
        assert_eq!(at("é = 1", 1), (1, 1)); // inside a character: its start
        assert_eq!(at("ab", 99), (1, 3));
    }

    #[test]
    fn every_file_key_is_a_flag_in_snake_case() {
        let cmd = DefaultsOnly::command();
        let keys: Vec<String> = cmd.get_arguments().filter_map(key).collect();
        for k in ["ping_interval", "jwt_secret", "jwt_algorithm", "message_events", "dev_events"] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "config" || k == "help" || k.contains('-')), "{keys:?}");
    }
}
