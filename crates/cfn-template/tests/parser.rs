//! The template parser: short forms, scalar types, positions, errors, hostile
//! input, and property tests that act as its fuzzer (see the corpus in
//! `fixtures/fuzz/template/`).

use std::path::{Path, PathBuf};

use cfn_template::{Limits, ParseError, parse, parse_bytes, parse_with};
use cfn_template::{Node, Pos, Value};
use proptest::prelude::*;

fn at(line: u32, column: u32) -> Pos {
    Pos { line, column }
}

fn ok(text: &str) -> Node {
    match parse(text) {
        Ok(node) => node,
        Err(error) => panic!("{text:?} should parse: {error}"),
    }
}

fn err(text: &str) -> ParseError {
    match parse(text) {
        Ok(node) => panic!("{text:?} should not parse, got {node:?}"),
        Err(error) => error,
    }
}

fn s(node: &Node) -> &str {
    match &node.value {
        Value::String(text) => text,
        other => panic!("not a string: {other:?}"),
    }
}

/// The node at a path of keys (maps) and indices (lists).
fn get<'a>(root: &'a Node, path: &str) -> &'a Node {
    path.split('/').fold(root, |node, step| match step.parse::<usize>() {
        Ok(i) if matches!(node.value, Value::Seq(_)) => &node.items()[i],
        _ => node.get(step).unwrap_or_else(|| panic!("no `{step}` in {node:?}")),
    })
}

