//! The native CloudFormation rules: each a stable ID (cfn-lint's where the meaning is the same),
//! a severity, a message that says what to fix, and the position of what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::node::{Key, Node, Pos, Value};
use crate::{Finding, Severity};

/// One native rule's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Its stable ID.
    pub id: &'static str,
    /// How bad its findings are.
    pub severity: Severity,
    /// One line on what it checks.
    pub summary: &'static str,
}

macro_rules! rules {
    ($($name:ident = $id:literal, $severity:ident, $summary:literal;)+) => {
        $(#[doc = $summary] pub const $name: Rule = Rule { id: $id, severity: Severity::$severity, summary: $summary };)+
        /// Every native rule.
        pub const ALL: &[Rule] = &[$($name),+];
    };
}

rules! {
    UNKNOWN_SECTION = "E1001", Error, "Top-level sections are ones CloudFormation knows";
    RESOURCES_MISSING = "E1001", Error, "A template has a Resources section";
    GLOBALS_WITHOUT_SAM = "E3724", Error, "A Globals section comes with the SAM transform";
    TEMPLATE_TOO_BIG = "E1002", Error, "The template body is at most 1 MB";
    INLINE_BODY_TOO_BIG = "P1002", Warning, "A body over 51,200 bytes must be uploaded to S3 and passed as TemplateURL";
    GETATT_UNDEFINED = "E1010", Error, "Fn::GetAtt names a resource of the template";
    FINDINMAP_UNDEFINED = "E1011", Error, "Fn::FindInMap names a mapping of the template";
    REF_UNDEFINED = "E1020", Error, "Ref names a parameter, a resource or a pseudo-parameter";
    SUB_UNDEFINED = "E1019", Error, "Variables of Fn::Sub resolve";
    IF_CONDITION_UNDEFINED = "E1028", Error, "Fn::If names a condition of the template";
    PARAMETERS_LIMIT = "E2010", Error, "At most 200 parameters";
    UNUSED_PARAMETER = "W2001", Warning, "Every parameter is used";
    RESOURCE_TYPE_MISSING = "E3001", Error, "Every resource has a Type";
    CIRCULAR_DEPENDENCY = "E3004", Error, "Resources do not depend on each other in a circle";
    DEPENDS_ON_UNDEFINED = "E3005", Error, "DependsOn names resources of the template";
    RESOURCES_LIMIT = "E3010", Error, "At most 500 resources";
    LOGICAL_ID_INVALID = "E3001", Error, "Logical IDs are alphanumeric";
    OUTPUT_VALUE_MISSING = "E6002", Error, "Every output has a Value";
    OUTPUT_EXPORT_NAME_MISSING = "E6002", Error, "An output's Export has a Name";
    OUTPUTS_LIMIT = "E6010", Error, "At most 200 outputs";
    MAPPINGS_LIMIT = "E7010", Error, "At most 200 mappings";
    RESOURCE_CONDITION_UNDEFINED = "E3015", Error, "A resource's Condition is defined";
    OUTPUT_CONDITION_UNDEFINED = "E6005", Error, "An output's Condition is defined";
    CONDITION_UNDEFINED = "E8004", Error, "Conditions refer to defined conditions";
    NESTED_TEMPLATE_MISSING = "P3001", Error, "A nested stack's local TemplateURL points to a file that exists";
    IAM_WILDCARD = "P3002", Warning, "No IAM policy allows Action \"*\" on Resource \"*\"";
}

const SECTIONS: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Rules",
    "Mappings",
    "Conditions",
    "Transform",
    "Resources",
    "Outputs",
    "Hooks",
];

const PSEUDO_PARAMETERS: &[&str] = &[
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
];

/// The transforms a template declares at its top (`Transform`: a name or a list of names).
#[derive(Debug, Clone, Copy, Default)]
struct Transforms {
    /// Any transform: cfn-lint then skips W2001 (unused parameters).
    any: bool,
    /// `AWS::Serverless-2016-10-31`: `Globals`, and resources SAM generates.
    sam: bool,
    /// `AWS::LanguageExtensions`: `Fn::ForEach::Name` blocks, `Ref` of an intrinsic function.
    language_extensions: bool,
}

