//! The native CloudFormation rules: each a stable ID (cfn-lint's where the meaning is the same),
//! a severity, a message that says what to fix, and the position of what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::node::{Key, Node, Pos, Value};
use crate::{Finding, Severity};

mod conditions;
mod iam;
pub mod schema;
mod shapes;
mod warnings;

/// One native rule's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Its stable ID.
    pub id: &'static str,
    /// How bad its findings are.
    pub severity: Severity,
    /// One line on what it checks.
    pub summary: &'static str,
    /// Its own name (`unknown-section`), which tells apart rules that share an ID: findings
    /// carry it as [`Finding::check`], SARIF names the rule `E1001/unknown-section`.
    pub name: &'static str,
}

impl Rule {
    /// Whether another native rule has the same ID.
    pub fn shares_id(&self) -> bool {
        ALL.iter().filter(|r| r.id == self.id).count() > 1
    }

    /// The native rule a finding came from, when it names one.
    pub fn of(finding: &Finding) -> Option<&'static Rule> {
        let check = finding.check.as_deref()?;
        ALL.iter().find(|r| r.name == check && r.id == finding.rule)
    }
}

/// `UNKNOWN_SECTION` as `unknown-section`, at compile time.
const fn kebab<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = match bytes[i] {
            b'_' => b'-',
            b => b.to_ascii_lowercase(),
        };
        i += 1;
    }
    out
}

macro_rules! rules {
    ($($name:ident = $id:literal, $severity:ident, $summary:literal;)+) => {
        $(#[doc = $summary] pub const $name: Rule = Rule {
            id: $id,
            severity: Severity::$severity,
            summary: $summary,
            name: {
                const NAME: &str = stringify!($name);
                const BYTES: [u8; NAME.len()] = kebab::<{ NAME.len() }>(NAME);
                match std::str::from_utf8(&BYTES) {
                    Ok(name) => name,
                    Err(_) => panic!("rule names are ASCII"),
                }
            },
        };)+
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
    CONDITION_INVALID = "E8001", Error, "A condition is a condition function, and names defined conditions";
    EQUALS_INVALID = "E8003", Error, "Fn::Equals compares two values";
    AND_INVALID = "E8004", Error, "Fn::And takes 2 to 10 defined conditions";
    NOT_INVALID = "E8005", Error, "Fn::Not takes one defined condition";
    OR_INVALID = "E8006", Error, "Fn::Or takes 2 to 10 defined conditions";
    CONDITIONS_NULL = "E1001", Error, "No null in Conditions";
    CONDITIONS_NOT_A_MAP = "E1001", Error, "Conditions is a map of names to conditions";
    FORMAT_VERSION = "E1001", Error, "AWSTemplateFormatVersion is 2010-09-09";
    IF_INVALID = "E1028", Error, "Fn::If takes [condition, value if true, value if false]";
    BASE64_INVALID = "E1021", Error, "Fn::Base64 takes a string; references inside it resolve";
    IMPORT_VALUE_INVALID = "E1016", Error, "References inside Fn::ImportValue resolve";
    SELECT_INVALID = "E1017", Error, "References inside Fn::Select resolve";
    SPLIT_INVALID = "E1018", Error, "References inside Fn::Split resolve";
    JOIN_INVALID = "E1022", Error, "References inside Fn::Join resolve";
    GETAZS_INVALID = "E1015", Error, "References inside Fn::GetAZs resolve";
    CIDR_INVALID = "E1024", Error, "References inside Fn::Cidr resolve";
    OUTPUT_VALUE_REFERENCE = "E6101", Error, "References in an output's Value resolve";
    RESOURCE_KEY_UNKNOWN = "E3001", Error, "A resource has only the keys CloudFormation knows";
    RESOURCE_CONDITION_TYPE = "E3001", Error, "A resource's Condition is a condition's name";
    UPDATE_POLICY_INVALID = "E3016", Error, "UpdatePolicy only on resource types that take it, with the keys they take";
    CREATION_POLICY_INVALID = "E3055", Error, "CreationPolicy has the keys its resource type takes";
    NESTED_TEMPLATE_MISSING = "P3001", Warning, "A nested stack's local TemplateURL points to a file that exists";
    RESOURCE_TYPE_UNKNOWN = "E3006", Error, "The resource type exists in each region the templates are for";
    PROPERTY_UNKNOWN = "E3002", Error, "A resource's properties, nested ones included, are ones its type's schema names";
    PROPERTY_REQUIRED = "E3003", Error, "A resource has the properties its type's schema requires, nested ones included";
    VALUE_TYPE = "E3012", Error, "A property's value is of the type its schema says (an intrinsic function's result as cfn-lint reads it)";
    VALUE_NOT_ALLOWED = "E3030", Error, "A property's value is one of the values its schema allows";
    VALUE_PATTERN = "E3031", Error, "A property's string matches its schema's pattern";
    VALUE_LENGTH = "E3033", Error, "A property's string is within its schema's minLength and maxLength";
    READ_ONLY_PROPERTY = "E3040", Warning, "No read-only property is set (CloudFormation ignores it)";
    IAM_ACTION_UNKNOWN = "W3037", Warning, "IAM policy actions exist in AWS's catalogue";
    DEPENDS_ON_IMPLIED = "W3005", Warning, "No DependsOn that a Ref, Fn::GetAtt or Fn::Sub already implies";
    UNUSED_CONDITION = "W8001", Warning, "Every condition is used";
    SUB_WITHOUT_VARIABLE = "W1020", Warning, "Fn::Sub has a variable (otherwise write the string)";
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
    /// Logical IDs of modules (`…::MODULE` types): a module's resources are named by its
    /// logical ID followed by their own (`Network` makes `NetworkVpc`).
    modules: Vec<&'a str>,
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
        let modules = resources
            .iter()
            .filter(|(_, (_, r))| r.get("Type").and_then(Node::as_str).is_some_and(|t| t.ends_with("::MODULE")))
            .map(|(&name, _)| name)
            .collect();
        Names {
            transforms,
            parameters: keys("Parameters").iter().map(|(k, _)| (k.name.as_str(), k)).collect(),
            resources,
            conditions: entries(root.get("Conditions"), transforms).into_iter().map(|e| e.key.name.as_str()).collect(),
            mappings: keys("Mappings").iter().map(|(k, _)| k.name.as_str()).collect(),
            serverless,
            modules,
        }
    }

    /// Whether `name` is a resource of the template: one written, one a `Fn::ForEach` block
    /// makes, or (with the SAM transform) one whose name is of those SAM generates. SAM's names
    /// are matched by pattern, not worked out: a typo after a function's name passes here (the
    /// deployed template, or cfn-lint, which runs the transform, catches it). A module's
    /// resources are matched as cfn-lint matches them: the module's logical ID and at least
    /// one more character.
    fn is_resource(&self, name: &str) -> bool {
        self.resources.contains_key(name)
            || self.modules.iter().any(|m| name.len() > m.len() && name.starts_with(m))
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
    /// Each finding with the rule that made it (several rules share an ID).
    findings: Vec<(Rule, Finding)>,
}

