//! The `Conditions` section: each condition a condition function (`Fn::And`, `Fn::Or`,
//! `Fn::Not`, `Fn::Equals`, `Condition`) of the right shape naming defined conditions. As in
//! cfn-lint, a problem anywhere in a condition is filed under the ID of the condition's
//! top-level function (E8004 `Fn::And`, E8006 `Fn::Or`, E8005 `Fn::Not`, E8003 `Fn::Equals`,
//! E8001 otherwise), and every null in the section is also E1001.

use super::{
    AND_INVALID, CONDITION_INVALID, CONDITIONS_NOT_A_MAP, CONDITIONS_NULL, EQUALS_INVALID, Entry, NOT_INVALID, Names,
    OR_INVALID, Out, Rule, Site, entries, intrinsic_pos, item_pos, shape_of,
};
use crate::node::{Node, Value};

/// The ID problems inside a condition are filed under: its top-level function's.
pub(super) fn rule_of(condition: &Node) -> Rule {
    match condition.intrinsic().map(|(k, _)| k.name.as_str()) {
        Some("Fn::And") => AND_INVALID,
        Some("Fn::Or") => OR_INVALID,
        Some("Fn::Not") => NOT_INVALID,
        Some("Fn::Equals") => EQUALS_INVALID,
        _ => CONDITION_INVALID,
    }
}

/// The section's own shape and each condition's top-level value.
pub(super) fn section(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    let (Some(key), Some(section)) = (root.key("Conditions"), root.get("Conditions")) else { return };
    if !section.is_map() && !matches!(section.value, Value::Null) {
        let shape = shape_of(section);
        for rule in [CONDITIONS_NOT_A_MAP, CONDITION_INVALID] {
            out.add(
                rule,
                key.pos,
                format!("Conditions is a map of names to conditions; {shape} is not of type 'object'"),
            );
        }
        return;
    }
    for Entry { key, node } in entries(Some(section), names.transforms) {
        let problem = match &node.value {
            Value::Map(_) => None,
            Value::Null => Some("it is empty".to_string()),
            _ => Some(format!("{} is not of type 'boolean'", shape_of(node))),
        };
        if let Some(problem) = problem {
            out.add(
                CONDITION_INVALID,
                key.pos,
                format!(
                    "condition `{}` must be a condition function (Fn::Equals, Fn::And, Fn::Or, Fn::Not): {problem}",
                    key.name
                ),
            );
        }
    }
}

/// One node inside `Conditions`.
pub(super) fn check_site(site: &Site<'_>, names: &Names<'_>, out: &mut Out<'_>) {
    let Some(rule) = site.within.condition else { return };
    let node = site.node;
    if matches!(node.value, Value::Null) {
        out.add(CONDITIONS_NULL, site.at, "null where a condition or a value is expected: write one".into());
        return;
    }
    let Some((key, arg)) = node.intrinsic() else { return };
    let whole = intrinsic_pos(key, site);
    let name = key.name.as_str();
    match name {
        "Condition" => match arg.as_str() {
            Some(target) if names.is_condition(target) => {}
            Some(target) => {
                out.add(rule, whole, format!("condition `{target}` is not defined under Conditions"));
            }
            None => out.add(
                rule,
                whole,
                format!("Condition takes a condition's name; {} is not of type 'string'", shape_of(arg)),
            ),
        },
        "Fn::And" | "Fn::Or" | "Fn::Not" | "Fn::Equals" => {
            let (min, max) = match name {
                "Fn::Not" => (1, 1),
                "Fn::Equals" => (2, 2),
                _ => (2, 10),
            };
            let takes = match name {
                "Fn::Not" => "Fn::Not takes [condition]",
                "Fn::Equals" => "Fn::Equals takes [value, value]",
                _ => "takes a list of 2 to 10 conditions",
            };
            let takes = if takes.starts_with("takes") { format!("{name} {takes}") } else { takes.to_string() };
            let Value::Seq(items) = &arg.value else {
                let shape = if matches!(arg.value, Value::Null) { "null" } else { shape_of(arg) };
                out.add(rule, whole, format!("{takes}; {shape} is not of type 'array'"));
                return;
            };
            if items.len() < min || items.len() > max {
                let bound = if items.len() < min {
                    format!("minimum item count: {min}")
                } else {
                    format!("maximum item count: {max}")
                };
                out.add(rule, whole, format!("{takes}: expected {bound}, found: {}", items.len()));
            }
            for item in items {
                let wrong = if name == "Fn::Equals" {
                    match &item.value {
                        Value::Null => Some("null is not of type 'string'"),
                        Value::Seq(_) => Some("a list is not of type 'string'"),
                        Value::Map(_) if item.intrinsic().is_none() => Some("a map is not of type 'string'"),
                        _ => None,
                    }
                } else {
                    match &item.value {
                        Value::Map(_) => None,
                        Value::Null => Some("null is not of type 'boolean'"),
                        _ => Some("a value is not of type 'boolean': use a condition function or `!Condition Name`"),
                    }
                };
                if let Some(wrong) = wrong {
                    out.add(rule, item_pos(key, site, item), format!("{takes}: {wrong}"));
                }
            }
        }
        _ => {}
    }
}
