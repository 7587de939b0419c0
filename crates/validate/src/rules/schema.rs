//! Resource-schema rules from the embedded bundle ([`crate::schemas`]): the resource type
//! exists in each region the templates are for (E3006); inside `Properties`, following the
//! schema's `$ref`s into nested objects and lists of objects: no unknown property (E3002), no
//! required property missing (E3003), values of the schema's type (E3012), among its allowed
//! values (E3030), matching its pattern (E3031), within its lengths (E3033); read-only
//! properties not set (E3040, a warning). IDs, positions and the values skipped as cfn-lint's.
//!
//! Conservative where cfn-lint does more than the bundle says: an object whose schema had
//! `oneOf`/`anyOf`/`allOf`/`patternProperties` is not checked for unknown properties; a value
//! that is an intrinsic function is not checked (cfn-lint files those under the function's
//! own rule), except `Fn::If`, whose two values are; dynamic references (`{{resolve:…}}`) are
//! not checked; a pattern the `regex` crate cannot compile (look-around) is not checked; a
//! resource a `Fn::ForEach` block makes is checked for its shape only. `AWS::Serverless::*`
//! resources are not checked at all: cfn-lint checks what the SAM transform makes of them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value as Json;

use super::{
    Entry, Names, Out, PROPERTY_REQUIRED, PROPERTY_UNKNOWN, READ_ONLY_PROPERTY, RESOURCE_TYPE_UNKNOWN, VALUE_LENGTH,
    VALUE_NOT_ALLOWED, VALUE_PATTERN, VALUE_TYPE, entries, has_mark, is_templated,
};
use crate::node::{Node, Pos, Value};
use crate::schemas::Schemas;

/// The region cfn-lint checks when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Properties cfn-lint lets hold a string where the schema wants an object (a local path the
/// packaging step uploads; `cfnlint.helpers.TEMPLATED_PROPERTY_CFN_PATHS`).
const TEMPLATED: &[(&str, &str)] = &[
    ("AWS::ApiGateway::RestApi", "BodyS3Location"),
    ("AWS::Lambda::Function", "Code"),
    ("AWS::Lambda::LayerVersion", "Content"),
    ("AWS::ElasticBeanstalk::ApplicationVersion", "SourceBundle"),
    ("AWS::StepFunctions::StateMachine", "DefinitionS3Location"),
    ("AWS::AppSync::GraphQLSchema", "DefinitionS3Location"),
    ("AWS::AppSync::Resolver", "RequestMappingTemplateS3Location"),
    ("AWS::AppSync::Resolver", "ResponseMappingTemplateS3Location"),
    ("AWS::AppSync::FunctionConfiguration", "RequestMappingTemplateS3Location"),
    ("AWS::AppSync::FunctionConfiguration", "ResponseMappingTemplateS3Location"),
    ("AWS::CloudFormation::Stack", "TemplateURL"),
    ("AWS::CodeCommit::Repository", "Code.S3"),
];

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
        let root_schema = schema.schema();
        let mut check = Check {
            root: root_schema,
            resource_type,
            values: !(names.transforms.language_extensions && is_templated(&key.name)),
            path: Vec::new(),
            out,
        };
        match (resource.key("Properties"), resource.get("Properties")) {
            (Some(k), Some(properties)) => {
                // A function for the whole of Properties (`Fn::If`) or nothing written: not checked.
                if properties.is_map() && properties.intrinsic().is_none() {
                    check.node(properties, root_schema, k.pos, k.pos);
                }
            }
            _ => check.object(&[], root_schema, key.pos),
        }
    }
}

/// One resource's walk through its properties and its schema.
struct Check<'a, 'o, 'p> {
    root: &'a Json,
    resource_type: &'a str,
    /// Whether values (types, enums, patterns, lengths) are checked.
    values: bool,
    /// The property path (list items as `*`).
    path: Vec<String>,
    out: &'o mut Out<'p>,
}

impl<'a> Check<'a, '_, '_> {
    /// `#/definitions/Name` references followed (at most a few deep).
    fn resolve(&self, mut schema: &'a Json) -> Option<&'a Json> {
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref") else { return Some(schema) };
            let name = reference.as_str()?.strip_prefix("#/definitions/")?;
            schema = self.root.get("definitions")?.get(name)?;
        }
        None
    }

    /// A value as a message quotes it: cut short, or [`crate::mask::REDACTED`] when the property's
    /// name says it is secret (`MasterUserPassword`) or the value could be one (high entropy).
    fn quote(&self, text: &str) -> String {
        if crate::secrets::high_entropy(text) || self.path.iter().any(|p| crate::secrets::is_secret_name(p)) {
            crate::mask::REDACTED.to_string()
        } else {
            short(text)
        }
    }

    fn shown(&self) -> String {
        if self.path.is_empty() {
            self.resource_type.to_string()
        } else {
            format!("{} {}", self.resource_type, self.path.join("."))
        }
    }

