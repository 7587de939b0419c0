//! The arguments of `Fn::Base64`, `Fn::ImportValue`, `Fn::GetAZs`, `Fn::Select`, `Fn::Join`,
//! `Fn::Split` and `Fn::Cidr`, checked as cfn-lint 1.58.0 checks them (its schemas
//! `other/functions/*.json`): the types, item counts and bounds, and which functions may stand
//! for a value there. A function not allowed in a place is read as a map, so "not of type".

use super::{Out, Rule, has_mark};
use crate::node::{Node, Pos, Value};

/// What a function's argument (or a part of it) must be.
pub(super) enum Shape {
    /// A string (any scalar, as CloudFormation reads it), or one of `functions`; with
    /// `regions`, `""` or a region's name (`Fn::GetAZs`).
    Str { functions: &'static [&'static str], regions: bool, pattern: Option<&'static str> },
    /// An integer (a number or a string of digits), or one of `functions`.
    Int { functions: &'static [&'static str], min: i64, max: Option<i64> },
    /// A list whose items are `items` (`None`: anything), or one of `functions`.
    List { functions: &'static [&'static str], items: Option<&'static Shape> },
    /// A written list of `min..=max` items, each its own shape; no function in its place.
    Tuple { min: usize, max: usize, items: &'static [Shape] },
}

/// Functions that may stand for a list's item in `Fn::Join`.
const JOIN_ITEM: &[&str] = &[
    "Fn::Base64",
    "Fn::FindInMap",
    "Fn::GetAtt",
    "Fn::GetStackOutput",
    "Fn::If",
    "Fn::ImportValue",
    "Fn::Join",
    "Fn::Select",
    "Fn::Sub",
    "Fn::Transform",
    "Ref",
];
/// Functions that may stand for `Fn::Cidr`'s values.
const CIDR_VALUE: &[&str] =
    &["Fn::FindInMap", "Fn::GetAtt", "Fn::If", "Fn::ImportValue", "Fn::Select", "Fn::Sub", "Ref"];
/// The pattern of `Fn::Cidr`'s block.
const CIDR_BLOCK: &str = r"^(([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])\.){3}([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])(\/([0-9]|[1-2][0-9]|3[0-2]))$";

/// Each function's argument.
pub(super) const SHAPES: &[(&str, Shape)] = &[
    (
        "Fn::Base64",
        Shape::Str {
            functions: &[
                "Fn::Base64",
                "Fn::Cidr",
                "Fn::Contains",
                "Fn::FindInMap",
                "Fn::GetAtt",
                "Fn::GetStackOutput",
                "Fn::If",
                "Fn::ImportValue",
                "Fn::Join",
                "Fn::Length",
                "Fn::Select",
                "Fn::Sub",
                "Fn::ToJsonString",
                "Fn::Transform",
                "Ref",
            ],
            regions: false,
            pattern: None,
        },
    ),
    (
        "Fn::ImportValue",
        Shape::Str {
            functions: &["Fn::Base64", "Fn::FindInMap", "Fn::If", "Fn::Join", "Fn::Select", "Fn::Sub", "Ref"],
            regions: false,
            pattern: None,
        },
    ),
    (
        "Fn::GetAZs",
        Shape::Str {
            functions: &["Fn::GetAtt", "Fn::If", "Fn::Join", "Fn::Select", "Fn::Sub", "Ref"],
            regions: true,
            pattern: None,
        },
    ),
    (
        "Fn::Select",
        Shape::Tuple {
            min: 2,
            max: 2,
            items: &[
                // `Fn::Length` only with the language extensions; accepted either way (silent).
                Shape::Int { functions: &["Ref", "Fn::FindInMap", "Fn::Length"], min: 0, max: None },
                Shape::List {
                    functions: &["Fn::FindInMap", "Fn::GetAtt", "Fn::GetAZs", "Fn::If", "Fn::Split", "Fn::Cidr", "Ref"],
                    items: None,
                },
            ],
        },
    ),
    (
        "Fn::Join",
        Shape::Tuple {
            min: 2,
            max: 2,
            items: &[
                Shape::Str { functions: &[], regions: false, pattern: None },
                Shape::List {
                    functions: &["Fn::Cidr", "Fn::FindInMap", "Fn::GetAtt", "Fn::GetAZs", "Fn::If", "Fn::Split", "Ref"],
                    items: Some(&Shape::Str { functions: JOIN_ITEM, regions: false, pattern: None }),
                },
            ],
        },
    ),
    (
        "Fn::Split",
        Shape::Tuple {
            min: 2,
            max: 2,
            items: &[
                Shape::Str { functions: &[], regions: false, pattern: None },
                Shape::Str {
                    functions: &[
                        "Fn::Base64",
                        "Fn::FindInMap",
                        "Fn::GetAtt",
                        "Fn::GetAZs",
                        "Fn::If",
                        "Fn::ImportValue",
                        "Fn::Join",
                        "Fn::Select",
                        "Fn::Sub",
                        "Ref",
                    ],
                    regions: false,
                    pattern: None,
                },
            ],
        },
    ),
    (
        "Fn::Cidr",
        Shape::Tuple {
            min: 2,
            max: 3,
            items: &[
                Shape::Str { functions: CIDR_VALUE, regions: false, pattern: Some(CIDR_BLOCK) },
                Shape::Int { functions: CIDR_VALUE, min: 1, max: Some(256) },
                Shape::Int { functions: CIDR_VALUE, min: 1, max: Some(128) },
            ],
        },
    ),
];

