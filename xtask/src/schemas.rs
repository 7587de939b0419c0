//! `cargo xtask schemas`: validate's resource-schema bundle from the CloudFormation resource
//! provider schemas shipped inside the pinned cfn-lint (xtask/python-requirements.txt), trimmed
//! to what the native rules use and compressed.
//!
//! The bundle (deflate-compressed text, `crates/validate/data/resource-schemas.deflate`):
//! line 1 `cfn-lint VERSION\tSCHEMA_DATE`; line 2 `regions\tR1,R2,…`; line 3 `actions\tJSON`,
//! the IAM policy catalogue (`cfnlint/data/AdditionalSpecs/Policies.json`) as
//! `{service: [action, …]}`, lowercase; then one line per resource type, sorted:
//! `TYPE\tREGIONS\tSCHEMA`, with REGIONS the hexadecimal bit set of the regions (line 2's
//! order) that have the type and SCHEMA its us-east-1 schema (or the first region's that has
//! the type) as one line of JSON, trimmed by [`trim`] to the keywords the native rules read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// Where the bundle goes.
const OUTPUT: &str = "crates/validate/data/resource-schemas.deflate";

pub fn run() -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let lib = bin.parent().context("the virtual environment has no parent")?.join("lib");
    let site = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/cfnlint"))
        .find(|p| p.is_dir())
        .with_context(|| format!("no cfnlint package under {}", lib.display()))?;
    let text = bundle(&site)?;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(text.as_bytes())?;
    let compressed = encoder.finish()?;
    let out = root.join(OUTPUT);
    std::fs::create_dir_all(out.parent().context("output has a folder")?)?;
    std::fs::write(&out, &compressed)?;
    crate::say(&format!(
        "{}: {} ({} bytes, {} compressed)",
        OUTPUT,
        text.lines().next().unwrap_or(""),
        text.len(),
        compressed.len()
    ));
    Ok(())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The keywords of a (sub)schema the native rules read; everything else (descriptions,
/// handlers, cfn-lint's own extension keywords, `if`/`then`, `dependencies`…) is dropped, which
/// only ever drops a check. `oneOf`/`anyOf`/`allOf` become `"x": true`: the native rules then
/// skip unknown-property checks at that level, as the branches may name more properties.
fn trim(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else { return Value::Object(Map::new()) };
    let mut out = Map::new();
    if let Some(reference) = object.get("$ref") {
        // Draft 7: `$ref` stands for the whole schema.
        out.insert("$ref".into(), reference.clone());
        return Value::Object(out);
    }
    for (key, value) in object {
        match key.as_str() {
            "type" | "required" | "enum" | "pattern" | "minLength" | "maxLength" => {
                out.insert(key.clone(), value.clone());
            }
            "format" if value == "json" => {
                out.insert(key.clone(), value.clone());
            }
            "properties" => {
                let properties: Map<String, Value> = value
                    .as_object()
                    .map(|p| p.iter().map(|(name, sub)| (name.clone(), trim(sub))).collect())
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" if value.is_object() => {
                out.insert(key.clone(), trim(value));
            }
            "oneOf" | "anyOf" | "allOf" | "patternProperties" => {
                out.insert("x".into(), Value::Bool(true));
            }
            _ => {}
        }
    }
    // Only a closed object is checked for unknown properties.
    if object.get("additionalProperties") == Some(&Value::Bool(false)) && !object.contains_key("patternProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// A resource type's schema: [`trim`] of its root and definitions, and its read-only properties.
fn trim_resource(schema: &Value) -> Value {
    let mut out = trim(schema);
    let map = out.as_object_mut().expect("trim gives an object");
    if let Some(definitions) = schema.get("definitions").and_then(Value::as_object) {
        let definitions: Map<String, Value> = definitions.iter().map(|(k, v)| (k.clone(), trim(v))).collect();
        map.insert("definitions".into(), Value::Object(definitions));
    }
    if let Some(read_only) = schema.get("readOnlyProperties") {
        map.insert("readOnlyProperties".into(), read_only.clone());
    }
    out
}

fn bundle(site: &Path) -> anyhow::Result<String> {
    let version_py = std::fs::read_to_string(site.join("version.py"))?;
    let version = version_py
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim_matches('"').to_string())
        .context("no __version__ in cfnlint/version.py")?;
    let schemas = site.join("data/schemas");
    let date = read_json(&schemas.join("version.json"))?["schema_date"].as_str().unwrap_or("").to_string();
    let mut regions: Vec<String> = std::fs::read_dir(schemas.join("providers"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
        .filter(|n| n != "sam")
        .collect();
    regions.sort();
    if regions.len() > 64 || !regions.iter().any(|r| r == "us-east-1") {
        bail!("{} regions: expected at most 64, us-east-1 among them", regions.len());
    }
    // type → (region bits, schema file of us-east-1 or the first region)
    let mut types: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (i, region) in regions.iter().enumerate() {
        let provider = read_json(&schemas.join(format!("providers/{region}.json")))?;
        for (name, hash) in provider.as_object().context("a provider file is a map")? {
            let hash = hash.as_str().context("a provider entry is a file name")?.to_string();
            let entry = types.entry(name.clone()).or_insert((0, hash.clone()));
            entry.0 |= 1 << i;
            if region == "us-east-1" {
                entry.1 = hash;
            }
        }
    }
    let policies = read_json(&site.join("data/AdditionalSpecs/Policies.json"))?;
    let actions: BTreeMap<String, Vec<String>> = policies
        .as_object()
        .context("Policies.json is a map")?
        .iter()
        .map(|(service, spec)| {
            let mut actions: Vec<String> =
                spec["Actions"].as_object().map(|a| a.keys().map(|k| k.to_lowercase()).collect()).unwrap_or_default();
            actions.sort();
            (service.to_lowercase(), actions)
        })
        .collect();
    let mut text = format!(
        "cfn-lint {version}\t{date}\nregions\t{}\nactions\t{}\n",
        regions.join(","),
        serde_json::to_string(&actions)?
    );
    for (name, (bits, hash)) in &types {
        let schema = read_json(&schemas.join(format!("resources/{hash}.json")))?;
        text.push_str(&format!("{name}\t{bits:x}\t{}\n", serde_json::to_string(&trim_resource(&schema))?));
    }
    Ok(text)
}
