//! Loads HealthChecks from every `*.yaml`/`*.yml` file in a folder (local and serve modes).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::resource::{API_VERSION, HealthCheck, KIND};

/// A valid HealthCheck and where it came from.
#[derive(Clone, Debug)]
pub struct LoadedCheck {
    pub check: HealthCheck,
    pub file: PathBuf,
    /// 1-based document index within the file.
    pub doc: usize,
}

/// A document that was refused, with file, document index and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based; `None` when the file itself could not be read.
    pub doc: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.doc {
            Some(doc) => write!(f, "{} doc {doc}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What a folder held: the valid checks (which keep running) and every refused document.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub checks: Vec<LoadedCheck>,
    pub errors: Vec<LoadError>,
}

/// The folder itself could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the checks folder {}: {source}; pass an existing folder with --checks", dir.display())]
pub struct ReadDirError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Reads every `*.yaml`/`*.yml` file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Loaded, ReadDirError> {
    let read_err = |source| ReadDirError {
        dir: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut loaded = Loaded::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parse_file(&file, &text, &mut loaded),
            Err(e) => loaded.errors.push(LoadError {
                file,
                doc: None,
                message: format!("cannot read the file: {e}"),
            }),
        }
    }
    reject_duplicates(&mut loaded);
    Ok(loaded)
}

/// Parses every document of one file into `loaded`.
pub fn parse_file(file: &Path, text: &str, loaded: &mut Loaded) {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = index + 1;
        let error = |message: String| LoadError {
            file: file.to_owned(),
            doc: Some(doc),
            message,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                loaded.errors.push(error(format!("not valid YAML: {e}")));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        match parse_document(value) {
            Ok(check) => loaded.checks.push(LoadedCheck {
                check,
                file: file.to_owned(),
                doc,
            }),
            Err(messages) => loaded.errors.extend(messages.into_iter().map(error)),
        }
    }
}

fn parse_document(value: serde_yaml::Value) -> Result<HealthCheck, Vec<String>> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_owned)
    };
    match (field("apiVersion"), field("kind")) {
        (Some(api), Some(kind)) if api == API_VERSION && kind == KIND => {}
        (api, kind) => {
            return Err(vec![format!(
                "apiVersion/kind: expected {API_VERSION}/{KIND}, found {}/{}; only HealthCheck \
                 resources belong in the checks folder",
                api.as_deref().unwrap_or("(none)"),
                kind.as_deref().unwrap_or("(none)")
            )]);
        }
    }
    let check: HealthCheck = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        vec![if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }]
    })?;
    let problems = check.validate();
    if problems.is_empty() {
        Ok(check)
    } else {
        Err(problems.iter().map(ToString::to_string).collect())
    }
}

fn reject_duplicates(loaded: &mut Loaded) {
    let mut first: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut kept = Vec::with_capacity(loaded.checks.len());
    for c in std::mem::take(&mut loaded.checks) {
        let id = c.check.id();
        if let Some((file, doc)) = first.get(&id) {
            loaded.errors.push(LoadError {
                file: c.file.clone(),
                doc: Some(c.doc),
                message: format!(
                    "metadata.name: HealthCheck {id} is already defined in {} doc {doc}; names must be unique per namespace",
                    file.display()
                ),
            });
        } else {
            first.insert(id, (c.file.clone(), c.doc));
            kept.push(c);
        }
    }
    loaded.checks = kept;
}

#[cfg(test)]
mod tests;
