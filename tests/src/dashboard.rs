//! Checks a Grafana dashboard against a real `/metrics` page: every series its queries read
//! (`axon_*`, `node_*`) has samples, and every label its queries and legends name is on them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A query of the dashboard: its expression and the labels its legend names.
#[derive(Debug)]
pub struct Query {
    pub expr: String,
    pub legend_labels: Vec<String>,
}

/// Every query of the dashboard, panels and template variables alike.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

fn walk(v: &Value, out: &mut Vec<Query>) {
    match v {
        Value::Object(m) => {
            if let Some(expr) = m.get("expr").and_then(Value::as_str) {
                let legend = m.get("legendFormat").and_then(Value::as_str).unwrap_or("");
                out.push(Query {
                    expr: expr.to_owned(),
                    legend_labels: legend
                        .split("{{")
                        .skip(1)
                        .filter_map(|s| s.split("}}").next())
                        .map(|s| s.trim().to_owned())
                        .collect(),
                });
            }
            if let Some(def) = m.get("definition").and_then(Value::as_str) {
                out.push(Query {
                    expr: def.to_owned(),
                    legend_labels: Vec::new(),
                });
            }
            m.values().for_each(|v| walk(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
        _ => {}
    }
}

/// The series an expression reads, each with the labels named right after it, and the labels
/// of its `by (...)` / `without (...)` clauses and functions taking a label (`label_values`).
pub fn references(expr: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut grouping = BTreeSet::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < bytes.len() {
        if bytes[i] == b'"' {
            // Skip string literals (label values, regexes).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !ident(bytes[i]) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let word = &expr[start..i];
        let rest = expr[i..].trim_start();
        if word.starts_with("axon_") || word.starts_with("node_") {
            let labels = series.entry(word.to_owned()).or_default();
            if let Some(inner) = rest.strip_prefix('{') {
                let inner = inner.split('}').next().unwrap_or("");
                for matcher in split_outside_quotes(inner) {
                    let name: String = matcher
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        labels.insert(name);
                    }
                }
            }
        } else if matches!(word, "by" | "without")
            && let Some(inner) = rest.strip_prefix('(')
        {
            for label in inner.split(')').next().unwrap_or("").split(',') {
                let label = label.trim();
                if !label.is_empty() && label != "le" {
                    grouping.insert(label.to_owned());
                }
            }
        } else if word == "label_values"
            && let Some(inner) = rest.strip_prefix('(')
            && let Some(label) = inner.split(')').next().and_then(|a| a.split(',').nth(1))
        {
            grouping.insert(label.trim().to_owned());
        }
    }
    (series, grouping)
}

fn split_outside_quotes(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().expect("part").push(c);
            }
            ',' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().expect("part").push(c),
        }
    }
    parts
}

/// Sample names of a `/metrics` page, each with every label name seen on it.
pub fn samples(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let inner = line[name_end + 1..].split('}').next().unwrap_or("");
            for part in split_outside_quotes(inner) {
                if let Some((name, _)) = part.split_once('=') {
                    labels.insert(name.trim().to_owned());
                }
            }
        }
    }
    out
}

/// What the dashboard reads that the page does not have, one line each (empty: all there).
pub fn missing(dashboard: &Value, page: &str) -> Vec<String> {
    let have = samples(page);
    let mut problems = Vec::new();
    for query in queries(dashboard) {
        let (series, grouping) = references(&query.expr);
        if series.is_empty() {
            problems.push(format!("{}: reads no axon_ or node_ series", query.expr));
        }
        let mut labels_here = BTreeSet::new();
        for (name, labels) in &series {
            match have.get(name) {
                None => problems.push(format!("{}: no samples of {name}", query.expr)),
                Some(on_page) => {
                    labels_here.extend(on_page.iter().cloned());
                    for label in labels.iter().filter(|l| !on_page.contains(*l)) {
                        problems.push(format!("{}: {name} has no label {label}", query.expr));
                    }
                }
            }
        }
        for label in grouping.iter().chain(&query.legend_labels) {
            if !labels_here.contains(label) {
                problems.push(format!(
                    "{}: no series it reads has the label {label}",
                    query.expr
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_series_labels_and_groupings() {
        let (series, grouping) = references(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(axon_http_request_duration_seconds_bucket{method="GET",status=~"5.."}[5m]))) / node_load1"#,
        );
        assert_eq!(
            series.keys().collect::<Vec<_>>(),
            ["axon_http_request_duration_seconds_bucket", "node_load1"]
        );
        assert_eq!(
            series["axon_http_request_duration_seconds_bucket"],
            BTreeSet::from(["method".to_owned(), "status".to_owned()])
        );
        assert_eq!(grouping, BTreeSet::from(["route".to_owned()]));
    }

    #[test]
    fn a_query_of_a_series_the_page_lacks_is_reported() {
        let page = "# TYPE axon_hosts gauge\naxon_hosts 3\nnode_load1{host=\"a\"} 0.5\n";
        let dashboard = serde_json::json!({"panels": [
            {"targets": [{"expr": "axon_hosts", "legendFormat": "n"}]},
            {"targets": [{"expr": "node_load1{host=~\"$host\"}", "legendFormat": "{{host}}"}]},
            {"targets": [{"expr": "axon_gone", "legendFormat": "{{gpu}}"}]},
            {"targets": [{"expr": "node_load1{cpu=\"0\"}"}]},
        ]});
        let problems = missing(&dashboard, page);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("no samples of axon_gone"));
        assert!(problems[1].contains("label gpu"));
        assert!(problems[2].contains("no label cpu"));
    }
}