impl Transforms {
    fn new(root: &Node) -> Transforms {
        let Some(transform) = root.get("Transform") else { return Transforms::default() };
        let named: Vec<&str> = match &transform.value {
            Value::Seq(items) => items.iter().filter_map(Node::as_str).collect(),
            _ => transform.as_str().into_iter().collect(),
        };
        Transforms {
            any: match &transform.value {
                Value::Null => false,
                Value::Seq(items) => !items.is_empty(),
                Value::String(text) => !text.is_empty(),
                _ => true,
            },
            sam: named.contains(&"AWS::Serverless-2016-10-31"),
            language_extensions: named.contains(&"AWS::LanguageExtensions"),
        }
    }
}

/// The prefix of a `Fn::ForEach` block's key.
const FOR_EACH: &str = "Fn::ForEach::";

/// One entry of a section, `Fn::ForEach` blocks expanded to the entries of their templates.
struct Entry<'a> {
    key: &'a Key,
    node: &'a Node,
}

/// A section's entries; with `AWS::LanguageExtensions`, each `Fn::ForEach::Name` block
/// (`[Identifier, Collection, {OutputKey: template}]`, nested blocks included) stands for the
/// entries of its template, whose keys hold `${Identifier}` or `&{Identifier}`.
fn entries(section: Option<&Node>, transforms: Transforms) -> Vec<Entry<'_>> {
    let mut found = Vec::new();
    let mut stack: Vec<&Node> = section.into_iter().collect();
    while let Some(map) = stack.pop() {
        for (key, node) in map.entries() {
            if transforms.language_extensions && key.name.starts_with(FOR_EACH) {
                if let [_, _, template, ..] = node.items() {
                    stack.push(template);
                }
                continue;
            }
            found.push(Entry { key, node });
        }
    }
    found.sort_by_key(|e| e.key.pos);
    found
}

/// Whether a name fits a `Fn::ForEach` output key: the key's text with each `${…}` or `&{…}`
/// standing for one or more characters.
fn fits_template(template: &str, name: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find(['$', '&']).filter(|&i| rest[i + 1..].starts_with('{')) {
        let Some(end) = rest[start..].find('}') else { break };
        parts.push(&rest[..start]);
        rest = &rest[start + end + 1..];
    }
    parts.push(rest);
    let Some(first) = name.strip_prefix(parts[0]).map(|after| name.len() - after.len()) else { return false };
    // Where in `name` each part can end, every placeholder taking at least one character.
    let mut ends: BTreeSet<usize> = BTreeSet::from([first]);
    for part in &parts[1..] {
        let mut next = BTreeSet::new();
        for &end in &ends {
            for start in end + 1..=name.len() {
                if name.is_char_boundary(start) && name[start..].starts_with(part) {
                    next.insert(start + part.len());
                }
            }
        }
        ends = next;
    }
    parts.len() > 1 && ends.contains(&name.len())
}

/// Whether a key is a `Fn::ForEach` output key (it holds `${…}` or `&{…}`).
fn is_templated(name: &str) -> bool {
    name.contains("${") || name.contains("&{")
}

/// Resources the SAM transform adds, named after the API it creates for events or after the
/// `AWS::Serverless::*` resource they belong to (`<Function>Role`,
/// `<Function><Event>Permission…`, `<Api><Stage>Stage`, `<Function>Version…`, …).
const SAM_GENERATED_PREFIXES: &[&str] =
    &["ServerlessRestApi", "ServerlessHttpApi", "ServerlessDeploymentApplication", "CodeDeployServiceRole"];