    /// `at`: cfn-lint's position for a finding about this node; `up`: the nearest key above.
    fn node(&mut self, node: &Node, schema: &'a Json, at: Pos, up: Pos) {
        let Some(schema) = self.resolve(schema) else { return };
        if let Some((key, arg)) = node.intrinsic() {
            if key.name == "Fn::If"
                && let [_, yes, no] = arg.items()
            {
                let up = if key.short_form { up } else { key.pos };
                for branch in [yes, no] {
                    self.node(branch, schema, if has_mark(branch) { branch.pos } else { up }, up);
                }
            }
            return;
        }
        match &node.value {
            Value::Null => return,
            Value::String(text) if text.contains("{{resolve:") => return,
            _ => {}
        }
        if self.values && !self.type_fits(node, schema, at) {
            return;
        }
        match &node.value {
            Value::Map(entries) => {
                self.object(entries, schema, at);
                let properties = schema.get("properties");
                for (key, value) in entries {
                    if let Some(sub) = properties.and_then(|p| p.get(&key.name)) {
                        self.path.push(key.name.clone());
                        self.read_only(key.pos);
                        self.node(value, sub, key.pos, key.pos);
                        self.path.pop();
                    }
                }
            }
            Value::Seq(items) => {
                if let Some(sub) = schema.get("items") {
                    self.path.push("*".into());
                    for item in items {
                        self.node(item, sub, if has_mark(item) { item.pos } else { up }, up);
                    }
                    self.path.pop();
                }
            }
            _ if self.values => self.scalar(node, schema, at),
            _ => {}
        }
    }

    /// E3002 and E3003 on an object's keys.
    fn object(&mut self, entries: &[(crate::node::Key, Node)], schema: &Json, at: Pos) {
        let properties = schema.get("properties").and_then(Json::as_object);
        if schema.get("additionalProperties") == Some(&Json::Bool(false)) && schema.get("x").is_none() {
            for (key, _) in entries {
                if key.name.starts_with("Fn::") || properties.is_some_and(|p| p.contains_key(&key.name)) {
                    continue;
                }
                let hint = properties
                    .and_then(|known| known.keys().find(|k| k.eq_ignore_ascii_case(&key.name) || close(k, &key.name)))
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                self.out.add(
                    PROPERTY_UNKNOWN,
                    key.pos,
                    format!("`{}` is not a property of {}{hint}", key.name, self.shown()),
                );
            }
        }
        // `Fn::Transform` (an include) or `Fn::ForEach` among the keys: what they add is unknown.
        if entries.iter().any(|(k, _)| k.name.starts_with("Fn::")) {
            return;
        }
        for required in schema.get("required").and_then(Json::as_array).into_iter().flatten().filter_map(Json::as_str) {
            // `!Ref AWS::NoValue` removes the property.
            let present = entries.iter().any(|(k, v)| {
                k.name == required
                    && !v.intrinsic().is_some_and(|(f, a)| f.name == "Ref" && a.as_str() == Some("AWS::NoValue"))
            });
            if !present {
                let whose = self.shown();
                let message = if self.path.is_empty() {
                    format!("{whose} requires the property `{required}`: add it under Properties")
                } else {
                    format!("{whose} requires the property `{required}`: add it")
                };
                self.out.add(PROPERTY_REQUIRED, at, message);
            }
        }
    }

    /// E3040: a property the schema lists as read-only.
    fn read_only(&mut self, at: Pos) {
        if self.path.iter().any(|p| p == "*") {
            return;
        }
        let pointer = format!("/properties/{}", self.path.join("/"));
        let listed = self
            .root
            .get("readOnlyProperties")
            .and_then(Json::as_array)
            .is_some_and(|r| r.iter().any(|p| p.as_str() == Some(pointer.as_str())));
        if listed {
            self.out.add(
                READ_ONLY_PROPERTY,
                at,
                format!("{} is read-only: CloudFormation ignores the value set here; remove it", self.shown()),
            );
        }
    }

    /// E3012, as cfn-lint's non-strict types: any scalar is a string, a number-like string is
    /// a number, `"true"`/`"false"` (any of three casings) are booleans.
    fn type_fits(&mut self, node: &Node, schema: &Json, at: Pos) -> bool {
        let types: Vec<&str> = match schema.get("type") {
            Some(Json::String(t)) => vec![t.as_str()],
            Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
            _ => return true,
        };
        if types.is_empty() || types.iter().any(|t| fits(node, t)) {
            return true;
        }
        if matches!(node.value, Value::String(_))
            && self.path.len() <= 2
            && TEMPLATED.iter().any(|(t, p)| *t == self.resource_type && *p == self.path.join("."))
        {
            return true;
        }
        let shown = match &node.value {
            Value::Map(_) => "a map".to_string(),
            Value::Seq(_) => "a list".to_string(),
            Value::String(s) => format!("'{}'", self.quote(s)),
            Value::Number(n) => n.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".into(),
        };
        let wanted = types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        self.out.add(VALUE_TYPE, at, format!("{}: {shown} is not of type {wanted}", self.shown()));
        false
    }

