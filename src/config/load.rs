//! TEMPORARY STUB (being replaced by the full loader).
use super::Config;

/// One problem.
#[derive(Debug, Clone)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// Errors.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError {
        problems: vec![Problem { file: origin.into(), line: None, key: String::new(), message: e.to_string() }],
    })
}

pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem { file: path.display().to_string(), line: None, key: String::new(), message: e.to_string() }],
    })?;
    load_str(&text, &path.display().to_string())
}