/// A template's names, gathered once for every rule.
struct Names<'a> {
    transforms: Transforms,
    parameters: BTreeMap<&'a str, &'a Key>,
    resources: BTreeMap<&'a str, (&'a Key, &'a Node)>,
    conditions: BTreeSet<&'a str>,
    mappings: BTreeSet<&'a str>,
    /// Logical IDs of `AWS::Serverless::*` resources, with the SAM transform.
    serverless: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn new(root: &'a Node) -> Names<'a> {
        let transforms = Transforms::new(root);
        let keys = |section: &str| root.get(section).map(|n| n.entries()).unwrap_or(&[]);
        let resources: BTreeMap<&str, (&Key, &Node)> = entries(root.get("Resources"), transforms)
            .into_iter()
            .map(|e| (e.key.name.as_str(), (e.key, e.node)))
            .collect();
        let serverless = if transforms.sam {
            resources
                .iter()
                .filter(|(_, (_, r))| {
                    r.get("Type").and_then(Node::as_str).is_some_and(|t| t.starts_with("AWS::Serverless::"))
                })
                .map(|(&name, _)| name)
                .collect()
        } else {
            Vec::new()
        };
        Names {
            transforms,
            parameters: keys("Parameters").iter().map(|(k, _)| (k.name.as_str(), k)).collect(),
            resources,
            conditions: entries(root.get("Conditions"), transforms).into_iter().map(|e| e.key.name.as_str()).collect(),
            mappings: keys("Mappings").iter().map(|(k, _)| k.name.as_str()).collect(),
            serverless,
        }
    }

    /// Whether `name` is a resource of the template: one written, one a `Fn::ForEach` block
    /// makes, or (with the SAM transform) one whose name is of those SAM generates. SAM's names
    /// are matched by pattern, not worked out: a typo after a function's name passes here (the
    /// deployed template, or cfn-lint, which runs the transform, catches it).
    fn is_resource(&self, name: &str) -> bool {
        self.resources.contains_key(name)
            || (self.transforms.language_extensions
                && self.resources.keys().any(|k| is_templated(k) && fits_template(k, name)))
            || (self.transforms.sam
                && (SAM_GENERATED_PREFIXES.iter().any(|p| name.starts_with(p))
                    || self.serverless.iter().any(|f| name.len() > f.len() && name.starts_with(f))))
    }

    fn is_condition(&self, name: &str) -> bool {
        self.conditions.contains(name)
            || (self.transforms.language_extensions
                && self.conditions.iter().any(|k| is_templated(k) && fits_template(k, name)))
    }

    fn is_ref_target(&self, name: &str) -> bool {
        self.parameters.contains_key(name) || self.is_resource(name) || PSEUDO_PARAMETERS.contains(&name)
    }
}

/// Collects findings for one template.
struct Out<'a> {
    path: &'a str,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn add(&mut self, rule: Rule, pos: Pos, message: String) {
        self.findings.push(Finding {
            path: self.path.to_string(),
            pos,
            rule: rule.id.to_string(),
            severity: rule.severity,
            message,
        });
    }
}

/// Runs every native rule on a parsed template. `path` names it in findings; `dir` is its folder
/// (for nested templates' local TemplateURLs); `size` is its body's size in bytes.
pub fn check(root: &Node, path: &str, dir: &Path, size: usize) -> Vec<Finding> {
    let mut out = Out { path, findings: Vec::new() };
    if !root.is_map() {
        out.add(UNKNOWN_SECTION, root.pos, "a template is a map of sections (Resources, Parameters …)".into());
        return out.findings;
    }
    let names = Names::new(root);
    sections(root, &names, &mut out);
    limits(root, size, &mut out);
    resources(root, &names, dir, &mut out);
    references(root, &names, &mut out);
    outputs(root, names.transforms, &mut out);
    unused_parameters(root, &names, &mut out);
    cycles(&names, &mut out);
    out.findings.sort();
    out.findings
}

fn sections(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    if root.get("Resources").is_none() {
        out.add(
            RESOURCES_MISSING,
            Pos { line: 1, column: 1 },
            "the template has no Resources section: CloudFormation needs at least one resource".into(),
        );
    }
    for (key, _) in root.entries() {
        if key.name == "Globals" {
            if !names.transforms.sam {
                out.add(
                    GLOBALS_WITHOUT_SAM,
                    key.pos,
                    "a Globals section needs `Transform: AWS::Serverless-2016-10-31`: add the transform or move the settings into the resources".into(),
                );
            }
        } else if !SECTIONS.contains(&key.name.as_str()) {
            out.add(
                UNKNOWN_SECTION,
                key.pos,
                format!("`{}` is not a template section; expected one of {}", key.name, SECTIONS.join(", ")),
            );
        }
    }
}

