//! Configuration: the YAML schema (`schema`), positions of its fields (`locate`) and the checks
//! that run before anything starts (`validate`).
//!
//! Problems are collected, not returned one at a time: a user fixing a config wants the whole
//! list, each with `file:line:column: field.path: message`.

mod locate;
mod prescan;
mod schema;
mod validate;
pub(crate) use validate::check_readable_file;

pub use locate::{Locator, Pos};
pub use prescan::{MAX_CONFIG_BYTES, MAX_DEPTH};
pub use schema::*;
pub use validate::{check_stream, validate, validate_faces};

use std::fmt;
use std::path::{Path, PathBuf};

/// Most streams one vigil runs at once: a config with more is refused, and so is a stream
/// added over the API beyond it.
pub const MAX_STREAMS: usize = 1024;

/// One thing wrong with a config, located in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub pos: Pos,
    /// Field path such as `streams[0].url`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file.display(),
            self.pos.line,
            self.pos.col
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A parsed config with what is needed to report problems against its text.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: PathBuf,
    pub locator: Locator,
}

impl Loaded {
    /// A problem at `path`, located in the file.
    pub fn problem(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        let path = path.into();
        Problem {
            file: self.file.clone(),
            pos: self.locator.find(&path),
            path,
            message: message.into(),
        }
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_against(&self.file, p)
    }
}

fn resolve_against(config_file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match config_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Reads and parses a config file. Syntax and type errors come back located; nothing here
/// touches the files the config names (see [`validate`]).
pub fn load(file: &Path) -> Result<Loaded, Problems> {
    let whole = |message: String| {
        Problems(vec![Problem {
            file: file.to_path_buf(),
            pos: Pos { line: 1, col: 1 },
            path: String::new(),
            message,
        }])
    };
    if file.is_dir() {
        return Err(whole("is a directory, not a YAML config file".into()));
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    if size > MAX_CONFIG_BYTES {
        return Err(whole(format!(
            "the file is {size} bytes; a config may have at most {MAX_CONFIG_BYTES}"
        )));
    }
    let bytes =
        std::fs::read(file).map_err(|e| whole(format!("cannot read the config file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| whole(format!("not UTF-8 text: {e}")))?;
    parse(file, &text)
}

/// Parses config text; `file` names it in problems and anchors relative paths.
pub fn parse(file: &Path, text: &str) -> Result<Loaded, Problems> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        let message = "the file is empty: a config needs at least a `streams:` list".to_string();
        return Err(Problems(vec![Problem {
            file: file.to_path_buf(),
            pos: Pos { line: 1, col: 1 },
            path: String::new(),
            message,
        }]));
    }
    if let Err((pos, message)) = prescan::prescan(text) {
        return Err(Problems(vec![Problem {
            file: file.to_path_buf(),
            pos,
            path: String::new(),
            message,
        }]));
    }
    let locator = Locator::new(text);
    match serde_yaml::from_str::<Config>(text) {
        Ok(mut config) => Ok(Loaded {
            config: {
                config.settle_defaults();
                config
            },
            file: file.to_path_buf(),
            locator,
        }),
        Err(e) => Err(Problems(vec![from_serde(file, &locator, &e)])),
    }
}

/// serde_yaml's message reads `path: what at line L column C`; split it into our parts.
fn from_serde(file: &Path, locator: &Locator, e: &serde_yaml::Error) -> Problem {
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    let mut path = String::new();
    if let Some((head, rest)) = message.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_alphanumeric() || "_.[]".contains(c));
        if looks_like_path {
            path = head.to_string();
            message = rest.to_string();
        }
    }
    let mut pos = match e.location() {
        Some(l) => Pos {
            line: l.line(),
            col: l.column(),
        },
        None => locator.find(&path),
    };
    // serde names the field but may place it at the enclosing mapping (an unknown key inside
    // an internally tagged enum such as `faces.detector`) or at 1:1 (a repeated top-level key):
    // point at the key itself.
    let named = |prefix: &str| {
        let rest = message.strip_prefix(prefix)?;
        Some(rest[..rest.find('`')?].to_string())
    };
    let found = if let Some(key) = named("unknown field `") {
        // Where serde already points at the key's own line, its position is the key's.
        locator
            .find_key(&path, &key, pos)
            .filter(|(_, at)| at.line != pos.line)
    } else if let Some(key) = named("duplicate field `") {
        locator.find_repeated(&path, &key)
    } else {
        None
    };
    if let Some((full, at)) = found {
        path = full;
        pos = at;
    }
    Problem {
        file: file.to_path_buf(),
        pos,
        path,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands of corrupted versions of the default config: every one parses or fails with
    /// located problems, and none panics (the YAML parser, the locator and the checks all see
    /// broken input).
    #[test]
    fn corrupted_configs_give_problems_never_a_panic() {
        let original = include_str!("../../config/default.yaml");
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let alphabet: &[u8] = b" :-[]{}'\"#&*!|>%@`,\n\t0123456789abcxyz\\";
        let mut failures = 0;
        for _ in 0..3000 {
            let mut bytes = original.as_bytes().to_vec();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len());
                match next(3) {
                    0 => bytes[at] = alphabet[next(alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[next(alphabet.len())]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            match parse(Path::new("fuzz.yaml"), &text) {
                Ok(l) => {
                    let _ = validate(&l);
                }
                Err(Problems(p)) => {
                    failures += 1;
                    assert!(!p.is_empty());
                    assert!(p.iter().all(|p| p.pos.line >= 1 && p.pos.col >= 1), "{p:?}");
                }
            }
        }
        assert!(
            failures > 100,
            "the mutations should break many configs, broke {failures}"
        );
    }
}