impl Out<'_> {
    fn add(&mut self, rule: Rule, pos: Pos, message: String) {
        self.findings.push((
            rule,
            Finding {
                path: self.path.to_string(),
                pos,
                rule: rule.id.to_string(),
                severity: rule.severity,
                message,
                check: Some(rule.name.to_string()),
            },
        ));
    }
}

/// Runs every native rule on a parsed template for cfn-lint's default region (us-east-1).
/// `path` names it in findings; `dir` is its folder (for nested templates' local
/// TemplateURLs); `size` is its body's size in bytes.
pub fn check(root: &Node, path: &str, dir: &Path, size: usize) -> Vec<Finding> {
    check_in(root, path, dir, size, &[])
}

/// [`check`] for the given regions (cfn-lint's names, or `ALL_REGIONS`; none is us-east-1).
pub fn check_in(root: &Node, path: &str, dir: &Path, size: usize, regions: &[String]) -> Vec<Finding> {
    check_by_rule(root, path, dir, size, regions).into_iter().map(|(_, finding)| finding).collect()
}

/// [`check_in`], each finding with the native rule that made it: several rules share a
/// cfn-lint ID (E1001 is an unknown section, a missing `Resources`, a bad format version …),
/// and each has its own fixture and its own summary.
pub fn check_by_rule(root: &Node, path: &str, dir: &Path, size: usize, regions: &[String]) -> Vec<(Rule, Finding)> {
    let mut out = Out { path, findings: Vec::new() };
    if !root.is_map() {
        out.add(UNKNOWN_SECTION, root.pos, "a template is a map of sections (Resources, Parameters …)".into());
        return out.findings;
    }
    let names = Names::new(root);
    sections(root, &names, &mut out);
    conditions::section(root, &names, &mut out);
    limits(root, size, &mut out);
    resources(root, &names, dir, &mut out);
    references(root, &names, &mut out);
    outputs(root, names.transforms, &mut out);
    unused_parameters(root, &names, &mut out);
    cycles(&names, &mut out);
    warnings::implied_dependencies(&names, &mut out);
    warnings::unused_conditions(root, &names, &mut out);
    schema::check(root, &names, regions, &mut out);
    iam::actions(root, &names, &mut out);
    out.findings.sort_by(|a, b| a.1.cmp(&b.1));
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
    if let (Some(key), Some(version)) = (root.key("AWSTemplateFormatVersion"), root.get("AWSTemplateFormatVersion")) {
        // An unquoted date is a date to cfn-lint, and 2010-09-09 is the one it takes.
        let problems: &[&str] = match &version.value {
            Value::String(text) if text == "2010-09-09" => &[],
            Value::String(_) => &["is not one of ['2010-09-09']"],
            _ => &["is not one of ['2010-09-09']", "is not of type 'string', 'date'"],
        };
        for problem in problems {
            out.add(
                FORMAT_VERSION,
                key.pos,
                format!(
                    "AWSTemplateFormatVersion: {} {problem}: write \"2010-09-09\" or leave it out",
                    value_shape(version)
                ),
            );
        }
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
        match resource.get("Type").map(|t| &t.value) {
            None | Some(Value::Null) => {
                out.add(RESOURCE_TYPE_MISSING, key.pos, format!("resource `{}` has no Type", key.name));
            }
            _ => {}
        }
        if let (Some(type_key), Some(node)) = (resource.key("Type"), resource.get("Type"))
            && !matches!(node.value, Value::String(_))
        {
            out.add(
                RESOURCE_TYPE_MISSING,
                type_key.pos,
                format!(
                    "resource `{}`: Type takes a resource type such as AWS::S3::Bucket; {} is not of type 'string'",
                    key.name,
                    value_shape(node)
                ),
            );
        }
        depends_on(resource, names, out);
        resource_condition(key, resource, names, out);
        resource_keys(key, resource, resource_type, names.transforms, out);
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

/// A resource's `DependsOn` names resources of the template.
fn depends_on(resource: &Node, names: &Names<'_>, out: &mut Out<'_>) {
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
                out.add(DEPENDS_ON_UNDEFINED, pos, format!("DependsOn `{name}` is not a resource of this template"));
            }
        }
    }
}