fn limits(root: &Node, size: usize, out: &mut Out<'_>) {
    let checks = [
        ("Resources", 500, RESOURCES_LIMIT),
        ("Parameters", 200, PARAMETERS_LIMIT),
        ("Outputs", 200, OUTPUTS_LIMIT),
        ("Mappings", 200, MAPPINGS_LIMIT),
    ];
    for (section, max, rule) in checks {
        if let (Some(key), Some(node)) = (root.key(section), root.get(section)) {
            let count = node.entries().len();
            if count > max {
                out.add(
                    rule,
                    key.pos,
                    format!("{count} {}: CloudFormation allows at most {max}; split the stack", section.to_lowercase()),
                );
            }
        }
    }
    let first = Pos { line: 1, column: 1 };
    if size > 1_000_000 {
        out.add(
            TEMPLATE_TOO_BIG,
            first,
            format!(
                "the template is {size} bytes; CloudFormation accepts at most 1,000,000: split it into nested stacks"
            ),
        );
    } else if size > 51_200 {
        out.add(
            INLINE_BODY_TOO_BIG,
            first,
            format!(
                "the template is {size} bytes, over the 51,200 bytes of an inline body: deploy it from S3 (TemplateURL)"
            ),
        );
    }
}

fn resources(root: &Node, names: &Names<'_>, dir: &Path, out: &mut Out<'_>) {
    for Entry { key, node: resource } in entries(root.get("Resources"), names.transforms) {
        if !valid_logical_id(&key.name, names.transforms) {
            out.add(
                LOGICAL_ID_INVALID,
                key.pos,
                format!("logical ID `{}` must be alphanumeric (A-Z, a-z, 0-9)", key.name),
            );
        }
        let resource_type = resource.get("Type").and_then(Node::as_str);
        if resource_type.is_none() {
            out.add(RESOURCE_TYPE_MISSING, key.pos, format!("resource `{}` has no Type", key.name));
        }
        if let (Some(depends_key), Some(depends)) = (resource.key("DependsOn"), resource.get("DependsOn")) {
            // Like cfn-lint: a list's item, or the key of a single value.
            let targets: Vec<(&Node, Pos)> = match &depends.value {
                Value::Seq(items) => items.iter().map(|i| (i, i.pos)).collect(),
                _ => vec![(depends, depends_key.pos)],
            };
            for (target, pos) in targets {
                if let Some(name) = target.as_str()
                    && !names.is_resource(name)
                {
                    out.add(
                        DEPENDS_ON_UNDEFINED,
                        pos,
                        format!("DependsOn `{name}` is not a resource of this template"),
                    );
                }
            }
        }
        if let (Some(key), Some(name)) = (resource.key("Condition"), resource.get("Condition").and_then(Node::as_str))
            && !names.is_condition(name)
        {
            out.add(
                RESOURCE_CONDITION_UNDEFINED,
                key.pos,
                format!("condition `{name}` is not defined under Conditions"),
            );
        }
        if resource_type == Some("AWS::CloudFormation::Stack") {
            nested_template(key, resource, dir, out);
        }
        if matches!(
            resource_type,
            Some(
                "AWS::IAM::Policy"
                    | "AWS::IAM::ManagedPolicy"
                    | "AWS::IAM::Role"
                    | "AWS::IAM::User"
                    | "AWS::IAM::Group"
            )
        ) {
            iam_wildcards(resource, out);
        }
    }
}

/// Alphanumeric; a `Fn::ForEach` output key is checked without its `${Identifier}` parts.
fn valid_logical_id(name: &str, transforms: Transforms) -> bool {
    let alphanumeric = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric());
    if transforms.language_extensions && is_templated(name) {
        let mut rest = name;
        let mut literal = String::new();
        while let Some(start) = rest.find(['$', '&']).filter(|&i| rest[i + 1..].starts_with('{')) {
            let Some(end) = rest[start..].find('}') else { break };
            literal.push_str(&rest[..start]);
            rest = &rest[start + end + 1..];
        }
        literal.push_str(rest);
        return alphanumeric(&literal);
    }
    !name.is_empty() && alphanumeric(name)
}

