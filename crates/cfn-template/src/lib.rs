//! The CloudFormation template reader every stage shares: validate checks
//! its tree, lambda-packager finds the functions' code in it, stack-deployer
//! finds the local artifacts it must upload. It depends on no other crate of
//! the workspace, so a deploying stage does not build the checks.
//!
//! ```
//! let root = cfn_template::parse("Resources:\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n      Role: !GetAtt Role.Arn\n")?;
//! let role = root.get("Resources").and_then(|r| r.get("Fn")).and_then(|f| f.get("Properties")).and_then(|p| p.get("Role")).unwrap();
//! let (function, argument) = role.intrinsic().unwrap();
//! assert_eq!(function.name, "Fn::GetAtt");
//! assert_eq!(argument.items()[0].as_str(), Some("Role"));
//! assert_eq!(role.pos.line, 5);
//! # Ok::<(), cfn_template::ParseError>(())
//! ```
//!
//! Reads a CloudFormation template (YAML, or JSON as YAML's flow style) into a
//! [`Node`] tree where every node keeps its line and column.
//!
//! The tree is built from `saphyr-parser`'s events with an explicit stack, so
//! nothing here recurses on the input's depth, and [`Limits`] bound the size,
//! the depth and the number of nodes (aliases included, so a "billion laughs"
//! document fails after a few million nodes rather than filling the memory;
//! the text that aliases copy is bounded by the size limit too).
//!
//! What the parser does on top of YAML:
//!
//! - Short-form intrinsic tags become their long forms, one-key maps whose key
//!   sits where the tag is: `!Ref X` is `{Ref: X}`, `!Condition C` is
//!   `{Condition: C}`, `!GetAtt A.B.C` is `{"Fn::GetAtt": [A, "B.C"]}` (split at
//!   the first dot; a list argument is kept), and `!Sub`, `!If`, `!Join`,
//!   `!Select`, `!Split`, `!FindInMap`, `!ImportValue`, `!Base64`, `!Cidr`,
//!   `!GetAZs`, `!Equals`, `!And`, `!Or`, `!Not`, `!Transform`, the `Rules`
//!   functions (`!Contains`, `!EachMemberEquals`, `!ValueOf` …) and any other
//!   `!Name` become `{"Fn::Name": argument}`, as cfn-lint reads them (an
//!   unknown function is left to the rules). A tagged scalar is always a
//!   string, as in cfn-lint (`!Ref 1` is `{Ref: "1"}`). A tag with a named
//!   handle (`!e!thing`) or an unsupported core tag (`!!python/object`) is an
//!   error.
//! - The core tags `!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`,
//!   `!!seq`, `!!binary` and `!!timestamp` are honoured; `!` forces a string.
//! - Plain scalars resolve as CloudFormation reads them: `null`, `Null`,
//!   `NULL`, `~` and nothing are null; `true`/`True`/`TRUE` and the three
//!   `false`s are booleans; integers (also `0x`, `0o`, `0b`, `_` separators)
//!   and floats (`1.5`, `.5`, `1e3`, `.inf`, `.nan`) are numbers kept as
//!   written; everything else, `yes`, `no`, `on` and `off` included, is a
//!   string, as is every quoted or block scalar.
//! - Keys are scalars and unique: a duplicate is an error at the duplicate.
//! - Anchors and aliases work (an alias is a copy of the anchored node,
//!   positions included, so they point at the anchored text). An alias can
//!   be a key if it names a scalar. Merge keys (`<<: *base`, `<<: [*a, *b]`) are
//!   supported as in YAML 1.1, as `aws cloudformation package` does: keys
//!   written in the map win over merged ones, and earlier merged maps win over
//!   later ones.
//! - One document per file; a file with nothing in it is an error.
//! - A UTF-16 surrogate pair written as two escapes in a double-quoted scalar
//!   (`"\ud83d\ude00"`, as JSON writers such as Python's `json.dumps` write
//!   characters beyond U+FFFF) is that character. The YAML reader refuses each
//!   half, so [`parse_with`] first rewrites the pair to two escapes of the same
//!   length for characters the template does not use (private-use ones when it
//!   can; positions do not move) and the builder joins them back (or, outside
//!   double quotes, where `\` escapes nothing, restores the text).
//!   A lone surrogate stays an error.
//!
//! Positions: lines and columns are 1-based, columns count characters (not
//! bytes). A map or list is where its first key or item is for the block
//! style, and at its `{` or `[` for the flow style; a tagged node's content
//! is after its tag, and the long form's key is at the tag.
//!
//! Hostile input: `crates/cfn-template/tests/parser.rs` holds property tests
//! (`proptest` is the fuzzer: arbitrary strings and bytes must never panic,
//! generated trees must read back the same), and a corpus of hostile and real
//! inputs under `fixtures/fuzz/template/`, every file of which the test
//! `corpus_files_parse_without_panicking` reads with [`parse_bytes`]. A file
//! named `ok-*` must parse and one named `err-*` must fail; add a file there
//! for any input that once misbehaved. To fuzz longer than the default 512
//! cases per property, run
//! `PROPTEST_CASES=30000 cargo test -p cfn-template --test parser`; a failure
//! prints the shrunk input, which then belongs in the corpus.

mod node;
mod parse;

pub use node::{Key, Node, Pos, Value, Walk};
pub use parse::{Limits, ParseError, parse, parse_bytes, parse_with};