/// A resource's `Condition` names a condition of the template.
fn resource_condition(key: &Key, resource: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    if let (Some(condition_key), Some(condition)) = (resource.key("Condition"), resource.get("Condition")) {
        match &condition.value {
            Value::String(name) if !names.is_condition(name) => out.add(
                RESOURCE_CONDITION_UNDEFINED,
                condition_key.pos,
                format!("condition `{name}` is not defined under Conditions"),
            ),
            Value::String(_) => {}
            // The language extensions resolve a function there (`!Sub Is${Name}Enabled`).
            Value::Map(_) if names.transforms.language_extensions && condition.intrinsic().is_some() => {}
            _ => out.add(
                RESOURCE_CONDITION_TYPE,
                condition_key.pos,
                format!(
                    "resource `{}`: Condition takes the name of a condition under Conditions; {} is not of type 'string'",
                    key.name,
                    value_shape(condition)
                ),
            ),
        }
    }
}

/// The keys a resource may have beside `Type` (cfn-lint's resource schema).
const RESOURCE_KEYS: &[&str] = &[
    "Type",
    "Properties",
    "Condition",
    "CreationPolicy",
    "DeletionPolicy",
    "DependsOn",
    "Metadata",
    "UpdatePolicy",
    "UpdateReplacePolicy",
    "Version",
    // Keys the SAM transform reads.
    "Connectors",
    "IgnoreGlobals",
];