fn nested_template(key: &Key, resource: &Node, dir: &Path, out: &mut Out<'_>) {
    let Some(url) = resource.get("Properties").and_then(|p| p.get("TemplateURL")) else { return };
    let Some(text) = url.as_str() else { return };
    if text.contains("://") || text.starts_with("s3.") {
        return;
    }
    if !dir.join(text).is_file() {
        out.add(
            NESTED_TEMPLATE_MISSING,
            url.pos,
            format!("nested stack `{}`: TemplateURL `{text}` is not a file next to this template", key.name),
        );
    }
}

fn iam_wildcards(resource: &Node, out: &mut Out<'_>) {
    for node in resource.walk() {
        let statements = match node.get("Statement") {
            Some(s) => match &s.value {
                Value::Seq(items) => items.iter().collect::<Vec<_>>(),
                _ => vec![s],
            },
            None => continue,
        };
        for statement in statements {
            let allows = statement.get("Effect").and_then(Node::as_str) == Some("Allow");
            let star = |field: &str| {
                statement.get(field).is_some_and(|v| match &v.value {
                    Value::Seq(items) => items.iter().any(|i| i.as_str() == Some("*")),
                    _ => v.as_str() == Some("*"),
                })
            };
            if allows && star("Action") && star("Resource") {
                let action = statement.get("Action");
                let star_item = action.and_then(|a| a.items().iter().find(|i| i.as_str() == Some("*")));
                let pos = star_item.or(action).map_or(statement.pos, |a| a.pos);
                out.add(
                    IAM_WILDCARD,
                    pos,
                    "this statement allows every action on every resource: name the actions and resources it needs"
                        .into(),
                );
            }
        }
    }
}

/// `${Name}` and `${Name.Attr}` variables of a Sub string, with their byte offsets; `${!Literal}` skipped.
pub fn sub_variables(text: &str) -> Vec<(usize, &str)> {
    let mut vars = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        if !inner.starts_with('!') {
            vars.push((offset + start, inner.trim()));
        }
        offset += start + 2 + end + 1;
        rest = &after[end + 1..];
    }
    vars
}

/// Every node with the key it sits under (`None` for list items and the root) and the loop
/// identifiers in scope there (with `AWS::LanguageExtensions`: those of the `Fn::ForEach`
/// blocks it is in, as an index into `scopes`, each `(identifier, enclosing scope)`).
struct Keyed<'a> {
    nodes: Vec<(&'a Node, Option<&'a Key>, usize)>,
    scopes: Vec<(&'a str, usize)>,
}

/// No loop identifier in scope.
const NO_SCOPE: usize = usize::MAX;

impl Keyed<'_> {
    fn in_scope(&self, mut scope: usize, name: &str) -> bool {
        while let Some(&(identifier, enclosing)) = self.scopes.get(scope) {
            if identifier == name {
                return true;
            }
            scope = enclosing;
        }
        false
    }
}

fn walk_keyed(root: &Node, transforms: Transforms) -> Keyed<'_> {
    let mut keyed = Keyed { nodes: Vec::new(), scopes: Vec::new() };
    let mut stack = vec![(root, None, NO_SCOPE)];
    while let Some((node, parent, scope)) = stack.pop() {
        keyed.nodes.push((node, parent, scope));
        match &node.value {
            Value::Seq(items) => stack.extend(items.iter().rev().map(|i| (i, None, scope))),
            Value::Map(entries) => {
                for (k, v) in entries.iter().rev() {
                    let mut inner = scope;
                    if transforms.language_extensions
                        && k.name.starts_with(FOR_EACH)
                        && let Some(identifier) = v.items().first().and_then(Node::as_str)
                    {
                        keyed.scopes.push((identifier, scope));
                        inner = keyed.scopes.len() - 1;
                    }
                    stack.push((v, Some(k), inner));
                }
            }
            _ => {}
        }
    }
    keyed
}

/// Where cfn-lint points for a problem with an intrinsic function as a whole: its key, or,
/// for a short form (which has no key in the text), the key it sits under.
fn intrinsic_pos(key: &Key, parent: Option<&Key>, node: &Node) -> Pos {
    if key.short_form { parent.map_or(node.pos, |p| p.pos) } else { key.pos }
}

