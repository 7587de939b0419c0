//! `cargo xtask schemas`: validate's resource-schema bundle from the CloudFormation resource
//! provider schemas shipped inside the pinned cfn-lint (xtask/python-requirements.txt), trimmed
//! to what the native rules use and compressed.
//!
//! The bundle (deflate-compressed text, `crates/validate/data/resource-schemas.deflate`):
//! line 1 `cfn-lint VERSION\tSCHEMA_DATE`; line 2 `regions\tR1,R2,…`; then one line per
//! resource type, sorted: `TYPE\tREGIONS\tPROPERTIES\tREQUIRED`, with REGIONS the hexadecimal
//! bit set of the regions (line 2's order) that have the type, PROPERTIES and REQUIRED its
//! top-level property names (comma-separated) from the us-east-1 schema (or the first region's
//! that has the type), and `*` for PROPERTIES when the schema allows other properties.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

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

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
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
    let mut text = format!("cfn-lint {version}\t{date}\nregions\t{}\n", regions.join(","));
    for (name, (bits, hash)) in &types {
        let schema = read_json(&schemas.join(format!("resources/{hash}.json")))?;
        let mut properties: Vec<&str> =
            schema["properties"].as_object().map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        properties.sort();
        let properties = if schema["additionalProperties"] == serde_json::Value::Bool(false) {
            properties.join(",")
        } else {
            "*".into()
        };
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
        text.push_str(&format!("{name}\t{bits:x}\t{properties}\t{}\n", required.join(",")));
    }
    Ok(text)
}
