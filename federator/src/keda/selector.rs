//! Kubernetes equality-based label selectors (`team=shop,tier!=db`) over a check's `spec.labels`.

use std::collections::BTreeMap;

/// A parsed selector; it matches when every term does, so the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    key: String,
    value: String,
    /// `=` / `==` when true, `!=` when false.
    equal: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("term {index} is empty")]
    EmptyTerm { index: usize },
    #[error("term {term:?} is set-based; only key=value, key==value and key!=value are supported")]
    SetBased { term: String },
    #[error("term {term:?} has no =, == or != operator")]
    NoOperator { term: String },
    #[error(
        "{key:?} is not a label key (an optional DNS-subdomain prefix and '/', then 1-63 of \
         [A-Za-z0-9-_.] starting and ending with a letter or digit)"
    )]
    Key { key: String },
    #[error(
        "{value:?} is not a label value (empty, or up to 63 of [A-Za-z0-9-_.] starting and \
         ending with a letter or digit)"
    )]
    Value { value: String },
}

impl LabelSelector {
    /// Parses `key=value`, `key==value` and `key!=value` terms separated by commas.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        let terms = text
            .split(',')
            .enumerate()
            .map(|(i, raw)| parse_term(i + 1, raw.trim()))
            .collect::<Result<_, _>>()?;
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether `labels` satisfy every term; `key!=value` also matches when `key` is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms
            .iter()
            .all(|t| (labels.get(&t.key) == Some(&t.value)) == t.equal)
    }
}

fn parse_term(index: usize, term: &str) -> Result<Term, SelectorError> {
    if term.is_empty() {
        return Err(SelectorError::EmptyTerm { index });
    }
    let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, v, true)
    } else if term.contains('(') || term.starts_with('!') || !term.contains(char::is_whitespace) {
        // `key in (a,b)` arrives split at its comma; `key` and `!key` are existence tests.
        return Err(SelectorError::SetBased {
            term: term.to_owned(),
        });
    } else {
        return Err(SelectorError::NoOperator {
            term: term.to_owned(),
        });
    };
    let (key, value) = (key.trim(), value.trim());
    if !valid_key(key) {
        return Err(SelectorError::Key {
            key: key.to_owned(),
        });
    }
    if !(value.is_empty() || valid_name(value)) {
        return Err(SelectorError::Value {
            value: value.to_owned(),
        });
    }
    Ok(Term {
        key: key.to_owned(),
        value: value.to_owned(),
        equal,
    })
}

fn valid_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => valid_prefix(prefix) && valid_name(name),
        None => valid_name(key),
    }
}

/// A label name or value: 1-63 of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn valid_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A DNS subdomain: dot-separated lowercase labels, at most 253 characters.
fn valid_prefix(s: &str) -> bool {
    let label = |l: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        (1..=63).contains(&l.len())
            && l.starts_with(alnum)
            && l.ends_with(alnum)
            && l.chars().all(|c| alnum(c) || c == '-')
    };
    s.len() <= 253 && s.split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equality_terms_all_have_to_match() {
        let s = LabelSelector::parse("team=shop, tier!=db,app.kubernetes.io/part-of==web").unwrap();
        let web = labels(&[("team", "shop"), ("app.kubernetes.io/part-of", "web")]);
        assert!(s.matches(&web), "tier absent satisfies tier!=db");
        let mut db = web.clone();
        db.insert("tier".into(), "db".into());
        assert!(!s.matches(&db));
        assert!(!s.matches(&labels(&[("team", "shop")])));
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
        assert!(
            LabelSelector::parse("tier=")
                .unwrap()
                .matches(&labels(&[("tier", "")]))
        );
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        let cases = [
            ("team=shop,", SelectorError::EmptyTerm { index: 2 }),
            (
                "tier in (db,cache)",
                SelectorError::SetBased {
                    term: "tier in (db".into(),
                },
            ),
            (
                "!tier",
                SelectorError::SetBased {
                    term: "!tier".into(),
                },
            ),
            (
                "team shop",
                SelectorError::NoOperator {
                    term: "team shop".into(),
                },
            ),
            (
                "-team=shop",
                SelectorError::Key {
                    key: "-team".into(),
                },
            ),
            (
                "Example.com/team=shop",
                SelectorError::Key {
                    key: "Example.com/team".into(),
                },
            ),
            (
                "team=shop!",
                SelectorError::Value {
                    value: "shop!".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(LabelSelector::parse(text), Err(want), "{text}");
        }
    }
}