/// cfn-lint points at the item of a written list, and at the whole function for `A.B`. The
/// parser turns the short form `!GetAtt A.B` into a list at the scalar's own position, which is
/// how it is told apart from a written list (whose position is its `[` or first dash).
fn getatt_pos(key: &Key, arg: &Node, target: &Node, whole: Pos) -> Pos {
    match arg.items() {
        [first, ..] if key.short_form && arg.pos == first.pos => whole,
        [_, _, ..] => target.pos,
        _ => whole,
    }
}

/// What a node is, for messages about an intrinsic function's argument of the wrong shape
/// (CloudFormation reads any scalar as a string).
fn shape_of(node: &Node) -> &'static str {
    match &node.value {
        Value::Map(_) => "a map",
        Value::Seq(_) => "a list",
        Value::Null => "null",
        Value::String(_) | Value::Number(_) | Value::Bool(_) => STRING,
    }
}

const STRING: &str = "a string";

fn references(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    let keyed = walk_keyed(root, names.transforms);
    for &(node, parent, scope) in &keyed.nodes {
        let Some((key, arg)) = node.intrinsic() else { continue };
        let whole = intrinsic_pos(key, parent, node);
        match key.name.as_str() {
            "Ref" => {
                let kind = shape_of(arg);
                if names.transforms.language_extensions && arg.intrinsic().is_some() {
                    // The language extensions resolve `Ref` of a function (`!Ref {Fn::Sub: …}`).
                } else if kind != STRING {
                    out.add(
                        REF_UNDEFINED,
                        whole,
                        format!("Ref takes the name of a parameter, resource or pseudo-parameter; {kind} is not of type 'string'"),
                    );
                } else if let Some(name) = arg.as_str()
                    && !names.is_ref_target(name)
                    && !keyed.in_scope(scope, name)
                {
                    out.add(
                        REF_UNDEFINED,
                        whole,
                        format!("Ref `{name}` is not a parameter, resource or pseudo-parameter of this template"),
                    );
                }
            }
            "Fn::GetAtt" => {
                let problem = match &arg.value {
                    Value::Seq(items) if items.len() > 2 => Some(format!(
                        "Fn::GetAtt takes [resource, attribute]: expected maximum item count: 2, found: {}",
                        items.len()
                    )),
                    Value::Seq(items) if items.len() < 2 => Some(
                        "Fn::GetAtt is not valid: it must name a resource and an attribute (`Resource.Attribute`)"
                            .to_string(),
                    ),
                    Value::String(text) if !text.contains('.') => Some(
                        "Fn::GetAtt is not valid: it must name a resource and an attribute (`Resource.Attribute`)"
                            .to_string(),
                    ),
                    Value::Seq(_) | Value::String(_) | Value::Number(_) | Value::Bool(_) => None,
                    Value::Map(_) | Value::Null => Some(format!(
                        "Fn::GetAtt takes `Resource.Attribute` or [resource, attribute]; {} is not of type 'string', 'array'",
                        shape_of(arg)
                    )),
                };
                if let Some(problem) = problem {
                    out.add(GETATT_UNDEFINED, whole, problem);
                    continue;
                }
                let target = match &arg.value {
                    Value::Seq(items) => items.first(),
                    Value::String(_) => Some(arg),
                    _ => None,
                };
                if let Some(target) = target
                    && let Some(name) = target.as_str()
                {
                    let resource = name.split('.').next().unwrap_or(name);
                    if !names.is_resource(resource) {
                        out.add(
                            GETATT_UNDEFINED,
                            getatt_pos(key, arg, target, whole),
                            format!("Fn::GetAtt `{resource}` is not a resource of this template"),
                        );
                    }
                }
            }
            "Fn::Sub" => {
                let problem = match &arg.value {
                    Value::Seq(items) if items.len() > 2 => {
                        Some(format!("expected maximum item count: 2, found: {}", items.len()))
                    }
                    Value::Seq(items) if items.len() < 2 => {
                        Some(format!("expected minimum item count: 2, found: {}", items.len()))
                    }
                    Value::Map(_) | Value::Null => Some(format!("{} is not of type 'array', 'string'", shape_of(arg))),
                    _ => None,
                };
                if let Some(problem) = problem {
                    out.add(
                        SUB_UNDEFINED,
                        whole,
                        format!("Fn::Sub takes a string or [string, {{variables}}]: {problem}"),
                    );
                    continue;
                }
                let (text_node, variables) = match &arg.value {
                    Value::Seq(items) => (items.first(), items.get(1)),
                    _ => (Some(arg), None),
                };
                let Some(text_node) = text_node else { continue };
                let Some(text) = text_node.as_str() else { continue };
                let local: BTreeSet<&str> =
                    variables.map(|v| v.entries().iter().map(|(k, _)| k.name.as_str()).collect()).unwrap_or_default();
                for (_, var) in sub_variables(text) {
                    let known = match var.split_once('.') {
                        _ if local.contains(var) || names.is_ref_target(var) || keyed.in_scope(scope, var) => true,
                        Some((resource, _)) => names.is_resource(resource) || local.contains(resource),
                        None => false,
                    };
                    if !known {
                        out.add(
                            SUB_UNDEFINED,
                            whole,
                            format!("Fn::Sub variable `${{{var}}}` is not a parameter, resource, attribute or pseudo-parameter; for a literal write `${{!{var}}}`"),
                        );
                    }
                }
            }
            "Fn::FindInMap" => {
                if let Some(map) = arg.items().first()
                    && let Some(name) = map.as_str()
                    && !names.mappings.contains(name)
                {
                    out.add(
                        FINDINMAP_UNDEFINED,
                        map.pos,
                        format!("Fn::FindInMap `{name}` is not a mapping of this template"),
                    );
                }
            }
            "Fn::If" => {
                if let Some(condition) = arg.items().first()
                    && let Some(name) = condition.as_str()
                    && !names.is_condition(name)
                {
                    out.add(
                        IF_CONDITION_UNDEFINED,
                        condition.pos,
                        format!("Fn::If condition `{name}` is not defined under Conditions"),
                    );
                }
            }
            _ => {}
        }
    }
    for Entry { node: output, .. } in entries(root.get("Outputs"), names.transforms) {
        if let (Some(key), Some(name)) = (output.key("Condition"), output.get("Condition").and_then(Node::as_str))
            && !names.is_condition(name)
        {
            out.add(OUTPUT_CONDITION_UNDEFINED, key.pos, format!("condition `{name}` is not defined under Conditions"));
        }
    }
    // Like cfn-lint, at the condition that refers to the missing one.
    for Entry { key, node: condition } in entries(root.get("Conditions"), names.transforms) {
        for node in condition.walk() {
            if let Some((inner, arg)) = node.intrinsic()
                && inner.name == "Condition"
                && let Some(name) = arg.as_str()
                && !names.is_condition(name)
            {
                out.add(
                    CONDITION_UNDEFINED,
                    key.pos,
                    format!("condition `{}` refers to `{name}`, which is not defined under Conditions", key.name),
                );
            }
        }
    }
}