/// A compact rendering without positions, to compare structures.
fn shape(node: &Node) -> String {
    match &node.value {
        Value::Null => "~".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("#{n}"),
        Value::String(text) => format!("{text:?}"),
        Value::Seq(items) => format!("[{}]", items.iter().map(shape).collect::<Vec<_>>().join(", ")),
        Value::Map(entries) => format!(
            "{{{}}}",
            entries.iter().map(|(k, v)| format!("{}: {}", k.name, shape(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------- short forms

#[test]
fn every_short_form_becomes_its_long_form() {
    let cases = [
        ("Ref", "Ref"),
        ("Condition", "Condition"),
        ("Sub", "Fn::Sub"),
        ("If", "Fn::If"),
        ("Join", "Fn::Join"),
        ("Select", "Fn::Select"),
        ("Split", "Fn::Split"),
        ("FindInMap", "Fn::FindInMap"),
        ("ImportValue", "Fn::ImportValue"),
        ("Base64", "Fn::Base64"),
        ("Cidr", "Fn::Cidr"),
        ("GetAZs", "Fn::GetAZs"),
        ("Equals", "Fn::Equals"),
        ("And", "Fn::And"),
        ("Or", "Fn::Or"),
        ("Not", "Fn::Not"),
        ("Transform", "Fn::Transform"),
    ];
    for (short, long) in cases {
        // On a scalar, a flow list, a block list and a flow map.
        let text = format!(
            "scalar: !{short} x\nflow: !{short} [a, b]\nblock: !{short}\n  - a\n  - b\nmap: !{short} {{k: v}}\n"
        );
        let root = ok(&text);
        for (name, shape_of_argument, line) in [
            ("scalar", "\"x\"", 1),
            ("flow", "[\"a\", \"b\"]", 2),
            ("block", "[\"a\", \"b\"]", 3),
            ("map", "{k: \"v\"}", 6),
        ] {
            let node = get(&root, name);
            let (key, argument) = node.intrinsic().unwrap_or_else(|| panic!("!{short} on {name}: {node:?}"));
            assert_eq!(key.name, long, "!{short} on {name}");
            let column = name.len() as u32 + 3;
            assert_eq!(key.pos, at(line, column), "!{short} on {name}: the key is at the tag");
            assert_eq!(node.pos, at(line, column));
            assert_eq!(shape(argument), shape_of_argument, "!{short} on {name}");
        }
    }
}

#[test]
fn tagged_argument_positions_are_after_the_tag() {
    let root =
        ok("a: !Ref   Bucket\nb: !If\n  - Cond\n  - x\nc: &anchor !Sub '${A}'\nd: !Join # comment\n  [',', [x]]\n");
    assert_eq!(get(&root, "a/Ref").pos, at(1, 11));
    assert_eq!(get(&root, "b").pos, at(2, 4));
    assert_eq!(get(&root, "b/Fn::If").pos, at(3, 3));
    assert_eq!(get(&root, "b/Fn::If/0").pos, at(3, 5));
    assert_eq!(get(&root, "c").key("Fn::Sub").unwrap().pos, at(5, 12));
    assert_eq!(get(&root, "c/Fn::Sub").pos, at(5, 17));
    assert_eq!(get(&root, "d/Fn::Join").pos, at(7, 3));
}

#[test]
fn a_tagged_scalar_is_a_string_and_an_empty_one_is_empty() {
    let root = ok("a: !Ref 123\nb: !Ref true\nc: !GetAZs\nd: !Sub ''\n");
    assert_eq!(shape(get(&root, "a")), r#"{Ref: "123"}"#);
    assert_eq!(shape(get(&root, "b")), r#"{Ref: "true"}"#);
    assert_eq!(shape(get(&root, "c")), r#"{Fn::GetAZs: ""}"#);
    assert_eq!(get(&root, "c/Fn::GetAZs").pos, at(3, 4));
    assert_eq!(shape(get(&root, "d")), r#"{Fn::Sub: ""}"#);
}

#[test]
fn nested_short_forms() {
    let root = ok("v: !If [IsProd, !GetAtt A.Arn, !Ref 'AWS::NoValue']\n");
    assert_eq!(shape(get(&root, "v")), r#"{Fn::If: ["IsProd", {Fn::GetAtt: ["A", "Arn"]}, {Ref: "AWS::NoValue"}]}"#);
    assert_eq!(get(&root, "v/Fn::If/1").key("Fn::GetAtt").unwrap().pos, at(1, 17));
    assert_eq!(get(&root, "v/Fn::If/2").key("Ref").unwrap().pos, at(1, 32));
    assert_eq!(get(&root, "v/Fn::If/2/Ref").pos, at(1, 37));
}

#[test]
fn get_att_splits_a_scalar_at_the_first_dot() {
    let root = ok("a: !GetAtt Bucket.Arn\nb: !GetAtt Stack.Outputs.Name\nc: !GetAtt \"Q.Url\"\nd: !GetAtt NoDot\n");
    assert_eq!(shape(get(&root, "a")), r#"{Fn::GetAtt: ["Bucket", "Arn"]}"#);
    assert_eq!(get(&root, "a/Fn::GetAtt/0").pos, at(1, 12));
    assert_eq!(get(&root, "a/Fn::GetAtt/1").pos, at(1, 19));
    assert_eq!(shape(get(&root, "b")), r#"{Fn::GetAtt: ["Stack", "Outputs.Name"]}"#);
    assert_eq!(get(&root, "b/Fn::GetAtt/1").pos, at(2, 18));
    assert_eq!(shape(get(&root, "c")), r#"{Fn::GetAtt: ["Q", "Url"]}"#);
    assert_eq!(get(&root, "c/Fn::GetAtt/0").pos, at(3, 12));
    assert_eq!(get(&root, "c/Fn::GetAtt/1").pos, at(3, 15));
    assert_eq!(shape(get(&root, "d")), r#"{Fn::GetAtt: ["NoDot"]}"#);
}

#[test]
fn get_att_list_is_kept() {
    let root = ok("a: !GetAtt [Bucket, Arn]\nb: !GetAtt\n  - Stack\n  - Outputs.Name\n");
    assert_eq!(shape(get(&root, "a")), r#"{Fn::GetAtt: ["Bucket", "Arn"]}"#);
    assert_eq!(get(&root, "a/Fn::GetAtt/1").pos, at(1, 21));
    assert_eq!(shape(get(&root, "b")), r#"{Fn::GetAtt: ["Stack", "Outputs.Name"]}"#);
    assert_eq!(get(&root, "b/Fn::GetAtt/1").pos, at(4, 5));
}

#[test]
fn any_other_local_tag_is_its_fn_long_form_as_in_cfn_lint() {
    let root = ok(
        "Rules:\n  R:\n    Assertions:\n      - Assert: !Contains [[a], !Ref P]\n      - Assert: !EachMemberIn [!ValueOfAll [AWS::EC2::Subnet::Id, VpcId], !RefAll AWS::EC2::VPC::Id]\n",
    );
    assert_eq!(shape(get(&root, "Rules/R/Assertions/0")), r#"{Assert: {Fn::Contains: [["a"], {Ref: "P"}]}}"#);
    assert_eq!(
        shape(get(&root, "Rules/R/Assertions/1/Assert")),
        r#"{Fn::EachMemberIn: [{Fn::ValueOfAll: ["AWS::EC2::Subnet::Id", "VpcId"]}, {Fn::RefAll: "AWS::EC2::VPC::Id"}]}"#
    );
    let root = ok("Resources:\n  A:\n    Type: !GetParam Name\n    N: !Length [a]\n    r: !ref x\n");
    assert_eq!(shape(get(&root, "Resources/A/Type")), r#"{Fn::GetParam: "Name"}"#);
    assert_eq!(get(&root, "Resources/A/Type/Fn::GetParam").pos, at(3, 21));
    assert_eq!(shape(get(&root, "Resources/A/N")), r#"{Fn::Length: ["a"]}"#);
    assert_eq!(shape(get(&root, "Resources/A/r")), r#"{Fn::ref: "x"}"#, "tags are case-sensitive: only `!Ref` is Ref");
}

#[test]
fn foreign_tags_are_errors_naming_them() {
    let error = err("a: !!python/object x\n");
    assert!(error.message.contains("!!python/object"), "{error}");
    let error = err("%TAG !e! tag:example.com,2000:\n---\na: !e!thing x\n");
    assert!(error.message.contains("tag:example.com,2000:thing"), "{error}");
    assert!(!error.empty);
}

#[test]
fn core_tags_are_honoured() {
    let root = ok(
        "a: !!str 123\nb: !!str true\nc: !!int \"42\"\nd: !!float '1.5'\ne: !!bool \"true\"\nf: !!null ''\ng: !!map {k: v}\nh: !!seq [1]\ni: ! 12\nj: !<tag:yaml.org,2002:str> 7\nk: !<!Ref> X\n",
    );
    assert_eq!(get(&root, "a").value, Value::String("123".into()));
    assert_eq!(get(&root, "b").value, Value::String("true".into()));
    assert_eq!(get(&root, "c").value, Value::Number("42".into()));
    assert_eq!(get(&root, "d").value, Value::Number("1.5".into()));
    assert_eq!(get(&root, "e").value, Value::Bool(true));
    assert_eq!(get(&root, "f").value, Value::Null);
    assert_eq!(shape(get(&root, "g")), r#"{k: "v"}"#);
    assert_eq!(shape(get(&root, "h")), "[#1]");
    assert_eq!(get(&root, "i").value, Value::String("12".into()));
    assert_eq!(get(&root, "j").value, Value::String("7".into()));
    assert_eq!(shape(get(&root, "k")), r#"{Ref: "X"}"#);
    assert!(err("a: !!int abc\n").message.contains("not a number"));
    assert!(err("a: !!bool yes\n").message.contains("not a boolean"));
    assert!(err("a: !!map x\n").message.contains("!!map"));
    assert!(err("a: !!str [x]\n").message.contains("`!!str` cannot be on a list"));
}

// ---------------------------------------------------------------- scalars

#[test]
fn plain_scalars_resolve_like_cloudformation() {
    let nulls = ["~", "null", "Null", "NULL", ""];
    let bools = [("true", true), ("True", true), ("TRUE", true), ("false", false), ("False", false), ("FALSE", false)];
    let numbers = [
        "0",
        "42",
        "-7",
        "+3",
        "007",
        "012345678901",
        "1_000",
        "0x1F",
        "0o17",
        "0b101",
        "1.5",
        "-0.25",
        ".5",
        "1.",
        "1e3",
        "1E-5",
        "2.5e+10",
        ".inf",
        "-.Inf",
        ".nan",
        "3.14_15",
    ];
    let strings = [
        "yes",
        "no",
        "Yes",
        "NO",
        "on",
        "off",
        "y",
        "n",
        "tRUE",
        "nULL",
        "2010-09-09",
        "1.2.3",
        "0x",
        "0xZ",
        "1e",
        "e3",
        ".",
        "+",
        "_1",
        "1__0x",
        "12:30",
        "10.0.0.0/16",
        "AWS::Region",
        "inf",
        "nan",
        "1 2",
        "0b102",
        ".e3",
    ];
    for text in nulls {
        assert_eq!(ok(&format!("v: {text}\n")).get("v").unwrap().value, Value::Null, "{text:?}");
    }
    for (text, b) in bools {
        assert_eq!(ok(&format!("v: {text}\n")).get("v").unwrap().value, Value::Bool(b), "{text:?}");
    }
    for text in numbers {
        assert_eq!(ok(&format!("v: {text}\n")).get("v").unwrap().value, Value::Number(text.into()), "{text:?}");
    }
    for text in strings {
        assert_eq!(ok(&format!("v: {text}\n")).get("v").unwrap().value, Value::String(text.into()), "{text:?}");
    }
}

#[test]
fn quoted_and_block_scalars_are_strings() {
    let root = ok("a: 'true'\nb: \"42\"\nc: ''\nd: \"null\"\ne: |\n  12\nf: >-\n  ~\n");
    assert_eq!(get(&root, "a").value, Value::String("true".into()));
    assert_eq!(get(&root, "b").value, Value::String("42".into()));
    assert_eq!(get(&root, "c").value, Value::String(String::new()));
    assert_eq!(get(&root, "d").value, Value::String("null".into()));
    assert_eq!(get(&root, "e").value, Value::String("12\n".into()));
    assert_eq!(get(&root, "f").value, Value::String("~".into()));
}

// ---------------------------------------------------------------- positions

#[test]
fn positions_of_keys_and_values() {
    let text = "\
AWSTemplateFormatVersion: \"2010-09-09\"
Resources:
  # a comment
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      Tags:
        - Key: team
          Value:   data
        - {Key: é, Value: ü}
";
    let root = ok(text);
    assert_eq!(root.pos, at(1, 1));
    assert_eq!(root.key("Resources").unwrap().pos, at(2, 1));
    assert_eq!(get(&root, "AWSTemplateFormatVersion").pos, at(1, 27));
    let bucket = get(&root, "Resources/Bucket");
    assert_eq!(get(&root, "Resources").key("Bucket").unwrap().pos, at(4, 3));
    assert_eq!(bucket.pos, at(5, 5), "a block map is at its first key");
    assert_eq!(bucket.key("Type").unwrap().pos, at(5, 5));
    assert_eq!(get(bucket, "Type").pos, at(5, 11));
    let tags = get(bucket, "Properties/Tags");
    assert_eq!(tags.pos, at(8, 9), "a block list is at its first `-`");
    assert_eq!(tags.items()[0].key("Value").unwrap().pos, at(9, 11));
    assert_eq!(get(tags, "0/Value").pos, at(9, 20));
    assert_eq!(tags.items()[1].pos, at(10, 11), "a flow map is at its `{{`");
    assert_eq!(tags.items()[1].key("Value").unwrap().pos, at(10, 20), "columns count characters, not bytes");
    assert_eq!(get(tags, "1/Value").pos, at(10, 27));
}

#[test]
fn json_input_with_positions() {
    let text = "{\n  \"Resources\": {\n    \"Topic\": {\"Type\": \"AWS::SNS::Topic\", \"Properties\": {\"Count\": 3, \"On\": true, \"No\": null}}\n  }\n}\n";
    let root = ok(text);
    assert_eq!(root.pos, at(1, 1));
    assert_eq!(root.key("Resources").unwrap().pos, at(2, 3));
    let topic = get(&root, "Resources/Topic");
    assert_eq!(topic.pos, at(3, 14));
    assert_eq!(topic.key("Type").unwrap().pos, at(3, 15));
    assert_eq!(get(topic, "Type").pos, at(3, 23));
    assert_eq!(get(topic, "Type").value, Value::String("AWS::SNS::Topic".into()));
    assert_eq!(get(topic, "Properties/Count").value, Value::Number("3".into()));
    assert_eq!(get(topic, "Properties/On").value, Value::Bool(true));
    assert_eq!(get(topic, "Properties/No").value, Value::Null);
    // Minified, with escapes and tabs.
    let root = ok("{\"a\":{\"b\":\"x\\u00e9\\/\\n\"},\n\t\"c\":[1,2]}");
    assert_eq!(get(&root, "a/b").value, Value::String("xé/\n".into()));
    assert_eq!(get(&root, "c/1").pos, at(2, 9));
}

#[test]
fn json_surrogate_pair_escapes_are_one_character() {
    // As Python's json.dumps writes an emoji: valid JSON, refused half by half by the YAML reader.
    let text = "{\"Description\": \"\\ud83d\\ude00 ok \\uD83C\\uDF89\", \"Resources\": {\"T\\ud83d\\ude00\": {\"Type\": \"X\"}}}";
    let root = ok(text);
    assert_eq!(s(get(&root, "Description")), "\u{1F600} ok \u{1F389}");
    let (key, topic) = &get(&root, "Resources").entries()[0];
    assert_eq!(key.name, "T\u{1F600}");
    // Positions count the escapes as written: nothing after them moved.
    let type_at = text.find("\"X\"").unwrap() as u32 + 1;
    assert_eq!(get(topic, "Type").pos, at(1, type_at));
    // Outside double quotes a backslash escapes nothing: the text stays as written.
    let root = ok(
        "A: '\\ud83d\\ude00'\nB: \\ud83d\\ude00\nC: \"\\\\ud83d\\\\ude00\"\nD: '\\uD83D\\ude00 \\uDbFf\\udFfF'\nE: \"\\uD83D\\ude00\"\n",
    );
    assert_eq!(s(get(&root, "D")), "\\uD83D\\ude00 \\uDbFf\\udFfF");
    assert_eq!(s(get(&root, "E")), "\u{1F600}");
    assert_eq!(s(get(&root, "A")), "\\ud83d\\ude00");
    assert_eq!(s(get(&root, "B")), "\\ud83d\\ude00");
    assert_eq!(s(get(&root, "C")), "\\ud83d\\ude00");
    // A template's own characters are never taken for a masked pair, whatever block they are in.
    let root = ok("A: \"\\ue83d\\uee00 \u{f83d}\u{fe00}\"\nB: \"\\ud83d\\ude00\"\n");
    assert_eq!(s(get(&root, "A")), "\u{e83d}\u{ee00} \u{f83d}\u{fe00}");
    assert_eq!(s(get(&root, "B")), "\u{1F600}");
    // Even one that uses every letter block: the pairs are masked with a digit (their `d`s all
    // of one case, as JSON writers write them).
    let root = ok(
        "A: \"\u{e800}\u{f800}\u{a800}\u{b800}\u{c800} \\ud83d\\ude00\"\nB: '\\ud83d\\ude00 \\udbff\\udfff'\nC: \"\\udbff\\udfff\"\n",
    );
    assert_eq!(s(get(&root, "A")), "\u{e800}\u{f800}\u{a800}\u{b800}\u{c800} \u{1F600}");
    assert_eq!(s(get(&root, "B")), "\\ud83d\\ude00 \\udbff\\udfff");
    assert_eq!(s(get(&root, "C")), "\u{10FFFF}");
    // A lone half is still an error.
    let error = err("{\"Description\": \"\\ud83d alone\"}");
    assert!(error.message.contains("invalid Unicode character escape"), "{error}");
}

#[test]
fn crlf_and_bom() {
    let root = ok("\u{feff}Resources:\r\n  Topic:\r\n    Type: !Ref X\r\n");
    assert_eq!(get(&root, "Resources/Topic/Type").key("Ref").unwrap().pos, at(3, 11));
    assert_eq!(get(&root, "Resources/Topic/Type/Ref").pos, at(3, 16));
}

// ---------------------------------------------------------------- keys

#[test]
fn duplicate_keys_are_errors_at_the_duplicate() {
    let error = err("Resources:\n  A:\n    Type: x\n  B: {}\n  A:\n    Type: y\n");
    assert_eq!(error.pos, at(5, 3));
    assert_eq!(error.message, "duplicate key `A` (first at 2:3)");
    let error = err("{\"a\": 1, \"b\": 2, \"a\": 3}");
    assert_eq!(error.pos, at(1, 18));
    // A large map checks through its index.
    let mut text: String = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
    text.push_str("k42: again\n");
    let error = err(&text);
    assert_eq!((error.pos, error.message.as_str()), (at(101, 1), "duplicate key `k42` (first at 43:1)"));
    // Keys compare as text, the way CloudFormation reads them.
    assert!(err("1: a\n\"1\": b\n").message.starts_with("duplicate key `1`"));
}

#[test]
fn keys_must_be_scalars() {
    assert!(err("? [a, b]\n: c\n").message.contains("a key must be a string, not a list"), "list key");
    assert!(err("{{a: 1}: c}").message.contains("not a map"), "map key");
    assert!(err("!Ref a: b\n").message.contains("not `!Ref`"), "tagged key");
    let root = ok("!!str 1: a\n2: b\n? c\n: d\n");
    assert_eq!(root.entries().iter().map(|(k, _)| k.name.as_str()).collect::<Vec<_>>(), ["1", "2", "c"]);
}

// ---------------------------------------------------------------- anchors

#[test]
fn aliases_copy_the_anchored_node() {
    let root = ok("a: &x {k: [1, !Ref R]}\nb: *x\nc: &s plain\nd: *s\n*s : key from alias\n");
    assert_eq!(shape(get(&root, "b")), shape(get(&root, "a")));
    assert_eq!(get(&root, "b/k/1/Ref").pos, at(1, 20), "a copy keeps the anchored node's positions");
    assert_eq!(get(&root, "d").value, Value::String("plain".into()));
    assert_eq!(root.key("plain").unwrap().pos, at(5, 1));
    let root = ok("a: &t !GetAtt A.B\nb: *t\n");
    assert_eq!(shape(get(&root, "b")), r#"{Fn::GetAtt: ["A", "B"]}"#);
    assert!(err("a: &a [1, *a]\n").message.contains("recursive"));
    assert!(err("a: *nowhere\n").message.contains("unknown anchor"));
}

#[test]
fn merge_keys_are_supported() {
    let root = ok(
        "base: &b {A: 1, B: 2}\nmore: &m {B: 20, C: 30}\nx:\n  <<: [*b, *m]\n  A: 10\n  D: 4\ny: {<<: *b}\n\"<<\": quoted is a plain key\n",
    );
    assert_eq!(shape(get(&root, "x")), "{A: #10, D: #4, B: #2, C: #30}");
    assert_eq!(shape(get(&root, "y")), "{A: #1, B: #2}");
    assert_eq!(get(&root, "<<").value, Value::String("quoted is a plain key".into()));
    assert!(err("a: {<<: 1}\n").message.contains("merge key"));
    assert!(err("a: {<<: [{x: 1}, 2]}\n").message.contains("merge key"));
}

#[test]
fn billion_laughs_fails_fast_and_bounded() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let aliases = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
    }
    // Bounded by count: it stops at the node budget, not after expanding 10^10 nodes.
    let error = err(&text);
    assert!(error.message.contains("expands to more than 2000000 nodes (anchors and aliases)"), "{error}");
    // With a small budget it stops far earlier.
    let limits = Limits { max_nodes: 1000, ..Limits::default() };
    let error = parse_with(&text, &limits).unwrap_err();
    assert!(error.message.contains("more than 1000 nodes"), "{error}");
    assert_eq!(error.pos.line, 3);
}

#[test]
fn aliases_of_a_long_string_are_bounded_by_bytes() {
    let long = "x".repeat(1024 * 1024);
    let text = format!("a: &a {long}\nb: [{}]\n", vec!["*a"; 100].join(", "));
    let error = err(&text);
    assert_eq!(error.message, "the template expands to more than 16777216 bytes of text (anchors and aliases)");
    assert_eq!(error.pos.line, 2);
    // A few copies are fine.
    let text = format!("a: &a {long}\nb: [*a, *a]\n");
    assert_eq!(s(get(&ok(&text), "b/1")).len(), long.len());
}

// ---------------------------------------------------------------- limits

#[test]
fn deep_flow_nesting_fails_cleanly() {
    for text in [
        "[".repeat(10_000) + &"]".repeat(10_000),
        "{a: ".repeat(10_000) + "1" + &"}".repeat(10_000),
        "[".repeat(10_000),
    ] {
        let error = err(&text);
        assert!(error.message.contains("nested deeper than"), "{error}");
    }
    // Within the reader's 255 flow levels, our own limit applies.
    let limits = Limits { max_depth: 50, ..Limits::default() };
    let error = parse_with(&("[".repeat(100) + &"]".repeat(100)), &limits).unwrap_err();
    assert_eq!((error.pos, error.message.as_str()), (at(1, 51), "the template is nested deeper than 50 levels"));
    assert!(parse_with(&("[".repeat(50) + &"]".repeat(50)), &limits).is_ok());
}

#[test]
fn deep_block_nesting_fails_cleanly() {
    let maps: String = (0..1_000).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let error = err(&maps);
    assert_eq!(error.message, "the template is nested deeper than 256 levels");
    assert_eq!(error.pos, at(257, 257));
    let lists = "- ".repeat(10_000) + "x\n";
    assert!(err(&lists).message.contains("nested deeper than 256 levels"));
    let tags = "!Not [".repeat(200) + &"]".repeat(200);
    assert!(err(&tags).message.contains("nested deeper than 256 levels"), "a short form is a level");
}

#[test]
fn a_large_template_parses_and_an_oversized_one_fails_with_its_size() {
    let mut text = String::from("AWSTemplateFormatVersion: \"2010-09-09\"\nResources:\n");
    let mut i = 0;
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(&format!(
            "  Queue{i}:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Sub \"${{AWS::StackName}}-{i}\"\n      VisibilityTimeout: 30\n      Tags:\n        - Key: owner\n          Value: !GetAtt Topic.TopicName\n"
        ));
        i += 1;
    }
    let root = ok(&text);
    assert_eq!(get(&root, "Resources").entries().len(), i);

    let limits = Limits { max_bytes: 1024 * 1024, ..Limits::default() };
    let error = parse_with(&text, &limits).unwrap_err();
    assert_eq!(error.pos, at(1, 1));
    assert_eq!(error.message, format!("the template is {} bytes, over the limit of 1048576 bytes", text.len()));
    assert_eq!(parse_bytes(text.as_bytes(), &limits).unwrap_err(), error);
}

#[test]
fn too_many_nodes() {
    let text: String = (0..2000).map(|i| format!("- {i}\n")).collect();
    let error = parse_with(&text, &Limits { max_nodes: 1000, ..Limits::default() }).unwrap_err();
    assert_eq!(error.message, "the template has more than 1000 nodes");
}

// ---------------------------------------------------------------- bytes

#[test]
fn binary_and_invalid_utf8_bytes() {
    let limits = Limits::default();
    let error = parse_bytes(b"a: 1\nb: caf\xe9\n", &limits).unwrap_err();
    assert_eq!(error.pos, at(2, 7));
    assert!(error.message.contains("not UTF-8"), "{error}");
    let error = parse_bytes("a: é\nbé: \u{0}x\n".as_bytes(), &limits).unwrap_err();
    assert_eq!(error.pos, at(2, 5));
    assert!(error.message.contains("binary"), "{error}");
    let error = parse_bytes(b"\x89PNG\r\n\x1a\n\x00\x00", &limits).unwrap_err();
    assert_eq!(error.pos, at(1, 1), "0x89 is not UTF-8");
    let error = parse_bytes(b"PK\x03\x04\x00\x00", &limits).unwrap_err();
    assert_eq!(error.pos, at(1, 5), "the NUL of a zip header");
    assert!(parse_bytes(b"Resources: {}\n", &limits).is_ok());
}

// ---------------------------------------------------------------- documents

#[test]
fn one_template_per_file() {
    let error = err("Resources: {}\n---\nResources: {}\n");
    assert_eq!(error.pos, at(2, 1));
    assert!(error.message.contains("one template per file"), "{error}");
    let error = err("a: 1\n...\nb: 2\n");
    assert_eq!(error.pos, at(3, 1));
    assert!(ok("---\nResources: {}\n...\n").is_map());
}

#[test]
fn empty_files_are_errors() {
    for text in ["", "\n\n", "# just a comment\n", "---\n", "--- # x\n...\n", "\u{feff}"] {
        let error = err(text);
        assert_eq!((error.pos, error.message.as_str(), error.empty), (at(1, 1), "the file is empty", true), "{text:?}");
    }
    assert_eq!(ok("~\n").value, Value::Null, "an explicit null is content");
}

#[test]
fn scanner_errors_have_positions_and_one_line() {
    let error = err("Resources:\n  A: [1, 2\n  B: 3\n");
    assert!(error.pos.line >= 2, "{error}");
    assert!(!error.message.contains('\n'));
    let error = err("a:\n\tb: 1\n");
    assert_eq!(error.pos.line, 2, "{error}");
    let error = err("a: \"unterminated\n");
    assert!(error.pos.line >= 1 && error.pos.column >= 1, "{error}");
    assert_eq!(error.to_string(), format!("{}: {}", error.pos, error.message));
}

// ---------------------------------------------------------------- real templates

#[test]
fn fixture_templates_parse() {
    for name in ["master", "storage", "lambdas", "frontend-hosting"] {
        let path = workspace().join(format!("fixtures/monorepo/cfn/{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let root = parse(&text).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(root.get("Resources").is_some_and(Node::is_map), "{name}");
        // Every position is inside the file.
        let lines = text.lines().count() as u32;
        for node in root.walk() {
            assert!(node.pos.line >= 1 && node.pos.line <= lines && node.pos.column >= 1, "{name}: {:?}", node.pos);
        }
    }
}

#[test]
fn corpus_files_parse_without_panicking() {
    let dir = workspace().join("fixtures/fuzz/template");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.to_string_lossy().ends_with(".expected.json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is in {}", dir.display());
    let (mut oks, mut errs) = (0, 0);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| parse_bytes(&bytes, &Limits::default()));
        let result = result.unwrap_or_else(|_| panic!("{name}: the parser panicked"));
        if name.starts_with("ok-") {
            oks += 1;
            let root = result.unwrap_or_else(|error| panic!("{name}: {error}"));
            check_expected_tree(&path, &root);
            let lines = bytes.split(|&b| b == b'\n').count() as u32;
            for node in root.walk() {
                assert!(node.pos.line >= 1 && node.pos.line <= lines && node.pos.column >= 1, "{name}: {:?}", node.pos);
            }
        } else if name.starts_with("err-") {
            errs += 1;
            let error = result.expect_err(&name);
            assert!(error.pos.line >= 1 && error.pos.column >= 1 && !error.message.is_empty(), "{name}: {error}");
        } else {
            assert_eq!(name, "README.md", "corpus files are named ok-… or err-…");
        }
    }
    assert!(oks >= 10 && errs >= 10, "{oks} ok- and {errs} err- files");
}

/// The parsed tree as JSON, maps in document order, short forms as their long forms: what
/// CloudFormation would see. A number the parser kept as written but that is not a JSON number
/// (`0x1F`, `.inf`) is `{"number": "…"}`.
fn tree_json(node: &Node, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(&b.to_string()),
        Value::Number(n) => match serde_json::from_str::<serde_json::Number>(n) {
            Ok(_) => out.push_str(n),
            Err(_) => out.push_str(&format!("{{\"number\": {}}}", serde_json::to_string(n).unwrap())),
        },
        Value::String(text) => out.push_str(&serde_json::to_string(text).unwrap()),
        Value::Seq(items) if items.is_empty() => out.push_str("[]"),
        Value::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Value::Seq(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                tree_json(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Map(entries) => {
            out.push_str("{\n");
            for (i, (key, value)) in entries.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&serde_json::to_string(&key.name).unwrap());
                out.push_str(": ");
                tree_json(value, indent + 1, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
}

/// Compares an `ok-` file's tree with `ok-NAME.expected.json` beside it; with
/// `UPDATE_EXPECTED=1` writes it instead (check the result by eye before committing).
fn check_expected_tree(path: &Path, root: &Node) {
    let mut got = String::new();
    tree_json(root, 0, &mut got);
    got.push('\n');
    serde_json::from_str::<serde_json::Value>(&got).expect("the rendering is JSON");
    let stem = path.file_stem().unwrap().to_string_lossy();
    let expected_path = path.with_file_name(format!("{stem}.expected.json"));
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; to write it: UPDATE_EXPECTED=1 cargo test -p cfn-template --test parser corpus, then check it by eye",
            expected_path.display()
        )
    });
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| got.lines().count().min(want.lines().count()) + 1, |i| i + 1);
        panic!(
            "{}: the parsed tree differs from {} at line {line}:\n  parsed:   {:?}\n  expected: {:?}\nif the parser is right, regenerate with UPDATE_EXPECTED=1 cargo test -p cfn-template --test parser corpus and check the change by eye",
            path.display(),
            expected_path.display(),
            got.lines().nth(line - 1).unwrap_or(""),
            want.lines().nth(line - 1).unwrap_or(""),
        );
    }
}

// ---------------------------------------------------------------- property tests (the fuzzer)

/// A generated tree of plain strings.
#[derive(Debug, Clone)]
enum Tree {
    Str(String),
    List(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

/// A string that stays a string as a plain scalar.
fn plain() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_./-]{0,8}".prop_filter("resolves to null or a bool", |text| {
        !matches!(text.as_str(), "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
    })
}

fn tree(leaf: BoxedStrategy<String>) -> impl Strategy<Value = Tree> {
    let key = leaf.clone();
    leaf.prop_map(Tree::Str).prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                let mut seen = std::collections::HashSet::new();
                Tree::Map(entries.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect())
            }),
        ]
    })
}

/// Block-style YAML for a tree, the value written after `key:` or `-`.
fn write_block(tree: &Tree, indent: usize, out: &mut String) {
    match tree {
        Tree::Str(text) => {
            out.push(' ');
            out.push_str(text);
            out.push('\n');
        }
        Tree::List(items) if items.is_empty() => out.push_str(" []\n"),
        Tree::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Tree::List(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                write_block(item, indent + 2, out);
            }
        }
        Tree::Map(entries) => {
            out.push('\n');
            for (key, value) in entries {
                out.push_str(&" ".repeat(indent));
                out.push_str(key);
                out.push(':');
                write_block(value, indent + 2, out);
            }
        }
    }
}

fn to_yaml(tree: &Tree) -> String {
    let mut out = String::new();
    write_block(tree, 0, &mut out);
    // The root has no key before it: drop the leading space or line break.
    out.split_off(1)
}

fn to_json(tree: &Tree, out: &mut String) {
    let quote = |text: &str| serde_json::to_string(text).unwrap();
    match tree {
        Tree::Str(text) => out.push_str(&quote(text)),
        Tree::List(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                to_json(item, out);
            }
            out.push(']');
        }
        Tree::Map(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&quote(key));
                out.push_str(": ");
                to_json(value, out);
            }
            out.push('}');
        }
    }
}

/// JSON as Python's `json.dumps` writes it by default: every non-ASCII character escaped, those
/// beyond U+FFFF as surrogate pairs.
fn to_ascii_json(tree: &Tree) -> String {
    let mut text = String::new();
    to_json(tree, &mut text);
    text.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                c.encode_utf16(&mut [0; 2]).iter().map(|unit| format!("\\u{unit:04x}")).collect()
            }
        })
        .collect()
}

fn tree_shape(tree: &Tree) -> String {
    match tree {
        Tree::Str(text) => format!("{text:?}"),
        Tree::List(items) => format!("[{}]", items.iter().map(tree_shape).collect::<Vec<_>>().join(", ")),
        Tree::Map(entries) => format!(
            "{{{}}}",
            entries.iter().map(|(k, v)| format!("{k}: {}", tree_shape(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A character likely to matter to YAML, or a letter.
fn yamlish() -> impl Strategy<Value = String> {
    "([-\\[\\]{}:,?!&*#|>'\"%@`<= \t\r\n~.0-9]|[a-zA-Z]|!Ref |!GetAtt |&a |\\*a|<<|---|\\.\\.\\.|\\\\u|\u{feff}|é){0,60}"
}

/// Random edits of a real template: (where, what) pairs.
fn mutations() -> impl Strategy<Value = Vec<(prop::sample::Index, String)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), "[-\\[\\]{}:,?!&*#|>'\"%\t\n ]{0,3}|!Ref|&x|\\*x|<<: \\*x|\u{0}|\u{85}"),
        1..8,
    )
}

/// What every parse must answer, whatever the input: an error with a position and a one-line
/// message, or a tree whose every node has a position.
fn check_answer(result: Result<Node, ParseError>) -> Result<(), TestCaseError> {
    match result {
        Err(error) => {
            prop_assert!(error.pos.line >= 1 && error.pos.column >= 1, "{:?}", error);
            prop_assert!(!error.message.is_empty() && !error.message.contains('\n'), "{:?}", error);
        }
        Ok(root) => {
            for node in root.walk() {
                prop_assert!(node.pos.line >= 1 && node.pos.column >= 1, "{:?}", node.pos);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(512), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic_and_answer_with_positions(text in any::<String>()) {
        check_answer(parse(&text))?;
    }

    #[test]
    fn yaml_like_strings_never_panic(text in yamlish()) {
        if let Err(error) = parse(&text) {
            prop_assert!(error.pos.line >= 1 && error.pos.column >= 1);
            prop_assert!(!error.message.contains('\n'));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_answer_with_positions(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_answer(parse_bytes(&bytes, &Limits::default()))?;
    }

    #[test]
    fn mutated_templates_never_panic_and_answer_with_positions(edits in mutations()) {
        let mut text = std::fs::read_to_string(workspace().join("fixtures/monorepo/cfn/master.yaml")).unwrap();
        for (index, insert) in edits {
            let mut at = index.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            // Replace a character or two with the insertion.
            let end = text[at..].char_indices().nth(insert.len() % 3).map_or(text.len(), |(i, _)| at + i);
            text.replace_range(at..end, &insert);
        }
        check_answer(parse_with(&text, &Limits { max_nodes: 100_000, ..Limits::default() }))?;
    }

    #[test]
    fn generated_yaml_reads_back_the_same(tree in tree(plain().boxed())) {
        let text = to_yaml(&tree);
        let node = parse(&text).map_err(|error| TestCaseError::fail(format!("{error}\n{text}")))?;
        prop_assert_eq!(shape(&node), tree_shape(&tree), "{}", text);
        for node in node.walk() {
            prop_assert!(node.pos.line >= 1 && node.pos.column >= 1);
        }
    }

    #[test]
    fn generated_json_reads_back_the_same(tree in tree("[^\u{0}-\u{1f}\u{7f}-\u{9f}\u{feff}]{0,8}|[\u{1}-\u{1f}\"\\\\/]{1,3}".boxed())) {
        let mut text = String::new();
        to_json(&tree, &mut text);
        let node = parse(&text).map_err(|error| TestCaseError::fail(format!("{error}\n{text}")))?;
        // JSON strings are quoted: they stay strings whatever they hold.
        prop_assert_eq!(shape(&node), tree_shape(&tree), "{}", text);
    }

    #[test]
    fn generated_ascii_json_reads_back_the_same(tree in tree("[^\u{0}-\u{1f}\u{7f}-\u{9f}\u{feff}]{0,8}|[\u{1f600}-\u{1f64f}\u{e800}-\u{efff}\u{10000}-\u{10ffff}]{1,4}".boxed())) {
        let text = to_ascii_json(&tree);
        let node = parse(&text).map_err(|error| TestCaseError::fail(format!("{error}\n{text}")))?;
        prop_assert_eq!(shape(&node), tree_shape(&tree), "{}", text);
    }
}
