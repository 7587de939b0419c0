//! Resource-schema rules from the embedded bundle ([`crate::schemas`]): the resource type
//! exists in each region the templates are for (E3006), no unknown top-level property (E3002),
//! no required top-level property missing (E3003). Positions and IDs as cfn-lint's. Nested
//! properties, value types, patterns and read-only properties are not checked natively.

use super::{Entry, Names, Out, PROPERTY_REQUIRED, PROPERTY_UNKNOWN, RESOURCE_TYPE_UNKNOWN, entries};
use crate::node::{Node, Value};
use crate::schemas::Schemas;

/// The region cfn-lint checks when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

pub(super) fn check(root: &Node, names: &Names<'_>, regions: &[String], out: &mut Out<'_>) {
    let schemas = Schemas::get();
    let regions: Vec<(&str, u64)> = if regions.iter().any(|r| r == "ALL_REGIONS") {
        schemas.regions().iter().filter_map(|r| schemas.region_bit(r).map(|bit| (*r, bit))).collect()
    } else if regions.is_empty() {
        schemas.region_bit(DEFAULT_REGION).map(|bit| (DEFAULT_REGION, bit)).into_iter().collect()
    } else {
        regions.iter().filter_map(|r| schemas.region_bit(r).map(|bit| (r.as_str(), bit))).collect()
    };
    for Entry { key, node: resource } in entries(root.get("Resources"), names.transforms) {
        let (Some(type_key), Some(resource_type)) = (resource.key("Type"), resource.get("Type").and_then(Node::as_str))
        else {
            continue;
        };
        // Not in the provider schemas: custom resources, modules, and (with the transform)
        // SAM's types, which cfn-lint checks after running the transform.
        if resource_type.starts_with("Custom::")
            || resource_type.ends_with("::MODULE")
            || resource_type.starts_with("AWS::Serverless::")
        {
            continue;
        }
        let Some(schema) = schemas.resource(resource_type) else {
            for (region, _) in &regions {
                out.add(
                    RESOURCE_TYPE_UNKNOWN,
                    type_key.pos,
                    format!("resource type `{resource_type}` does not exist in '{region}': check its spelling"),
                );
            }
            continue;
        };
        for (region, bit) in &regions {
            if !schema.in_region(*bit) {
                out.add(
                    RESOURCE_TYPE_UNKNOWN,
                    type_key.pos,
                    format!("resource type `{resource_type}` does not exist in '{region}': deploy it elsewhere or leave the region out of `regions`"),
                );
            }
        }
        let properties = resource.get("Properties");
        let written = match properties.map(|p| &p.value) {
            None => Some(&[][..]),
            // A function for the whole of Properties (`Fn::If`), or nothing written: not checked.
            Some(Value::Map(_)) if properties.and_then(Node::intrinsic).is_some() => None,
            Some(Value::Map(entries)) => Some(&entries[..]),
            Some(_) => None,
        };
        let Some(written) = written else { continue };
        for (name, _) in written {
            if name.name.starts_with("Fn::") || schema.has_property(&name.name) {
                continue;
            }
            let hint = schema
                .properties()
                .and_then(|known| known.iter().find(|k| k.eq_ignore_ascii_case(&name.name) || close(k, &name.name)))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            out.add(PROPERTY_UNKNOWN, name.pos, format!("`{}` is not a property of {resource_type}{hint}", name.name));
        }
        let at = resource.key("Properties").map_or(key.pos, |k| k.pos);
        for required in schema.required() {
            // `!Ref AWS::NoValue` removes the property.
            let present = written.iter().any(|(k, v)| {
                k.name == *required
                    && !v.intrinsic().is_some_and(|(f, a)| f.name == "Ref" && a.as_str() == Some("AWS::NoValue"))
            });
            if !present {
                out.add(
                    PROPERTY_REQUIRED,
                    at,
                    format!("{resource_type} requires the property `{required}`: add it under Properties"),
                );
            }
        }
    }
}

/// Whether two names differ by one edit or a swap of neighbours (a likely typo).
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
    let longest = a.len().max(b.len());
    prefix + suffix + 1 >= longest
        || (a.len() == b.len()
            && prefix + suffix + 2 == a.len()
            && a[prefix] == b[prefix + 1]
            && a[prefix + 1] == b[prefix])
}