fn outputs(root: &Node, transforms: Transforms, out: &mut Out<'_>) {
    for Entry { key, node: output } in entries(root.get("Outputs"), transforms) {
        if output.get("Value").is_none() {
            out.add(OUTPUT_VALUE_MISSING, key.pos, format!("output `{}` has no Value", key.name));
        }
        if let (Some(export_key), Some(export)) = (output.key("Export"), output.get("Export"))
            && export.get("Name").is_none()
        {
            out.add(
                OUTPUT_EXPORT_NAME_MISSING,
                export_key.pos,
                format!("the Export of output `{}` has no Name", key.name),
            );
        }
    }
}

fn unused_parameters(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    // Like cfn-lint: a template with a transform may use its parameters in what the transform
    // makes (`Fn::Transform` inside the template does not count).
    if names.transforms.any {
        return;
    }
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for node in root.walk() {
        let Some((key, arg)) = node.intrinsic() else { continue };
        match key.name.as_str() {
            "Ref" => used.extend(arg.as_str()),
            "Fn::Sub" => {
                let text = match &arg.value {
                    Value::Seq(items) => items.first().and_then(Node::as_str),
                    _ => arg.as_str(),
                };
                used.extend(text.map(sub_variables).unwrap_or_default().into_iter().map(|(_, v)| v));
            }
            _ => {}
        }
    }
    for (name, key) in &names.parameters {
        if !used.contains(name) {
            out.add(UNUSED_PARAMETER, key.pos, format!("parameter `{name}` is never used: remove it or Ref it"));
        }
    }
}