/// The resource types that take an `UpdatePolicy`, with the keys each takes.
const UPDATE_POLICIES: &[(&str, &[&str])] = &[
    (
        "AWS::AutoScaling::AutoScalingGroup",
        &[
            "AutoScalingInstanceRefresh",
            "AutoScalingReplacingUpdate",
            "AutoScalingRollingUpdate",
            "AutoScalingScheduledAction",
        ],
    ),
    // cfn-lint's schema lets a Lambda alias's UpdatePolicy hold other keys too.
    ("AWS::Lambda::Alias", &[]),
    ("AWS::Elasticsearch::Domain", &["EnableVersionUpgrade"]),
    ("AWS::OpenSearchService::Domain", &["EnableVersionUpgrade"]),
    ("AWS::ElastiCache::ReplicationGroup", &["UseOnlineResharding"]),
    ("AWS::AppStream::Fleet", &["StartAfterUpdate", "StopBeforeUpdate"]),
];

/// The resource types whose `CreationPolicy` cfn-lint checks, with the keys each takes (on
/// other types CloudFormation ignores it, and cfn-lint says nothing).
const CREATION_POLICIES: &[(&str, &[&str])] = &[
    ("AWS::AutoScaling::AutoScalingGroup", &["AutoScalingCreationPolicy", "ResourceSignal"]),
    ("AWS::CloudFormation::WaitCondition", &["ResourceSignal"]),
    ("AWS::AppStream::Fleet", &["StartFleet"]),
];

/// A value as cfn-lint names it in a type mismatch.
fn value_shape(node: &Node) -> &'static str {
    match &node.value {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        _ => shape_of(node),
    }
}

/// Keys of a resource, and its `UpdatePolicy` and `CreationPolicy` where cfn-lint checks them.
fn resource_keys(key: &Key, resource: &Node, resource_type: Option<&str>, transforms: Transforms, out: &mut Out<'_>) {
    if !resource.is_map() {
        return;
    }
    // The SAM transform rewrites its own resources; cfn-lint checks what it makes.
    let serverless = transforms.sam && resource_type.is_some_and(|t| t.starts_with("AWS::Serverless::"));
    if serverless {
        return;
    }
    for (k, _) in resource.entries() {
        if !RESOURCE_KEYS.contains(&k.name.as_str()) {
            out.add(
                RESOURCE_KEY_UNKNOWN,
                k.pos,
                format!(
                    "resource `{}`: `{}` is not a resource attribute; properties go under Properties (known: {})",
                    key.name,
                    k.name,
                    RESOURCE_KEYS[..10].join(", ")
                ),
            );
        }
    }
    let Some(resource_type) = resource_type else { return };
    let custom = resource_type == "AWS::CloudFormation::CustomResource" || resource_type.starts_with("Custom::");
    if !custom && resource.get("Version").is_some() {
        out.add(
            RESOURCE_KEY_UNKNOWN,
            key.pos,
            format!("resource `{}`: Version is only for custom resources; remove it", key.name),
        );
    }
    if let (Some(policy_key), Some(policy)) = (resource.key("UpdatePolicy"), resource.get("UpdatePolicy"))
        && policy.intrinsic().is_none()
    {
        match UPDATE_POLICIES.iter().find(|(t, _)| *t == resource_type) {
            None => out.add(
                UPDATE_POLICY_INVALID,
                policy_key.pos,
                format!("resource `{}`: {resource_type} takes no UpdatePolicy (only Auto Scaling groups, Lambda aliases, OpenSearch and Elasticsearch domains, ElastiCache replication groups and AppStream fleets do); remove it", key.name),
            ),
            Some((_, known)) if !known.is_empty() => {
                policy_keys(UPDATE_POLICY_INVALID, "UpdatePolicy", key, policy, known, out);
            }
            Some(_) => {}
        }
    }
    if let Some(policy) = resource.get("CreationPolicy")
        && let Some((_, known)) = CREATION_POLICIES.iter().find(|(t, _)| *t == resource_type)
    {
        policy_keys(CREATION_POLICY_INVALID, "CreationPolicy", key, policy, known, out);
    }
}

