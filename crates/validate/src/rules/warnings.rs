//! Warnings cfn-lint gives real templates: a `DependsOn` a reference already implies (W3005)
//! and a condition nothing uses (W8001).

use std::collections::BTreeSet;

use super::{DEPENDS_ON_IMPLIED, Entry, Names, Out, UNUSED_CONDITION, entries, has_mark, is_templated};
use crate::node::{Node, Pos, Value};

/// W3005: each `DependsOn` target the resource already refers to through `Ref`, `Fn::GetAtt` or
/// a `Fn::Sub` variable; one finding per such reference, as cfn-lint's dependency graph has
/// one edge per reference.
pub(super) fn implied_dependencies(names: &Names<'_>, out: &mut Out<'_>) {
    for (key, resource) in names.resources.values() {
        let (Some(depends_key), Some(depends)) = (resource.key("DependsOn"), resource.get("DependsOn")) else {
            continue;
        };
        let targets: Vec<(&Node, Pos)> = match &depends.value {
            Value::Seq(items) => items.iter().map(|i| (i, if has_mark(i) { i.pos } else { depends_key.pos })).collect(),
            _ => vec![(depends, depends_key.pos)],
        };
        let references = references(resource, names);
        for (target, pos) in targets {
            let Some(name) = target.as_str() else { continue };
            for (function, line) in references.iter().filter(|(_, _, to)| *to == name).map(|(f, l, _)| (f, l)) {
                out.add(
                    DEPENDS_ON_IMPLIED,
                    pos,
                    format!(
                        "resource `{}`: the {function} at line {line} already makes it depend on `{name}`; remove `{name}` from DependsOn",
                        key.name
                    ),
                );
            }
        }
    }
}

/// Every reference from a resource to a resource of the template: (function, line, target).
fn references<'a>(resource: &'a Node, names: &Names<'_>) -> Vec<(&'static str, u32, &'a str)> {
    let mut found = Vec::new();
    for node in resource.walk() {
        let Some((key, arg)) = node.intrinsic() else { continue };
        let line = key.pos.line;
        match key.name.as_str() {
            "Ref" => found.extend(arg.as_str().filter(|t| names.resources.contains_key(t)).map(|t| ("Ref", line, t))),
            "Fn::GetAtt" => {
                let target = match &arg.value {
                    Value::Seq(items) if items.len() == 2 => items[0].as_str(),
                    Value::String(text) if text.contains('.') => text.split('.').next(),
                    _ => None,
                };
                found.extend(target.filter(|t| names.resources.contains_key(t)).map(|t| ("Fn::GetAtt", line, t)));
            }
            "Fn::Sub" => {
                let (text, variables) = match &arg.value {
                    Value::Seq(items) => (items.first().and_then(Node::as_str), items.get(1)),
                    _ => (arg.as_str(), None),
                };
                let local: BTreeSet<&str> =
                    variables.map(|v| v.entries().iter().map(|(k, _)| k.name.as_str()).collect()).unwrap_or_default();
                for variable in graph_variables(text.unwrap_or("")) {
                    if local.contains(variable) {
                        continue;
                    }
                    let (target, function) = match variable.split_once('.') {
                        Some((target, _)) => (target, "Fn::Sub variable (an attribute)"),
                        None => (variable, "Fn::Sub variable"),
                    };
                    if names.resources.contains_key(target) {
                        found.push((function, line, target));
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// `${Name}` and `${Name.Attribute}` in a Sub string as cfn-lint's graph reads them: letters,
/// digits and dots only.
fn graph_variables(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap_or(after.len());
        if after[end..].starts_with('}') {
            found.push(&after[..end]);
        }
        rest = &after[end..];
    }
    found
}

/// W8001: a condition no `Fn::If`, no other condition, no resource and no output names.
pub(super) fn unused_conditions(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    let Some(section) = root.get("Conditions") else { return };
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for node in root.walk() {
        if let Some((key, arg)) = node.intrinsic()
            && key.name == "Fn::If"
        {
            used.extend(arg.items().first().and_then(Node::as_str).or(arg.as_str()));
        }
    }
    for node in section.walk() {
        if let Some((key, arg)) = node.intrinsic()
            && key.name == "Condition"
            && let Value::String(name) = &arg.value
        {
            used.insert(name);
        }
    }
    for section in ["Resources", "Outputs"] {
        for Entry { node, .. } in entries(root.get(section), names.transforms) {
            used.extend(node.get("Condition").and_then(Node::as_str));
        }
    }
    for Entry { key, .. } in entries(Some(section), names.transforms) {
        // A loop's condition is named through `!Sub` (not worked out here).
        if names.transforms.language_extensions && is_templated(&key.name) {
            continue;
        }
        if !used.contains(key.name.as_str()) {
            out.add(
                UNUSED_CONDITION,
                key.pos,
                format!("condition `{}` is never used: remove it or use it in a Condition or Fn::If", key.name),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn graph_variables_are_names_and_attributes_only() {
        let found = super::graph_variables("${Queue}-${Topic.TopicName}-${AWS::Region}-${!Literal}-${ Spaced }");
        assert_eq!(found, ["Queue", "Topic.TopicName"]);
    }
}
