//! `vigil config schema`: generated from the structs that parse the config, so it accepts the
//! shipped configs key by key, refuses unknown keys where the parser does, and every field it
//! names is documented in docs/config.md.

mod common;

use common::*;
use serde_json::Value;

fn schema() -> Value {
    let out = vigil().args(["config", "schema"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Follows `$ref` and `Option`'s `anyOf [X, null]`.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    loop {
        if let Some(r) = node["$ref"].as_str() {
            node = &root["$defs"][r.trim_start_matches("#/$defs/")];
        } else if let Some(any) = node["anyOf"].as_array() {
            match any.iter().find(|v| v["type"] != "null") {
                Some(v) => node = v,
                None => return node,
            }
        } else {
            return node;
        }
    }
}

/// The schema of `yaml`'s value (a tagged variant chosen by its `type`), checking every key.
fn check(root: &Value, node: &Value, yaml: &serde_yaml::Value, at: &str, errors: &mut Vec<String>) {
    let node = resolve(root, node);
    match yaml {
        serde_yaml::Value::Mapping(m) => {
            let node = match node["oneOf"].as_array() {
                Some(variants) => {
                    let tag = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
                    match variants.iter().map(|v| resolve(root, v)).find(|v| {
                        v["properties"]["type"]["const"] == tag
                            || v["properties"]["type"]["enum"][0] == tag
                    }) {
                        Some(v) => v,
                        None => {
                            errors.push(format!("{at}: no variant for type {tag:?}"));
                            return;
                        }
                    }
                }
                None => node,
            };
            for (k, v) in m {
                let k = k.as_str().unwrap();
                match node["properties"].get(k) {
                    Some(p) => check(root, p, v, &format!("{at}.{k}"), errors),
                    None => errors.push(format!("{at}.{k}: not in the schema")),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                check(root, &node["items"], v, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

#[test]
fn the_schema_accepts_the_shipped_configs_and_refuses_unknown_keys() {
    let root = schema();
    for file in ["config/default.yaml", "deploy/config.yaml"] {
        let path = repo().join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut errors = Vec::new();
        check(&root, &root, &yaml, "", &mut errors);
        assert!(errors.is_empty(), "{file}: {errors:?}");
    }
    // A key the parser refuses is outside the schema too.
    let yaml: serde_yaml::Value =
        serde_yaml::from_str("streams: []\napi: {listen: x, colour: red}\nfaces: {detector: {type: mtcnn, pnet: a, rnet: b, onet: c, fast: 1}}\n").unwrap();
    let mut errors = Vec::new();
    check(&root, &root, &yaml, "", &mut errors);
    assert_eq!(
        errors,
        [
            ".api.colour: not in the schema",
            ".faces.detector.fast: not in the schema"
        ]
    );
    // Structs deny unknown keys in the schema as in the parser.
    let api = resolve(&root, &root["properties"]["api"]);
    assert_eq!(api["additionalProperties"], false);
    assert_eq!(api["required"], serde_json::json!(["listen"]));
    assert!(api["properties"]["tokens"].is_object());
}

#[test]
fn every_field_the_schema_names_is_documented() {
    let root = schema();
    let docs = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    let mut missing = Vec::new();
    let mut names = Vec::new();
    for node in root["$defs"]
        .as_object()
        .unwrap()
        .values()
        .chain(std::iter::once(&root))
    {
        let mut props: Vec<&serde_json::Map<String, Value>> = Vec::new();
        props.extend(node["properties"].as_object());
        for v in node["oneOf"].as_array().into_iter().flatten() {
            props.extend(v["properties"].as_object());
        }
        for p in props {
            names.extend(p.keys().cloned());
        }
    }
    names.sort();
    names.dedup();
    for n in &names {
        if !docs.contains(&format!("`{n}`"))
            && !docs.contains(&format!("`{n}[]`"))
            && !docs.contains(&format!(".{n}`"))
        {
            missing.push(n.clone());
        }
    }
    assert!(names.len() > 60, "{} fields", names.len());
    assert!(missing.is_empty(), "not in docs/config.md: {missing:?}");
}