fn policy_keys(rule: Rule, what: &str, key: &Key, policy: &Node, known: &[&str], out: &mut Out<'_>) {
    for (k, _) in policy.entries() {
        if !known.contains(&k.name.as_str()) {
            out.add(
                rule,
                k.pos,
                format!(
                    "resource `{}`: `{}` is not a {what} key here; expected one of {}",
                    key.name,
                    k.name,
                    known.join(", ")
                ),
            );
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
    // A function (a parameter's `Ref`, a `Fn::Sub`) is not a path, nor is a dynamic reference.
    let Some(text) = url.as_str() else { return };
    if text.contains("://") || text.starts_with("s3.") || text.contains("{{resolve:") {
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

/// Every node of the template with where cfn-lint would point for it, the loop identifiers in
/// scope there (with `AWS::LanguageExtensions`: those of the `Fn::ForEach` blocks it is in, as
/// an index into `scopes`, each `(identifier, enclosing scope)`), and what it is inside.
struct Keyed<'a> {
    sites: Vec<Site<'a>>,
    scopes: Vec<(&'a str, usize)>,
}

/// One node and its place.
#[derive(Clone, Copy)]
struct Site<'a> {
    node: &'a Node,
    /// cfn-lint's position for a finding whose path ends at this node: the key it sits under
    /// (a short form's key has no position of its own), or a list item's own position when
    /// the item is a string, a map or a list (numbers, booleans and null carry none).
    at: Pos,
    /// cfn-lint's position for a finding deeper down that has none of its own: the nearest
    /// written key above (list items never give one).
    up: Pos,
    scope: usize,
    within: Within,
}

/// What a node is inside, for the rule ID cfn-lint files a problem under.
#[derive(Clone, Copy, Default)]
struct Within {
    /// The top-level section.
    section: Option<Section>,
    /// Inside an output's `Value`: references are E6101.
    output_value: bool,
    /// The outermost function (other than `Fn::If`) around it, whose ID a `Fn::GetAtt` or
    /// `Fn::Sub` problem takes (`Fn::Join` E1022, `Fn::Select` E1017 …).
    wrapper: Option<Rule>,
    /// Inside a condition of `Conditions`: the ID its top-level function gives problems.
    condition: Option<Rule>,
    /// Inside a `Fn::Transform`'s argument, which the transform (a macro) reads before
    /// CloudFormation, and cfn-lint, see the template: its functions are not checked.
    transform: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Conditions,
    Rules,
    Resources,
    Outputs,
    Other,
}

/// The functions whose ID a `Fn::GetAtt` or `Fn::Sub` problem inside them carries.
const WRAPPERS: &[(&str, Rule)] = &[
    ("Fn::Base64", BASE64_INVALID),
    ("Fn::Cidr", CIDR_INVALID),
    ("Fn::FindInMap", FINDINMAP_UNDEFINED),
    ("Fn::GetAZs", GETAZS_INVALID),
    ("Fn::ImportValue", IMPORT_VALUE_INVALID),
    ("Fn::Join", JOIN_INVALID),
    ("Fn::Select", SELECT_INVALID),
    ("Fn::Split", SPLIT_INVALID),
    ("Fn::Sub", SUB_UNDEFINED),
];

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

/// Whether cfn-lint's loader gives this node a position (strings, maps and lists do).
fn has_mark(node: &Node) -> bool {
    matches!(node.value, Value::String(_) | Value::Map(_) | Value::Seq(_))
}

fn walk_keyed<'a>(root: &'a Node, transforms: Transforms) -> Keyed<'a> {
    let output_values: BTreeSet<*const Node> = entries(root.get("Outputs"), transforms)
        .iter()
        .filter_map(|e| e.node.get("Value"))
        .map(|v| v as *const Node)
        .collect();
    let conditions: BTreeSet<*const Node> =
        entries(root.get("Conditions"), transforms).iter().map(|e| e.node as *const Node).collect();
    let first = Pos { line: 1, column: 1 };
    let mut keyed = Keyed { sites: Vec::new(), scopes: Vec::new() };
    let mut stack = vec![Site { node: root, at: first, up: first, scope: NO_SCOPE, within: Within::default() }];
    while let Some(site) = stack.pop() {
        keyed.sites.push(site);
        let node = site.node;
        match &node.value {
            Value::Seq(items) => stack.extend(items.iter().rev().map(|item| Site {
                node: item,
                at: if has_mark(item) { item.pos } else { site.up },
                up: site.up,
                scope: site.scope,
                within: site.within,
            })),
            Value::Map(entries) => {
                let intrinsic = node.intrinsic().map(|(k, _)| k.name.as_str());
                for (k, v) in entries.iter().rev() {
                    let mut inner = site.scope;
                    if transforms.language_extensions
                        && k.name.starts_with(FOR_EACH)
                        && let Some(identifier) = v.items().first().and_then(Node::as_str)
                    {
                        keyed.scopes.push((identifier, site.scope));
                        inner = keyed.scopes.len() - 1;
                    }
                    let mut within = site.within;
                    if std::ptr::eq(node, root) {
                        within.section = Some(match k.name.as_str() {
                            "Conditions" => Section::Conditions,
                            "Rules" => Section::Rules,
                            "Resources" => Section::Resources,
                            "Outputs" => Section::Outputs,
                            _ => Section::Other,
                        });
                    }
                    if output_values.contains(&(v as *const Node)) {
                        within.output_value = true;
                    }
                    if conditions.contains(&(v as *const Node)) {
                        within.condition = Some(conditions::rule_of(v));
                    }
                    if intrinsic == Some("Fn::Transform") {
                        within.transform = true;
                    }
                    if let Some(name) = intrinsic
                        && within.wrapper.is_none()
                        && let Some((_, id)) = WRAPPERS.iter().find(|(f, _)| *f == name)
                    {
                        within.wrapper = Some(*id);
                    }
                    let at = if k.short_form { site.up } else { k.pos };
                    stack.push(Site { node: v, at, up: at, scope: inner, within });
                }
            }
            _ => {}
        }
    }
    keyed
}

/// Where cfn-lint points for a problem with an intrinsic function as a whole: its key, or,
/// for a short form (which has no key in the text), the nearest written key above.
fn intrinsic_pos(key: &Key, site: &Site<'_>) -> Pos {
    if key.short_form { site.up } else { key.pos }
}

/// Where cfn-lint points for a problem with an item of a function's list argument: the item
/// when it has a position, otherwise the function.
fn item_pos(key: &Key, site: &Site<'_>, item: &Node) -> Pos {
    if has_mark(item) { item.pos } else { intrinsic_pos(key, site) }
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
    for site in &keyed.sites {
        let (node, within) = (site.node, site.within);
        if within.section == Some(Section::Conditions) {
            conditions::check_site(site, names, out);
        }
        // Like cfn-lint, functions are checked where CloudFormation resolves them: not in the
        // template's Metadata, Parameters or Mappings (cfn-lint files a function there under
        // those sections' own rules), nor inside a `Fn::Transform`.
        if within.section == Some(Section::Other) || within.transform {
            continue;
        }
        let Some((key, arg)) = node.intrinsic() else { continue };
        // cfn-lint files a reference inside an output's Value under E6101, and a `Fn::GetAtt`
        // or `Fn::Sub` problem under the outermost function around it.
        let reference_rule =
            |own: Rule| if within.output_value { OUTPUT_VALUE_REFERENCE } else { within.wrapper.unwrap_or(own) };
        match key.name.as_str() {
            "Ref" => fn_ref(names, &keyed, key, arg, site, out),
            "Fn::GetAtt" => getatt(names, key, arg, site, reference_rule(GETATT_UNDEFINED), out),
            "Fn::Sub" => fn_sub(names, &keyed, key, arg, site, reference_rule(SUB_UNDEFINED), out),
            "Fn::FindInMap" => {
                if let Some(map) = arg.items().first()
                    && let Some(name) = map.as_str()
                    && !names.mappings.contains(name)
                {
                    out.add(
                        FINDINMAP_UNDEFINED,
                        item_pos(key, site, map),
                        format!("Fn::FindInMap `{name}` is not a mapping of this template"),
                    );
                }
            }
            "Fn::If" => fn_if(names, key, arg, site, reference_rule(IF_CONDITION_UNDEFINED), out),
            name if let Some(shape) = shapes::shape_of_function(name) => {
                let own = match name {
                    "Fn::Base64" => BASE64_INVALID,
                    "Fn::ImportValue" => IMPORT_VALUE_INVALID,
                    "Fn::GetAZs" => GETAZS_INVALID,
                    "Fn::Select" => SELECT_INVALID,
                    "Fn::Join" => JOIN_INVALID,
                    "Fn::Split" => SPLIT_INVALID,
                    _ => CIDR_INVALID,
                };
                shapes::check(name, arg, shape, intrinsic_pos(key, site), reference_rule(own), out);
            }
            _ => {}
        }
    }
    output_conditions(root, names, out);
}

/// `Ref`: a string naming a parameter, resource or pseudo-parameter (or a loop's variable).
fn fn_ref(names: &Names<'_>, keyed: &Keyed<'_>, key: &Key, arg: &Node, site: &Site<'_>, out: &mut Out<'_>) {
    let whole = intrinsic_pos(key, site);
    let kind = shape_of(arg);
    let rule = if site.within.output_value { OUTPUT_VALUE_REFERENCE } else { REF_UNDEFINED };
    if names.transforms.language_extensions && arg.intrinsic().is_some() {
        // The language extensions resolve `Ref` of a function (`!Ref {Fn::Sub: …}`).
    } else if matches!(arg.value, Value::Null) {
        // cfn-lint says nothing about `Ref:` with nothing after it.
    } else if kind != STRING {
        out.add(
            rule,
            whole,
            format!("Ref takes the name of a parameter, resource or pseudo-parameter; {kind} is not of type 'string'"),
        );
    } else if let Some(name) = arg.as_str()
        && !names.is_ref_target(name)
        && !keyed.in_scope(site.scope, name)
    {
        out.add(rule, whole, format!("Ref `{name}` is not a parameter, resource or pseudo-parameter of this template"));
    }
}

/// `Fn::Sub`: its shape, that it has a variable at all, and that each variable is known
/// (`undefined` is the rule a reference problem is filed under).
fn fn_sub(
    names: &Names<'_>,
    keyed: &Keyed<'_>,
    key: &Key,
    arg: &Node,
    site: &Site<'_>,
    undefined: Rule,
    out: &mut Out<'_>,
) {
    let whole = intrinsic_pos(key, site);
    let problem = match &arg.value {
        Value::Seq(items) if items.len() > 2 => Some(format!("expected maximum item count: 2, found: {}", items.len())),
        Value::Seq(items) if items.len() < 2 => Some(format!("expected minimum item count: 2, found: {}", items.len())),
        Value::Map(_) => Some(format!("{} is not of type 'array', 'string'", shape_of(arg))),
        _ => None,
    };
    if let Some(problem) = problem {
        out.add(SUB_UNDEFINED, whole, format!("Fn::Sub takes a string or [string, {{variables}}]: {problem}"));
        return;
    }
    if matches!(arg.value, Value::Null) {
        // cfn-lint fails on it with the position of what holds the function.
        out.add(
            SUB_UNDEFINED,
            site.at,
            "Fn::Sub takes a string or [string, {variables}]: null is not of type 'array', 'string'".into(),
        );
        return;
    }
    let (text_node, variables) = match &arg.value {
        Value::Seq(items) => (items.first(), items.get(1)),
        _ => (Some(arg), None),
    };
    let Some(text) = text_node.and_then(Node::as_str) else { return };
    // Like cfn-lint, not with the SAM transform.
    if !names.transforms.sam && sub_variables(text).iter().all(|(_, v)| v.is_empty()) {
        out.add(SUB_WITHOUT_VARIABLE, whole, "Fn::Sub has no ${variable}: write the string without Fn::Sub".into());
    }
    let local: BTreeSet<&str> =
        variables.map(|v| v.entries().iter().map(|(k, _)| k.name.as_str()).collect()).unwrap_or_default();
    for (_, var) in sub_variables(text) {
        let known = match var.split_once('.') {
            _ if local.contains(var) || names.is_ref_target(var) || keyed.in_scope(site.scope, var) => true,
            Some((resource, _)) => names.is_resource(resource) || local.contains(resource),
            None => false,
        };
        if !known {
            out.add(
                undefined,
                whole,
                format!("Fn::Sub variable `${{{var}}}` is not a parameter, resource, attribute or pseudo-parameter; for a literal write `${{!{var}}}`"),
            );
        }
    }
}

/// An output's `Condition` names a condition of the template.
fn output_conditions(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    for Entry { node: output, .. } in entries(root.get("Outputs"), names.transforms) {
        if let (Some(key), Some(name)) = (output.key("Condition"), output.get("Condition").and_then(Node::as_str))
            && !names.is_condition(name)
        {
            out.add(OUTPUT_CONDITION_UNDEFINED, key.pos, format!("condition `{name}` is not defined under Conditions"));
        }
    }
}

fn getatt(names: &Names<'_>, key: &Key, arg: &Node, site: &Site<'_>, undefined: Rule, out: &mut Out<'_>) {
    let whole = intrinsic_pos(key, site);
    let invalid = "Fn::GetAtt is not valid: it must name a resource and an attribute (`Resource.Attribute`)";
    let problem = match &arg.value {
        Value::Seq(items) if items.len() > 2 => Some((
            whole,
            format!("Fn::GetAtt takes [resource, attribute]: expected maximum item count: 2, found: {}", items.len()),
        )),
        Value::Seq(items) if items.len() < 2 => Some((whole, invalid.to_string())),
        // The language extensions resolve a function there (`!GetAtt [!Sub "${Name}Queue", Arn]`
        // in a `Fn::ForEach` block); the resolved name is not worked out here.
        Value::Seq(items) if names.transforms.language_extensions && items[0].intrinsic().is_some() => return,
        Value::Seq(items) if !matches!(items[0].value, Value::String(_)) => Some((
            item_pos(key, site, &items[0]),
            format!(
                "Fn::GetAtt takes [resource, attribute]: the resource, {}, is not of type 'string'",
                shape_of(&items[0])
            ),
        )),
        // cfn-lint fails on these with the position of what holds the function.
        Value::Seq(items) if matches!(items[1].value, Value::Number(_) | Value::Bool(_) | Value::Null) => {
            Some((site.at, "Fn::GetAtt takes [resource, attribute]: the attribute must be a string".to_string()))
        }
        Value::Null => {
            Some((site.at, "Fn::GetAtt takes `Resource.Attribute` or [resource, attribute], not null".into()))
        }
        Value::String(text) if !text.contains('.') => Some((whole, invalid.to_string())),
        Value::Seq(_) | Value::String(_) | Value::Number(_) | Value::Bool(_) => None,
        Value::Map(_) => Some((
            whole,
            format!(
                "Fn::GetAtt takes `Resource.Attribute` or [resource, attribute]; {} is not of type 'string', 'array'",
                shape_of(arg)
            ),
        )),
    };
    if let Some((pos, problem)) = problem {
        out.add(GETATT_UNDEFINED, pos, problem);
        return;
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
                undefined,
                getatt_pos(key, arg, target, whole),
                format!("Fn::GetAtt `{resource}` is not a resource of this template"),
            );
        }
    }
}

