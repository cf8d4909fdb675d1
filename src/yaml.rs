//! Every YAML read and write of the program goes through here (serde-saphyr, not the deprecated
//! serde_yaml): multi-document parsing into JSON values, and YAML-1.1-safe output (strings such as
//! `on`, `yes`, `010` come out quoted, so kubectl reads back exactly what was written).
//! Pure: no I/O.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The deepest nesting of collections flux-order reads, in every file and build output alike (so
/// `--scan` and a build agree): far above real CRD schemas (about 40 levels), and far below
/// what the stacks the program runs on can recurse through.
pub const MAX_DEPTH: usize = 128;

/// Parser limits, raised once here: real fleets have multi-thousand-document builds
/// (CRD bundles), and deeply nested CRD schemas.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_nodes = 50_000_000;
    budget.max_events = 200_000_000;
    budget.max_reader_input_bytes = Some(2 * 1024 * 1024 * 1024);
    budget.max_total_scalar_bytes = 2 * 1024 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // Never quote the source: the lines around an error can hold a neighbouring Secret.
    options.with_snippet = false;
    options
}

/// A YAML syntax or shape error: the parser's message with its line and column, never a quote of
/// the source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

impl YamlError {
    fn of(e: impl std::fmt::Display) -> YamlError {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().trim();
        YamlError(first.strip_prefix("error: ").unwrap_or(first).to_string())
    }
}

/// Parses every document of a YAML stream; empty documents (comments only) are skipped.
pub fn from_multi(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(YamlError::of)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Parses one YAML document into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str_with_options(text, options()).map_err(YamlError::of)
}

/// Serialises one value as a YAML document (no leading `---`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(YamlError::of)
}

/// Serialises values as a multi-document stream, each document followed by `---` as `flux build`
/// prints them.
pub fn to_multi<T: Serialize>(values: &[T]) -> Result<String, YamlError> {
    let mut out = String::new();
    for v in values {
        out.push_str(&to_string(v)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("---\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_empty_documents_and_quotes_yaml11_words() {
        let docs = from_multi("# only a comment\n---\na: 1\n---\n---\nb: x\n").unwrap();
        assert_eq!(docs.len(), 2);
        let out = to_string(&serde_json::json!({"v": "on", "w": "yes", "x": "010"})).unwrap();
        assert!(out.contains("\"on\""), "{out}");
        assert!(out.contains("\"yes\""), "{out}");
        assert!(out.contains("\"010\""), "{out}");
    }

    #[test]
    fn syntax_errors_carry_position() {
        let err = from_multi("a: [\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn errors_never_quote_the_source() {
        let text = "kind: Secret\nstringData:\n  password: topsecretvalue\n---\na: [unclosed\n";
        let err = from_multi(text).unwrap_err().to_string();
        assert!(err.contains("line 5") && err.contains("column"), "{err}");
        assert!(
            !err.contains("topsecretvalue") && !err.contains('\n'),
            "{err}"
        );
    }
}