    /// E3030, E3031, E3033 on a string, number or boolean.
    fn scalar(&mut self, node: &Node, schema: &Json, at: Pos) {
        let Some(text) = node.as_str() else { return };
        if matches!(node.value, Value::String(_)) && maybe_not_a_string(text) {
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array)
            && !allowed.iter().any(|a| enum_matches(node, text, a))
        {
            let shown: Vec<String> = allowed.iter().take(12).map(|a| a.to_string()).collect();
            let more = if allowed.len() > 12 { ", …" } else { "" };
            self.out.add(
                VALUE_NOT_ALLOWED,
                at,
                format!("{}: '{}' is not one of [{}{more}]", self.shown(), self.quote(text), shown.join(", ")),
            );
        }
        let Value::String(text) = &node.value else { return };
        if let Some(pattern) = schema.get("pattern").and_then(Json::as_str)
            && let Some(regex) = compiled(pattern)
            // Python's `$` also matches before a final newline.
            && !regex.is_match(text)
            && !text.strip_suffix('\n').is_some_and(|t| regex.is_match(t))
        {
            self.out.add(
                VALUE_PATTERN,
                at,
                format!("{}: '{}' does not match '{pattern}'", self.shown(), self.quote(text)),
            );
        }
        if schema.get("format").is_some() {
            return;
        }
        let length = text.chars().count();
        if let Some(min) = schema.get("minLength").and_then(Json::as_u64)
            && (length as u64) < min
        {
            self.out.add(VALUE_LENGTH, at, format!("{}: '{}' is shorter than {min}", self.shown(), self.quote(text)));
        }
        if let Some(max) = schema.get("maxLength").and_then(Json::as_u64)
            && length as u64 > max
        {
            self.out.add(VALUE_LENGTH, at, format!("{}: '{}' is longer than {max}", self.shown(), self.quote(text)));
        }
    }
}

/// A value for a message: at most 60 characters.
fn short(text: &str) -> String {
    if text.chars().count() <= 60 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(60).collect::<String>())
    }
}

/// cfn-lint's non-strict type check of a written value.
fn fits(node: &Node, wanted: &str) -> bool {
    match (wanted, &node.value) {
        ("object", value) => matches!(value, Value::Map(_)),
        ("array", value) => matches!(value, Value::Seq(_)),
        ("null", value) => matches!(value, Value::Null),
        (_, Value::Map(_) | Value::Seq(_)) => false,
        ("string", _) => true,
        ("number" | "integer", Value::Bool(_)) => false,
        ("number" | "integer", Value::Number(_)) => true,
        ("integer", Value::String(s)) => {
            let s = s.trim();
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s).replace('_', "");
            !digits.is_empty() && digits.chars().all(char::is_numeric)
        }
        ("number", Value::String(s)) => s.trim().replace('_', "").parse::<f64>().is_ok(),
        ("boolean", Value::Bool(_)) => true,
        ("boolean", Value::String(s)) => {
            matches!(s.as_str(), "true" | "True" | "TRUE" | "false" | "False" | "FALSE") || yaml11_bool(s)
        }
        // Unknown types: not checked.
        (other, _) => !matches!(other, "boolean" | "number" | "integer"),
    }
}

/// Whether a plain scalar with this text is a boolean to cfn-lint's YAML 1.1 loader (the tree
/// does not say whether it was quoted, so a quoted `"yes"` passes too: a miss, never a false
/// error).
fn yaml11_bool(text: &str) -> bool {
    matches!(text, "yes" | "Yes" | "YES" | "no" | "No" | "NO" | "on" | "On" | "ON" | "off" | "Off" | "OFF")
}

/// Whether cfn-lint's YAML 1.1 loader may read this text (when not quoted) as something other
/// than a string (a boolean, a sexagesimal number, a date): enums, patterns and lengths are
/// then not checked, as cfn-lint checks them on strings only.
fn maybe_not_a_string(text: &str) -> bool {
    static PLAIN: OnceLock<regex::Regex> = OnceLock::new();
    let plain = PLAIN.get_or_init(|| {
        regex::Regex::new(
            r"^(?:[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?)$",
        )
        .expect("a valid regex")
    });
    yaml11_bool(text) || plain.is_match(text)
}

/// cfn-lint's `equal` for enums: booleans by truth, numbers by value, anything else as text.
fn enum_matches(node: &Node, text: &str, allowed: &Json) -> bool {
    let as_bool = |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    match allowed {
        Json::String(a) if matches!(node.value, Value::Bool(_)) || as_bool(a).is_some() => {
            as_bool(a).is_some() && as_bool(a) == as_bool(text)
        }
        Json::Bool(b) => as_bool(text) == Some(*b),
        Json::String(a) => a == text || (matches!(node.value, Value::Number(_)) && same_number(a, text)),
        Json::Number(n) => n.to_string() == text || same_number(&n.to_string(), text),
        _ => true,
    }
}

fn same_number(a: &str, b: &str) -> bool {
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

/// A schema pattern compiled once (`None` when the `regex` crate cannot: not checked).
fn compiled(pattern: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::RegexBuilder::new(pattern).size_limit(1 << 22).build().ok())
        .clone()
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
