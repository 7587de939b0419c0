//! A parsed template: every node keeps its line and column.
//!
//! Short-form intrinsic tags are stored as their long form, so rules see one
//! shape: `!Ref X` is the map `{Ref: X}`, `!GetAtt A.B` is
//! `{"Fn::GetAtt": [A, B]}`, `!Sub "…"` is `{"Fn::Sub": "…"}`, `!Condition C`
//! is `{Condition: C}`, and so on.

use std::fmt;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A node of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where it starts (for a map or list, its first key or item).
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// A node's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string (quoted, or plain and not another type).
    String(String),
    /// A list.
    Seq(Vec<Node>),
    /// A map, in document order.
    Map(Vec<(Key, Node)>),
}

/// A map key with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where it is.
    pub pos: Pos,
    /// Whether it stands for a short-form tag (`!Ref`), which has no key of its own in the text.
    pub short_form: bool,
}

impl Node {
    /// A node at `pos`.
    pub fn new(pos: Pos, value: Value) -> Node {
        Node { pos, value }
    }

    /// The value of `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries().iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The key `key` of a map, with its position.
    pub fn key(&self, key: &str) -> Option<&Key> {
        self.entries().iter().find(|(k, _)| k.name == key).map(|(k, _)| k)
    }

    /// A map's entries (empty for anything else).
    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// A list's items (empty for anything else).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The text of a string (or of a number or bool, as CloudFormation reads them as strings too).
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) | Value::Number(s) => Some(s),
            Value::Bool(true) => Some("true"),
            Value::Bool(false) => Some("false"),
            _ => None,
        }
    }

    /// Whether it is a map.
    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// The intrinsic function this node is, if it is a one-key map whose key is `Ref`,
    /// `Condition` or starts with `Fn::`: its name and argument.
    pub fn intrinsic(&self) -> Option<(&Key, &Node)> {
        match self.entries() {
            [(key, arg)] if key.name == "Ref" || key.name == "Condition" || key.name.starts_with("Fn::") => {
                Some((key, arg))
            }
            _ => None,
        }
    }

    /// Every node below this one (itself included), depth first, in document order.
    pub fn walk(&self) -> Walk<'_> {
        Walk { stack: vec![self] }
    }
}

/// The iterator of [`Node::walk`].
#[derive(Debug)]
pub struct Walk<'a> {
    stack: Vec<&'a Node>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a Node;

    fn next(&mut self) -> Option<&'a Node> {
        let node = self.stack.pop()?;
        match &node.value {
            Value::Seq(items) => self.stack.extend(items.iter().rev()),
            Value::Map(entries) => self.stack.extend(entries.iter().rev().map(|(_, v)| v)),
            _ => {}
        }
        Some(node)
    }
}