/// `Fn::If`: `[condition, value if true, value if false]` with a defined condition.
/// An undefined condition is `undefined` (E1028, or the ID of the outermost function around it,
/// or E6101 in an output's value, as cfn-lint files it).
fn fn_if(names: &Names<'_>, key: &Key, arg: &Node, site: &Site<'_>, undefined: Rule, out: &mut Out<'_>) {
    let whole = intrinsic_pos(key, site);
    let items = match &arg.value {
        Value::Seq(items) => items,
        _ => {
            out.add(
                IF_INVALID,
                whole,
                format!(
                    "Fn::If takes [condition, value if true, value if false]; {} is not of type 'array'",
                    shape_of(arg)
                ),
            );
            return;
        }
    };
    if items.len() != 3 {
        let bound = if items.len() < 3 { "minimum" } else { "maximum" };
        out.add(
            IF_INVALID,
            whole,
            format!(
                "Fn::If takes [condition, value if true, value if false]: expected {bound} item count: 3, found: {}",
                items.len()
            ),
        );
        return;
    }
    let condition = &items[0];
    match condition.as_str() {
        Some(name) if names.is_condition(name) => {}
        Some(name) => out.add(
            undefined,
            item_pos(key, site, condition),
            format!("Fn::If condition `{name}` is not defined under Conditions"),
        ),
        None => out.add(
            undefined,
            item_pos(key, site, condition),
            format!("Fn::If takes a condition's name first; {} is not one of the conditions", shape_of(condition)),
        ),
    }
}

fn outputs(root: &Node, transforms: Transforms, out: &mut Out<'_>) {
    for Entry { key, node: output } in entries(root.get("Outputs"), transforms) {
        if output.get("Value").is_none_or(|v| matches!(v.value, Value::Null)) {
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
