//! The console's settings: `<data_dir>/console.toml`, a drop-in the daemon owns and writes
//! (the operator's own TOML is never touched), applied over the config file at every load.
//!
//! Only the keys in [`SETTINGS`] (and the Kakao Pay setup) may be written here, so a
//! drop-in can never move the listeners or the data directory. A change is checked by the
//! same [`Config::from_toml`] and `validate` as `commeowd check-config`, on the merged
//! result, before anything is written; the file is replaced atomically (write, fsync,
//! rename), so a crash leaves the old settings or the new, never half of them.

use super::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// The drop-in's name in the data directory.
pub const FILE: &str = "console.toml";
/// Where the console writes the Kakao Pay secret key (mode 0600), in the data directory.
pub const KAKAO_SECRET_FILE: &str = "kakao_pay.secret";

/// When a setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    Live,
    AtRestart,
}

/// What a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Integer,
    Number,
    /// `auto`, `true` or `false`.
    Switch,
}

/// A key the console may set.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    pub applies: Applies,
}

const fn restart(key: &'static str, kind: Kind) -> Setting {
    Setting {
        key,
        kind,
        applies: Applies::AtRestart,
    }
}

/// The keys a venue might tune from its console. Each is read once at startup by the part
/// that uses it (the chat's rate limiter, the segmenter, the ladder's probe), so each
/// applies at restart; Kakao Pay's setup and catalog (not listed here) apply live.
pub const SETTINGS: [Setting; 11] = [
    restart("chat.max_chars", Kind::Integer),
    restart("chat.rate_messages", Kind::Integer),
    restart("chat.rate_seconds", Kind::Number),
    restart("chat.history", Kind::Integer),
    restart("points.donation_min", Kind::Integer),
    restart("points.donation_max", Kind::Integer),
    restart("points.message_max_chars", Kind::Integer),
    restart("hls.target_duration", Kind::Number),
    restart("hls.part_target", Kind::Number),
    restart("channels.per_streamer", Kind::Integer),
    restart("transcode.enabled", Kind::Switch),
];

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn read_table(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map(Some)
            .map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The drop-in as it is now (empty when there is none).
pub fn current(data_dir: &Path) -> Result<toml::Table, ConfigError> {
    Ok(read_table(&path(data_dir))?.unwrap_or_default())
}

/// `over` laid on `base`, table by table (an array or value in `over` replaces).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Config {
    /// This config with the console's drop-in laid over its file (and the flags that moved
    /// the listeners or the data directory kept). Without a drop-in, unchanged.
    pub fn with_console(self) -> Result<Config, ConfigError> {
        let dir = self.data_dir();
        match read_table(&path(&dir))? {
            Some(drop_in) => self.layered(drop_in, &path(&dir)),
            None => Ok(self),
        }
    }

    /// The config from its file with `drop_in` over it, checked as `check-config` checks.
    fn layered(&self, drop_in: toml::Table, named: &Path) -> Result<Config, ConfigError> {
        let mut base = match &self.source {
            Some(file) => read_table(file)?.unwrap_or_default(),
            None => toml::Table::new(),
        };
        merge(&mut base, drop_in);
        let text = toml::to_string(&base).map_err(|e| ConfigError::Parse {
            path: named.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut merged = Config::from_toml(&text, named)?;
        merged.source = self.source.clone();
        merged.data_dir = self.data_dir.clone();
        merged.http.listen = self.http.listen;
        merged.rtmp.listen = self.rtmp.listen;
        Ok(merged)
    }

    /// Changes the drop-in with `edit`, checks the config that results, and only then
    /// writes it. Returns the new config. `base` is this config without the drop-in's
    /// effect being required: the file and flags it came from are what count.
    pub fn change_console(
        &self,
        edit: impl FnOnce(&mut toml::Table) -> Result<(), ConfigError>,
    ) -> Result<Config, ConfigError> {
        self.plan_console(edit)?.write()
    }

    /// [`Config::change_console`] up to the write: the edit applied and the result checked,
    /// nothing written yet, so a caller with files of its own to write (a secret the
    /// drop-in names) writes them only for a change that will be taken.
    pub fn plan_console(
        &self,
        edit: impl FnOnce(&mut toml::Table) -> Result<(), ConfigError>,
    ) -> Result<ConsoleChange, ConfigError> {
        let dir = self.data_dir();
        let file = path(&dir);
        let mut drop_in = current(&dir)?;
        edit(&mut drop_in)?;
        let merged = self.layered(drop_in.clone(), &file)?;
        // As `check-config` does: the fleet relay's TLS files must load.
        merged.fleet.check_broker()?;
        let text = format!(
            "# Written by commeowd's console (the admin pages). Edit there, not here.\n{}",
            toml::to_string(&drop_in).map_err(|e| ConfigError::Parse {
                path: file.clone(),
                message: e.to_string(),
            })?
        );
        Ok(ConsoleChange { merged, file, text })
    }
}

/// A checked change to the console's drop-in, not yet written.
#[derive(Debug)]
pub struct ConsoleChange {
    merged: Config,
    file: PathBuf,
    text: String,
}

impl ConsoleChange {
    /// Writes the drop-in (atomically, owner-only) and returns the config it makes.
    pub fn write(self) -> Result<Config, ConfigError> {
        write_atomically(&self.file, self.text.as_bytes(), 0o600).map_err(|source| {
            ConfigError::Read {
                path: self.file.clone(),
                source,
            }
        })?;
        Ok(self.merged)
    }
}

/// Sets `key` (`table.name`, one of [`SETTINGS`]) in a drop-in table from the text the
/// console sent; an empty text removes it (back to the file's value or the default).
pub fn set_text(drop_in: &mut toml::Table, key: &str, text: &str) -> Result<(), ConfigError> {
    let setting = SETTINGS
        .iter()
        .find(|s| s.key == key)
        .ok_or_else(|| ConfigError::Invalid {
            key: "settings",
            message: format!("`{key}` is not a setting the console may change"),
        })?;
    let (table, name) = key.split_once('.').unwrap_or(("", key));
    let text = text.trim();
    let section = drop_in
        .entry(table.to_string())
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let Some(section) = section.as_table_mut() else {
        return Err(ConfigError::Invalid {
            key: "settings",
            message: format!("`{table}` in the drop-in is not a table"),
        });
    };
    if text.is_empty() {
        section.remove(name);
        return Ok(());
    }
    let invalid = |what: &str| ConfigError::Invalid {
        key: setting.key,
        message: format!("`{text}` is not {what}"),
    };
    let value = match setting.kind {
        Kind::Integer => toml::Value::Integer(text.parse().map_err(|_| invalid("a whole number"))?),
        Kind::Number => {
            let number: f64 = text.parse().map_err(|_| invalid("a number"))?;
            if !number.is_finite() {
                return Err(invalid("a number"));
            }
            toml::Value::Float(number)
        }
        Kind::Switch => match text {
            "auto" => toml::Value::String("auto".into()),
            "true" | "on" => toml::Value::Boolean(true),
            "false" | "off" => toml::Value::Boolean(false),
            _ => return Err(invalid("auto, true or false")),
        },
    };
    section.insert(name.to_string(), value);
    Ok(())
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the new
/// one, never a part: a temporary file beside it, synced, renamed over, directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path, file: Option<&str>) -> Config {
        let mut config = match file {
            Some(text) => {
                let path = dir.join("main.toml");
                std::fs::write(&path, text).expect("write");
                Config::load(&path).expect("load")
            }
            None => Config::default(),
        };
        config.data_dir = Some(dir.to_path_buf());
        config
    }

    #[test]
    fn the_drop_in_lies_over_the_file_and_keeps_its_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(
            dir.path(),
            Some("[chat]\nmax_chars = 300\nrate_messages = 9\n"),
        );
        let changed = config
            .change_console(|t| set_text(t, "chat.max_chars", "120"))
            .expect("change");
        assert_eq!(
            (changed.chat.max_chars, changed.chat.rate_messages),
            (120, 9)
        );
        let reloaded = config_in(
            dir.path(),
            Some("[chat]\nmax_chars = 300\nrate_messages = 9\n"),
        )
        .with_console()
        .expect("reload");
        assert_eq!(
            (reloaded.chat.max_chars, reloaded.chat.rate_messages),
            (120, 9)
        );
        // Emptied: back to the file's value.
        let back = config
            .change_console(|t| set_text(t, "chat.max_chars", ""))
            .expect("change");
        assert_eq!(back.chat.max_chars, 300);
    }

    #[test]
    fn a_bad_value_is_refused_with_check_configs_words_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(dir.path(), None);
        config
            .change_console(|t| set_text(t, "points.donation_min", "10"))
            .expect("change");
        let before = std::fs::read_to_string(path(dir.path())).expect("drop-in");
        let error = config
            .change_console(|t| {
                set_text(t, "points.donation_min", "500")?;
                set_text(t, "points.donation_max", "100")
            })
            .expect_err("max below min");
        let check_config = {
            let mut c = Config::default();
            c.points.donation_min = 500;
            c.points.donation_max = 100;
            c.validate().expect_err("invalid").to_string()
        };
        assert!(
            error.to_string().ends_with(&check_config),
            "{error} / {check_config}"
        );
        assert_eq!(
            std::fs::read_to_string(path(dir.path())).expect("drop-in"),
            before
        );
        let refused = config
            .change_console(|t| set_text(t, "http.listen", "0.0.0.0:1"))
            .expect_err("not a console setting");
        assert!(refused.to_string().contains("not a setting"), "{refused}");
    }
}