/// Resources each resource depends on through Ref, Fn::GetAtt, Fn::Sub and DependsOn.
fn dependencies<'a>(names: &Names<'a>) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut graph = BTreeMap::new();
    for (&name, (_, resource)) in &names.resources {
        let mut targets = BTreeSet::new();
        let mut add = |target: &str| {
            if let Some((&known, _)) = names.resources.get_key_value(target) {
                targets.insert(known);
            }
        };
        for node in resource.walk() {
            let Some((key, arg)) = node.intrinsic() else { continue };
            match key.name.as_str() {
                "Ref" => arg.as_str().into_iter().for_each(&mut add),
                "Fn::GetAtt" => {
                    let first = arg.items().first().unwrap_or(arg);
                    if let Some(text) = first.as_str() {
                        add(text.split('.').next().unwrap_or(text));
                    }
                }
                "Fn::Sub" => {
                    let text = arg.items().first().unwrap_or(arg).as_str().unwrap_or("");
                    for (_, var) in sub_variables(text) {
                        add(var.split('.').next().unwrap_or(var));
                    }
                }
                _ => {}
            }
        }
        if let Some(depends) = resource.get("DependsOn") {
            let items: Vec<&Node> =
                if depends.items().is_empty() { vec![depends] } else { depends.items().iter().collect() };
            for item in items {
                item.as_str().into_iter().for_each(&mut add);
            }
        }
        graph.insert(name, targets);
    }
    graph
}

fn cycles(names: &Names<'_>, out: &mut Out<'_>) {
    let graph = dependencies(names);
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    // Iterative depth-first search with an explicit stack: templates may be large and hostile.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 0 new, 1 open, 2 done
    for &start in graph.keys() {
        if state.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut path: Vec<&str> = vec![start];
        let mut iters: Vec<std::collections::btree_set::Iter<'_, &str>> = vec![graph[start].iter()];
        state.insert(start, 1);
        while let Some(iter) = iters.last_mut() {
            match iter.next() {
                Some(&next) => match state.get(next).copied().unwrap_or(0) {
                    0 => {
                        state.insert(next, 1);
                        path.push(next);
                        iters.push(graph[next].iter());
                    }
                    1 => {
                        let from = path.iter().position(|&n| n == next).unwrap_or(0);
                        let cycle: Vec<&str> = path[from..].to_vec();
                        if cycle.iter().all(|n| !reported.contains(n)) {
                            reported.extend(cycle.iter().copied());
                            let mut shown: Vec<&str> = cycle.clone();
                            shown.push(cycle[0]);
                            let shown = shown.join(" -> ");
                            // Like cfn-lint, one finding on each resource of the cycle.
                            for member in &cycle {
                                let (key, _) = names.resources[member];
                                out.add(
                                    CIRCULAR_DEPENDENCY,
                                    key.pos,
                                    format!("`{member}` is in a circular dependency: {shown}; break it by removing a reference or a DependsOn"),
                                );
                            }
                        }
                    }
                    _ => {}
                },
                None => {
                    let done = path.pop().expect("path follows the stack");
                    state.insert(done, 2);
                    iters.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fits_template, sub_variables};

    #[test]
    fn for_each_keys_fit_names_with_one_or_more_characters_per_identifier() {
        assert!(fits_template("Queue${Name}", "QueueOrders"));
        assert!(fits_template("${Name}Url", "OrdersUrl"));
        assert!(fits_template("A&{X}B${Y}C", "A1B2C"));
        assert!(!fits_template("Topic${Name}", "Topic"), "an identifier stands for at least one character");
        assert!(!fits_template("A${X}B${Y}C", "ABC"));
        assert!(!fits_template("Queue${Name}", "TopicOrders"));
        assert!(!fits_template("Queue", "Queue"), "not an output key");
    }

    #[test]
    fn sub_variables_skip_literals() {
        let vars = sub_variables("arn:${AWS::Partition}:s3:::${Bucket}/${!Literal}/${Res.Arn}");
        let names: Vec<&str> = vars.iter().map(|(_, v)| *v).collect();
        assert_eq!(names, ["AWS::Partition", "Bucket", "Res.Arn"]);
    }
}
