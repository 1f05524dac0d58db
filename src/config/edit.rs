//! Edits of the config file that keep the rest of it as the user wrote it.

use super::{Config, ConfigError, ShareConfig};
use std::path::Path;

impl Config {
    /// Removes share `name`'s `[[share]]` table from the config file, with the
    /// comment lines right above it; everything else (other tables, comments,
    /// layout) stays as it was. Returns the share as it was configured.
    pub fn remove_share(path: &Path, name: &str) -> Result<ShareConfig, ConfigError> {
        let io = |source| ConfigError::Io { path: path.to_path_buf(), source };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let before = Self::parse(&text, path)?;
        let Some(removed) = before.shares.iter().find(|s| s.name == name).cloned() else {
            return Err(ConfigError::NoShare { path: path.to_path_buf(), name: name.to_string() });
        };
        let new_text = without_share(&text, name).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: 1,
            message,
        })?;
        Self::parse(&new_text, path)?;
        crate::home::write_atomic(path, new_text.as_bytes(), 0o644).map_err(io)?;
        Ok(removed)
    }
}

/// `text` without the `[[share]]` table named `name`.
fn without_share(text: &str, name: &str) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    let shares = doc
        .get_mut("share")
        .and_then(|i| i.as_array_of_tables_mut())
        .ok_or_else(|| "expected [[share]] tables".to_string())?;
    let at = shares
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
        .ok_or_else(|| format!("no [[share]] table with name = {name:?}"))?;
    shares.remove(at);
    if shares.is_empty() {
        doc.remove("share");
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# my node\n[node]\nname = \"a\"   # this host\nlisten = \"127.0.0.1:1\"\n\n\
        # the web root\n[[share]]\nname = \"www\"\npath = \"/srv/www\"\n\n\
        # logs, nightly\n[[share]]\nname = \"logs\"\npath = \"/srv/logs\"\nignore = [\"*.gz\"]   # kept\n\n# end\n";

    #[test]
    fn a_share_goes_with_its_comment_and_the_rest_stays_as_written() {
        let out = without_share(TEXT, "www").unwrap();
        assert_eq!(
            out,
            "# my node\n[node]\nname = \"a\"   # this host\nlisten = \"127.0.0.1:1\"\n\n\
             # logs, nightly\n[[share]]\nname = \"logs\"\npath = \"/srv/logs\"\nignore = [\"*.gz\"]   # kept\n\n# end\n"
        );
        let last = without_share(&out, "logs").unwrap();
        assert_eq!(last, "# my node\n[node]\nname = \"a\"   # this host\nlisten = \"127.0.0.1:1\"\n\n# end\n");
        assert!(without_share(TEXT, "nope").unwrap_err().contains("nope"));
    }

    #[test]
    fn removing_a_share_from_the_file_checks_it_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, TEXT).unwrap();
        let gone = Config::remove_share(&p, "logs").unwrap();
        assert_eq!((gone.name.as_str(), gone.ignore.clone()), ("logs", vec!["*.gz".to_string()]));
        let now = Config::load(&p).unwrap();
        assert_eq!(now.shares.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["www"]);
        let e = Config::remove_share(&p, "logs").unwrap_err();
        assert!(matches!(e, ConfigError::NoShare { .. }), "{e}");
        std::fs::write(&p, "[node]\nname = \"a\"\n").unwrap();
        let e = Config::remove_share(&p, "www").unwrap_err();
        assert!(e.to_string().contains("config.toml:"), "a broken file is not edited: {e}");
    }
}