/// The shape of `function`'s argument, when it is one checked here.
pub(super) fn shape_of_function(function: &str) -> Option<&'static Shape> {
    SHAPES.iter().find(|(name, _)| *name == function).map(|(_, shape)| shape)
}

/// Checks `arg` against `shape`, reporting under `rule`; `whole` is where cfn-lint points for
/// the argument itself (the function's key, or the key holding a short form).
pub(super) fn check(function: &str, arg: &Node, shape: &Shape, whole: Pos, rule: Rule, out: &mut Out<'_>) {
    let mut problems = Vec::new();
    part(arg, shape, whole, &mut problems);
    for (pos, problem) in problems {
        out.add(rule, pos, format!("{function}: {problem}"));
    }
}

/// What a value is, in messages (no value is quoted: it could be a secret).
fn what(node: &Node) -> String {
    match &node.value {
        Value::Map(_) => match node.intrinsic() {
            Some((key, _)) => format!("{} (not allowed here)", key.name),
            None => "a map".into(),
        },
        Value::Seq(items) => format!("a list of {}", items.len()),
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
    }
}

/// Whether `node` is one of the functions allowed in its place (`Some(true)`), another function
/// or map (`Some(false)`), or not a map (`None`).
fn allowed_function(node: &Node, functions: &[&str]) -> Option<bool> {
    if !node.is_map() {
        return None;
    }
    Some(node.intrinsic().is_some_and(|(key, _)| functions.contains(&key.name.as_str())))
}

fn part(node: &Node, shape: &Shape, at: Pos, problems: &mut Vec<(Pos, String)>) {
    match shape {
        Shape::Str { functions, regions, pattern } => match (&node.value, allowed_function(node, functions)) {
            (_, Some(true)) | (Value::Null, _) => {}
            (Value::Map(_) | Value::Seq(_), _) => {
                problems.push((at, format!("{} is not of type 'string'", what(node))))
            }
            (Value::String(text), _) => {
                if *regions && !text.is_empty() && !crate::cfnlintrc::REGIONS.contains(&text.as_str()) {
                    problems.push((at, "the value is not '' nor a region's name".into()));
                }
                if let Some(pattern) = pattern
                    && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text))
                {
                    problems.push((at, "the value is not a CIDR block (such as 10.0.0.0/16)".into()));
                }
            }
            _ => {}
        },
        Shape::Int { functions, min, max } => match (&node.value, allowed_function(node, functions)) {
            (_, Some(true)) | (Value::Null | Value::Bool(_), _) => {}
            (Value::Map(_) | Value::Seq(_), _) => {
                problems.push((at, format!("{} is not of type 'integer'", what(node))));
            }
            (Value::String(text) | Value::Number(text), _) => match text.trim().parse::<i64>() {
                Ok(n) if n < *min => problems.push((at, format!("{n} is less than the minimum of {min}"))),
                Ok(n) if max.is_some_and(|m| n > m) => {
                    problems.push((at, format!("{n} is greater than the maximum of {}", max.unwrap_or_default())));
                }
                Ok(_) => {}
                // A float such as `1.0` is left alone; words are not integers.
                Err(_) if text.trim().parse::<f64>().is_ok() => {}
                Err(_) => problems.push((at, format!("{} is not of type 'integer'", what(node)))),
            },
        },
        Shape::List { functions, items } => match (&node.value, allowed_function(node, functions)) {
            (_, Some(true)) | (Value::Null, _) => {}
            (Value::Seq(list), _) => {
                if let Some(item_shape) = items {
                    for item in list {
                        part(item, item_shape, if has_mark(item) { item.pos } else { at }, problems);
                    }
                }
            }
            _ => problems.push((at, format!("{} is not of type 'array'", what(node)))),
        },
        Shape::Tuple { min, max, items } => {
            let Value::Seq(list) = &node.value else {
                if !matches!(node.value, Value::Null) {
                    problems.push((at, format!("{} is not of type 'array'", what(node))));
                }
                return;
            };
            if list.len() < *min {
                problems.push((at, format!("expected minimum item count {min}, found {}", list.len())));
                return;
            }
            if list.len() > *max {
                problems.push((at, format!("expected maximum item count {max}, found {}", list.len())));
                return;
            }
            for (index, (item, item_shape)) in list.iter().zip(items.iter()).enumerate() {
                let item_at = if has_mark(item) { item.pos } else { at };
                // `Fn::Select`'s index is at most the last of a written list.
                if index == 0
                    && let (Shape::Int { functions, min, .. }, Some(Value::Seq(choices))) =
                        (item_shape, list.get(1).map(|l| &l.value))
                    && !choices.is_empty()
                    && list.get(1).is_some_and(|l| l.intrinsic().is_none())
                {
                    let bounded = Shape::Int { functions, min: *min, max: Some(choices.len() as i64 - 1) };
                    part(item, &bounded, item_at, problems);
                    continue;
                }
                part(item, item_shape, item_at, problems);
            }
        }
    }
}
