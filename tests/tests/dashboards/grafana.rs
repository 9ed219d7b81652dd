//! Reading the Grafana dashboards under dashboards/: their panels' PromQL, their template
//! variables, the substitution Grafana does before a query is sent, and the structural rules
//! every Vigil dashboard keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

/// One PromQL expression of one panel target.
#[derive(Debug, Clone)]
pub struct Query {
    pub file: String,
    pub uid: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} panel {:?} target {}: {}",
            self.file, self.panel, self.ref_id, self.expr
        )
    }
}

/// Every `*.json` under `dir`, sorted by file name, parsed.
pub fn load(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = format!("dashboards/{}", path.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&path).unwrap();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, value)
        })
        .collect()
}

/// Panels, with the panels of collapsed rows (which Grafana nests) flattened in.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every target expression of every panel.
pub fn queries(file: &str, dashboard: &Value) -> Vec<Query> {
    let uid = dashboard["uid"].as_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push(Query {
                    file: file.to_owned(),
                    uid: uid.clone(),
                    panel: p["title"].as_str().unwrap_or_default().to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    out
}

/// A template variable: name, type and (for `query` variables) its query text.
#[derive(Debug)]
pub struct Variable {
    pub name: String,
    pub kind: String,
    pub query: Option<String>,
}

pub fn variables(dashboard: &Value) -> Vec<Variable> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Variable {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            kind: v["type"].as_str().unwrap_or_default().to_owned(),
            query: v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .map(str::to_owned),
        })
        .collect()
}

/// Grafana's built-in variables and the values the test gives them.
pub const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
];

/// Replaces `$name` and `${name}` as Grafana does; a variable `values` lacks is an error.
pub fn substitute(expr: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr:?}"))?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        // `${name:format}`: the format changes nothing for the values used here.
        let name = name.split(':').next().unwrap_or_default();
        let value = values
            .get(name)
            .ok_or_else(|| format!("unknown template variable ${name} in {expr:?}"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `label_values(SELECTOR, LABEL)` split into its selector and label.
pub fn parse_label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

/// Panel types the dashboards may use.
const PANEL_TYPES: &[&str] = &["row", "timeseries", "stat", "table"];

/// What breaks the house rules for a dashboard, every problem at once.
pub fn problems(file: &str, d: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let mut say = |s: String| p.push(format!("{file}: {s}"));
    if d["schemaVersion"].as_u64().unwrap_or(0) < 38 {
        say(format!(
            "schemaVersion {} is older than Grafana 10's 38",
            d["schemaVersion"]
        ));
    }
    for key in ["uid", "title", "description"] {
        if d[key].as_str().is_none_or(str::is_empty) {
            say(format!("no {key}"));
        }
    }
    let vars = variables(d);
    let names: BTreeSet<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    match vars.iter().find(|v| v.name == "datasource") {
        Some(v) if v.kind == "datasource" => {}
        _ => say("no `datasource` variable of type datasource".into()),
    }
    if !names.contains("cluster") {
        say("no `cluster` variable".into());
    }
    for v in vars.iter().filter(|v| v.kind == "query") {
        match v.query.as_deref().map(parse_label_values) {
            Some(Some(_)) => {}
            _ => say(format!(
                "variable {} is not a label_values(SELECTOR, LABEL) query",
                v.name
            )),
        }
    }
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels(d) {
        let title = panel["title"].as_str().unwrap_or_default();
        let kind = panel["type"].as_str().unwrap_or_default();
        let at = format!("panel {title:?}");
        if !ids.insert(panel["id"].as_u64()) {
            say(format!("{at}: duplicate id {}", panel["id"]));
        }
        if title.is_empty() || !titles.insert(title) {
            say(format!("{at}: empty or duplicate title"));
        }
        if !PANEL_TYPES.contains(&kind) {
            say(format!("{at}: type {kind:?} is not one of {PANEL_TYPES:?}"));
        }
        let g = &panel["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap_or(99), g["w"].as_u64().unwrap_or(0));
        if w == 0 || x + w > 24 || g["h"].as_u64().unwrap_or(0) == 0 {
            say(format!("{at}: gridPos {g} is outside the 24-column grid"));
        }
        if kind == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            say(format!("{at}: datasource is not ${{datasource}}"));
        }
        if panel["description"].as_str().is_none_or(str::is_empty) {
            say(format!("{at}: no description"));
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            say(format!("{at}: no unit"));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            say(format!("{at}: no targets"));
        }
        for t in targets {
            if t["expr"].as_str().is_none_or(str::is_empty) {
                say(format!("{at}: target {} has no expr", t["refId"]));
            }
            if t["datasource"]["uid"] != "${datasource}" {
                say(format!(
                    "{at}: target {} datasource is not ${{datasource}}",
                    t["refId"]
                ));
            }
            let expr = t["expr"].as_str().unwrap_or_default();
            let known: BTreeMap<String, String> = names
                .iter()
                .map(|n| ((*n).to_owned(), String::new()))
                .chain(
                    BUILTINS
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
                )
                .collect();
            if let Err(e) = substitute(expr, &known) {
                say(format!("{at}: {e}"));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        [("cluster", "c1"), ("__rate_interval", "1m")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn substitutes_both_forms_and_refuses_unknown_variables() {
        assert_eq!(
            substitute(
                r#"rate(x{cluster=~"$cluster", c="${cluster}"}[$__rate_interval])"#,
                &values()
            )
            .unwrap(),
            r#"rate(x{cluster=~"c1", c="c1"}[1m])"#
        );
        assert_eq!(
            substitute("x{n=~\"$node\"}", &values()).unwrap_err(),
            "unknown template variable $node in \"x{n=~\\\"$node\\\"}\""
        );
        assert_eq!(
            substitute("up[${__range", &values()).unwrap_err(),
            "unclosed ${ in \"up[${__range\""
        );
    }

    #[test]
    fn splits_label_values_queries() {
        assert_eq!(
            parse_label_values(r#"label_values(vigil_check_up{cluster=~"$cluster"}, check)"#),
            Some((
                r#"vigil_check_up{cluster=~"$cluster"}"#.to_owned(),
                "check".to_owned()
            ))
        );
        assert_eq!(parse_label_values("query_result(up)"), None);
    }

    #[test]
    fn reports_every_structural_problem() {
        let d = serde_json::json!({
            "schemaVersion": 30, "uid": "u", "title": "t", "description": "d",
            "templating": {"list": [{"name": "datasource", "type": "datasource"}]},
            "panels": [{"id": 1, "type": "graph", "title": "old",
                        "gridPos": {"x": 20, "w": 8, "h": 4},
                        "datasource": {"uid": "prom"},
                        "targets": [{"refId": "A", "expr": "up{x=\"$nope\"}"}]}]
        });
        assert_eq!(
            problems("d.json", &d),
            [
                "d.json: schemaVersion 30 is older than Grafana 10's 38",
                "d.json: no `cluster` variable",
                "d.json: panel \"old\": type \"graph\" is not one of [\"row\", \"timeseries\", \"stat\", \"table\"]",
                "d.json: panel \"old\": gridPos {\"h\":4,\"w\":8,\"x\":20} is outside the 24-column grid",
                "d.json: panel \"old\": datasource is not ${datasource}",
                "d.json: panel \"old\": no description",
                "d.json: panel \"old\": no unit",
                "d.json: panel \"old\": target \"A\" datasource is not ${datasource}",
                "d.json: panel \"old\": unknown template variable $nope in \"up{x=\\\"$nope\\\"}\"",
            ]
        );
    }
}
