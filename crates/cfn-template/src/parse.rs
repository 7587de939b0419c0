use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, Tag};

use crate::node::{Key, Node, Pos, Value};

/// Why a template could not be read, with the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ParseError {
    /// Where the problem is (1-based line and column).
    pub pos: Pos,
    /// What is wrong, on one line.
    pub message: String,
    /// Whether the file has no content at all (nothing, comments, an empty document): a
    /// readable template without sections, which cfn-lint reports as `Resources` missing.
    pub empty: bool,
}

impl ParseError {
    fn at(pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError { pos, message: message.into(), empty: false }
    }
}

/// Limits that keep hostile input bounded in time and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest input read, in bytes (CloudFormation itself takes 1 MB from S3).
    pub max_bytes: usize,
    /// How deeply maps and lists may nest (a short-form tag's long form counts
    /// as a level). Flow collections (`[`, `{`) stop at 255 levels whatever
    /// this says: the YAML reader counts them in a byte.
    pub max_depth: usize,
    /// How many nodes the tree may have, counting every copy an alias makes
    /// and the copy kept of each anchored node. (The text those copies hold
    /// is bounded by `max_bytes`.)
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: 16 * 1024 * 1024, max_depth: 256, max_nodes: 2_000_000 }
    }
}

/// Parses a YAML or JSON template (JSON is read as YAML's flow style) with the default [`Limits`].
pub fn parse(text: &str) -> Result<Node, ParseError> {
    parse_with(text, &Limits::default())
}

/// Parses a YAML or JSON template within `limits`.
pub fn parse_with(text: &str, limits: &Limits) -> Result<Node, ParseError> {
    check_size(text.len(), limits)?;
    match surrogates::mask(text) {
        Some((masked, mask)) => Builder::new(&masked, limits, Some(mask)).run(),
        None => Builder::new(text, limits, None).run(),
    }
}

/// Surrogate pairs written as escapes (`\ud83d\ude00`), which the YAML reader refuses one half
/// at a time.
///
/// [`mask`] rewrites each pair's first hex digits `D`/`d` to another hex digit `X`, so the pair
/// becomes two escapes of the same length for characters of the block U+X800–U+XFFF (high half
/// U+X800–U+XBFF, low half U+XC00–U+XFFF); [`unmask`] joins such a pair back into one character
/// in a double-quoted scalar, and restores the text of any other scalar. `X` is the first of
/// `E`, `F`, `A`, `B`, `C`, `0`…`9` whose block the text does not use, neither as characters nor
/// as anything like their escapes, so nothing of the template's own is taken for a masked pair;
/// a text that uses all of them is left alone (and its pairs refused as before).
mod surrogates {
    use std::borrow::Cow;

    use saphyr_parser::ScalarStyle;

    /// The hex digits a pair's `D` may become, in order of preference (the first is the
    /// private-use area). A letter keeps the case of the `D`; a digit cannot, so it is used only
    /// when every masked `D` is of one case.
    const DIGITS: &[u8] = b"EFABC0123456789";

    /// How the pairs are masked: their `D`s became `to`, a block of 2048 code points the text
    /// does not use; `upper` is the case they were.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Mask {
        to: u8,
        upper: bool,
    }

    impl Mask {
        fn block(self) -> u32 {
            let digit = if self.to.is_ascii_digit() { self.to - b'0' } else { self.to - b'A' + 10 };
            u32::from(digit) << 12
        }
        fn high(self) -> std::ops::RangeInclusive<u32> {
            self.block() + 0x800..=self.block() + 0xBFF
        }
        fn low(self) -> std::ops::RangeInclusive<u32> {
            self.block() + 0xC00..=self.block() + 0xFFF
        }
    }

    /// Where escaped surrogate-like pairs with first digit `first` start (at the `\` of an escape:
    /// one after an odd run of backslashes): `\u{first}[89AB]xx\u{first}[CDEF]xx`.
    fn pairs(text: &str, first: u8) -> Vec<usize> {
        let bytes = text.as_bytes();
        let half = |at: usize, second: std::ops::RangeInclusive<u8>| {
            bytes.get(at..at + 6).is_some_and(|h| {
                h[0] == b'\\'
                    && h[1] == b'u'
                    && h[2].eq_ignore_ascii_case(&first)
                    && second.contains(&h[3].to_ascii_uppercase())
                    && h[4].is_ascii_hexdigit()
                    && h[5].is_ascii_hexdigit()
            })
        };
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(next) = bytes[at..].iter().position(|&b| b == b'\\') {
            let start = at + next;
            let run = bytes[start..].iter().take_while(|&&b| b == b'\\').count();
            let escape = start + run - 1;
            if run % 2 == 1 && half(escape, b'8'..=b'B') && half(escape + 6, b'C'..=b'F') {
                found.push(escape);
                at = escape + 12;
            } else {
                at = start + run;
            }
        }
        found
    }

    /// Whether the text uses the block of `mask`: its characters, or anything like their escapes.
    fn uses(text: &str, mask: Mask) -> bool {
        let block = mask.block() + 0x800..=mask.block() + 0xFFF;
        let digit = mask.to;
        text.chars().any(|c| block.contains(&u32::from(c)))
            || text.as_bytes().windows(3).any(|w| {
                w[0] == b'u' && w[1].eq_ignore_ascii_case(&digit) && b"89ABCDEF".contains(&w[2].to_ascii_uppercase())
            })
            || text.as_bytes().windows(7).any(|w| {
                w[0] == b'U'
                    && &w[1..5] == b"0000"
                    && w[5].eq_ignore_ascii_case(&digit)
                    && b"89ABCDEF".contains(&w[6].to_ascii_uppercase())
            })
    }

    /// Rewrites the first digit of both halves of the pairs at `found` to `to`: a letter in the
    /// case the digit was, anything else as `upper` says.
    fn rewrite(bytes: &mut [u8], found: &[usize], to: u8, upper: bool) {
        for &at in found {
            for digit in [at + 2, at + 8] {
                let keep_upper =
                    if bytes[digit].is_ascii_alphabetic() { bytes[digit].is_ascii_uppercase() } else { upper };
                bytes[digit] = if keep_upper { to } else { to.to_ascii_lowercase() };
            }
        }
    }

    /// The text with every escaped surrogate pair masked, or `None` when there is none (or the
    /// text uses every block a pair could be masked as).
    pub(super) fn mask(text: &str) -> Option<(String, Mask)> {
        if !text.contains("\\u") {
            return None;
        }
        let found = pairs(text, b'D');
        let bytes = text.as_bytes();
        let cases: Vec<bool> = found.iter().flat_map(|&at| [bytes[at + 2], bytes[at + 8]]).map(|b| b == b'D').collect();
        let upper = *cases.first()?;
        let one_case = cases.iter().all(|&c| c == upper);
        let mask = DIGITS
            .iter()
            .map(|&to| Mask { to, upper })
            .filter(|mask| mask.to.is_ascii_alphabetic() || one_case)
            .find(|&mask| !uses(text, mask))?;
        let mut bytes = bytes.to_vec();
        rewrite(&mut bytes, &found, mask.to, upper);
        // Only ASCII hex digits changed.
        String::from_utf8(bytes).ok().map(|text| (text, mask))
    }

    /// A scalar of a masked text as written: a masked pair joined into its character in a
    /// double-quoted scalar, the masked escapes' text restored elsewhere.
    pub(super) fn unmask(value: Cow<'_, str>, style: ScalarStyle, mask: Mask) -> Cow<'_, str> {
        if style == ScalarStyle::DoubleQuoted {
            let (high, low) = (mask.high(), mask.low());
            if !value.chars().any(|c| high.contains(&u32::from(c))) {
                return value;
            }
            let mut out = String::with_capacity(value.len());
            let mut chars = value.chars().peekable();
            while let Some(c) = chars.next() {
                let first = u32::from(c);
                if high.contains(&first)
                    && let Some(&next) = chars.peek()
                    && low.contains(&u32::from(next))
                {
                    chars.next();
                    let code = 0x10000 + ((first - high.start()) << 10) + (u32::from(next) - low.start());
                    out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                } else {
                    out.push(c);
                }
            }
            return Cow::Owned(out);
        }
        let found = pairs(&value, mask.to);
        if found.is_empty() {
            return value;
        }
        let mut bytes = value.into_owned().into_bytes();
        rewrite(&mut bytes, &found, b'D', mask.upper);
        Cow::Owned(String::from_utf8(bytes).unwrap_or_default())
    }
}

/// Reads bytes: invalid UTF-8 or a NUL byte (binary file) is a ParseError with the position of the first bad byte.
pub fn parse_bytes(bytes: &[u8], limits: &Limits) -> Result<Node, ParseError> {
    check_size(bytes.len(), limits)?;
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let at = error.valid_up_to();
            let byte = bytes.get(at).copied().unwrap_or_default();
            return Err(ParseError::at(
                byte_pos(bytes, at),
                format!("the file is not UTF-8 text (byte 0x{byte:02x} at offset {at})"),
            ));
        }
    };
    if let Some(at) = text.bytes().position(|b| b == 0) {
        return Err(ParseError::at(byte_pos(bytes, at), format!("the file is binary (a NUL byte at offset {at})")));
    }
    parse_with(text, limits)
}

fn check_size(len: usize, limits: &Limits) -> Result<(), ParseError> {
    if len > limits.max_bytes {
        return Err(ParseError::at(
            Pos { line: 1, column: 1 },
            format!("the template is {len} bytes, over the limit of {} bytes", limits.max_bytes),
        ));
    }
    Ok(())
}

/// The position of byte `at`, where `bytes[..at]` is UTF-8.
fn byte_pos(bytes: &[u8], at: usize) -> Pos {
    let before = bytes.get(..at).unwrap_or(bytes);
    let mut line = 1usize;
    let mut column = 1usize;
    let mut previous = 0u8;
    for &b in before {
        match b {
            b'\n' if previous == b'\r' => {}
            b'\n' | b'\r' => {
                line += 1;
                column = 1;
            }
            // UTF-8 continuation bytes are part of the character before them.
            0x80..=0xbf => {}
            _ => column += 1,
        }
        previous = b;
    }
    pos(line, column)
}

fn pos(line: usize, column: usize) -> Pos {
    Pos { line: to_u32(line.max(1)), column: to_u32(column.max(1)) }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A marker's position (saphyr's lines are 1-based, its columns 0-based).
fn marker_pos(marker: Marker) -> Pos {
    pos(marker.line(), marker.col().saturating_add(1))
}

fn scan_error(error: &ScanError) -> ParseError {
    let mut message = error.info().split_whitespace().collect::<Vec<_>>().join(" ");
    if message == "recursion limit exceeded" {
        // saphyr counts flow levels in a `u8`.
        message = "the template is nested deeper than 255 levels of `[` and `{` (the YAML reader's limit)".to_owned();
    }
    ParseError::at(marker_pos(*error.marker()), message)
}

fn depth_error(at: Pos, limits: &Limits) -> ParseError {
    ParseError::at(at, format!("the template is nested deeper than {} levels", limits.max_depth))
}

/// What a tag asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind<'t> {
    /// No tag.
    None,
    /// `!`: a string, for a scalar.
    NonSpecific,
    /// A short-form intrinsic function: the tag's name (`Ref`, `GetAtt`, `Contains` …).
    Intrinsic(&'t str),
    /// A YAML core tag.
    Core(Core),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Core {
    Str,
    Int,
    Float,
    Bool,
    Null,
    Map,
    Seq,
}

/// The long form of a short-form tag `!Name`: `Ref` and `Condition` stay as they are, any other
/// name is `Fn::Name`, as cfn-lint reads it (`!Contains`, `!ValueOf`, `!Length` and names it
/// does not know alike).
fn long_form(short: &str) -> String {
    match short {
        "Ref" | "Condition" => short.to_owned(),
        _ => format!("Fn::{short}"),
    }
}

const CORE_PREFIX: &str = "tag:yaml.org,2002:";

fn classify(tag: Option<&Tag>, at: Pos) -> Result<TagKind<'_>, ParseError> {
    let Some(tag) = tag else { return Ok(TagKind::None) };
    let core = if tag.handle == CORE_PREFIX {
        Some(tag.suffix.as_str())
    } else if tag.handle.is_empty() {
        tag.suffix.strip_prefix(CORE_PREFIX)
    } else {
        None
    };
    if let Some(name) = core {
        let kind = match name {
            "str" | "binary" | "timestamp" => Core::Str,
            "int" => Core::Int,
            "float" => Core::Float,
            "bool" => Core::Bool,
            "null" => Core::Null,
            "map" => Core::Map,
            "seq" => Core::Seq,
            _ => return Err(ParseError::at(at, format!("unsupported tag `!!{name}`"))),
        };
        return Ok(TagKind::Core(kind));
    }
    let local = if tag.handle == "!" {
        Some(tag.suffix.as_str())
    } else if tag.handle.is_empty() {
        if tag.suffix == "!" {
            return Ok(TagKind::NonSpecific);
        }
        tag.suffix.strip_prefix('!')
    } else {
        None
    };
    if let Some(name) = local
        && !name.is_empty()
    {
        return Ok(TagKind::Intrinsic(name));
    }
    Err(ParseError::at(at, format!("unknown tag `{}` (not a CloudFormation short form)", shown(tag))))
}

/// A tag as it is written.
fn shown(tag: &Tag) -> String {
    if tag.handle == CORE_PREFIX {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else if tag.handle.is_empty() {
        if tag.suffix.starts_with('!') { tag.suffix.clone() } else { format!("!<{}>", tag.suffix) }
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// Resolves a plain scalar as CloudFormation (YAML 1.1, without yes/no/on/off) does.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ if is_number(text) => Value::Number(text.to_owned()),
        _ => Value::String(text.to_owned()),
    }
}

/// Whether a plain scalar is an integer or a float.
fn is_number(text: &str) -> bool {
    fn digits(s: &str, ok: impl Fn(u8) -> bool) -> bool {
        !s.is_empty() && !s.starts_with('_') && s.bytes().all(|b| ok(b) || b == b'_') && s.bytes().any(ok)
    }
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    if let Some(hex) = body.strip_prefix("0x") {
        return digits(hex, |b| b.is_ascii_hexdigit());
    }
    if let Some(octal) = body.strip_prefix("0o") {
        return digits(octal, |b| (b'0'..=b'7').contains(&b));
    }
    if let Some(binary) = body.strip_prefix("0b") {
        return digits(binary, |b| b == b'0' || b == b'1');
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    if let Some(exponent) = exponent {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if exponent.is_empty() || !exponent.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let decimal = |s: &str| s.is_empty() || digits(s, |b| b.is_ascii_digit());
    match mantissa.split_once('.') {
        None => digits(mantissa, |b| b.is_ascii_digit()),
        Some((whole, fraction)) => {
            decimal(whole)
                && decimal(fraction)
                && !whole.starts_with('_')
                && (whole.bytes().any(|b| b.is_ascii_digit()) || fraction.bytes().any(|b| b.is_ascii_digit()))
        }
    }
}

/// Maps saphyr's character indices to byte offsets, moving a cursor (events
/// come in document order, so it mostly moves forward).
struct Locator<'t> {
    text: &'t str,
    ascii: bool,
    chars: usize,
    byte: usize,
}

impl<'t> Locator<'t> {
    fn new(text: &'t str) -> Locator<'t> {
        Locator { text, ascii: text.is_ascii(), chars: 0, byte: 0 }
    }

    fn byte(&mut self, index: usize) -> usize {
        if self.ascii {
            return index.min(self.text.len());
        }
        while self.chars < index {
            let Some(c) = self.text.get(self.byte..).and_then(|s| s.chars().next()) else { break };
            self.byte += c.len_utf8();
            self.chars += 1;
        }
        while self.chars > index {
            let Some(c) = self.text.get(..self.byte).and_then(|s| s.chars().next_back()) else { break };
            self.byte -= c.len_utf8();
            self.chars -= 1;
        }
        self.byte
    }
}

/// An anchored node, kept for its aliases.
struct Anchor {
    node: Node,
    /// How many nodes a copy adds.
    size: usize,
    /// How many levels it has (1 for a scalar).
    height: usize,
    /// How many bytes of text (keys and scalars) a copy adds.
    bytes: usize,
    /// The text, for an anchored scalar (so an alias can be a key).
    key: Option<String>,
}

/// What an open map expects next.
enum Pending {
    /// A key.
    Key,
    /// The value of this key.
    Value(Key),
    /// The value of a merge key `<<` at this position.
    Merge(Pos),
}

enum Body {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Key, Node)>,
        /// Key name to entry index, built once the map is large.
        index: Option<HashMap<String, usize>>,
        pending: Pending,
        merges: Vec<(Pos, Node)>,
    },
}

/// An open map or list.
struct Frame {
    pos: Pos,
    depth: usize,
    /// The long form's key and the tag's position, for a short-form tag.
    wrap: Option<(String, Pos)>,
    anchor: usize,
    body: Body,
}

/// Maps with more entries than this find duplicates through a hash map.
const LINEAR_KEYS: usize = 16;

struct Builder<'t, 'l> {
    text: &'t str,
    limits: &'l Limits,
    locator: Locator<'t>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchor>,
    nodes: usize,
    /// Bytes of text copied for anchors and aliases.
    copied: usize,
    /// Whether anchors or aliases added nodes (for the error message).
    expanded: bool,
    root: Option<Node>,
    /// Whether the document was nothing at all (an empty plain scalar).
    root_empty: bool,
    documents: usize,
    /// Whether the text's surrogate pairs were masked ([`surrogates`]).
    masked: Option<surrogates::Mask>,
}

impl<'t, 'l> Builder<'t, 'l> {
    fn new(text: &'t str, limits: &'l Limits, masked: Option<surrogates::Mask>) -> Builder<'t, 'l> {
        Builder {
            text,
            limits,
            locator: Locator::new(text),
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            copied: 0,
            expanded: false,
            root: None,
            root_empty: false,
            documents: 0,
            masked,
        }
    }

    fn run(mut self) -> Result<Node, ParseError> {
        let mut parser = Parser::new_from_str(self.text);
        while let Some(event) = parser.next_event() {
            let (event, span) = event.map_err(|error| scan_error(&error))?;
            match event {
                Event::StreamEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart(_) => {
                    if self.documents > 0 {
                        return Err(ParseError::at(
                            marker_pos(span.start),
                            "a second document starts here: one template per file",
                        ));
                    }
                    self.documents += 1;
                }
                Event::Scalar(value, style, anchor, tag) => self.scalar(value, style, anchor, tag.as_deref(), span)?,
                Event::SequenceStart(anchor, tag) => self.open(false, anchor, tag.as_deref(), span)?,
                Event::MappingStart(anchor, tag) => self.open(true, anchor, tag.as_deref(), span)?,
                Event::SequenceEnd | Event::MappingEnd => self.close(span)?,
                Event::Alias(id) => self.alias(id, span)?,
            }
        }
        match self.root {
            Some(root) if !self.root_empty => Ok(root),
            _ => Err(ParseError { empty: true, ..ParseError::at(Pos { line: 1, column: 1 }, "the file is empty") }),
        }
    }

    /// Counts `n` more nodes.
    fn count(&mut self, n: usize, at: Pos) -> Result<(), ParseError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            let message = if self.expanded {
                format!("the template expands to more than {} nodes (anchors and aliases)", self.limits.max_nodes)
            } else {
                format!("the template has more than {} nodes", self.limits.max_nodes)
            };
            return Err(ParseError::at(at, message));
        }
        Ok(())
    }

    /// Counts `n` more bytes of text copied for anchors and aliases: a long
    /// string aliased many times is few nodes but much memory.
    fn copy(&mut self, n: usize, at: Pos) -> Result<(), ParseError> {
        self.copied = self.copied.saturating_add(n);
        if self.copied > self.limits.max_bytes {
            return Err(ParseError::at(
                at,
                format!(
                    "the template expands to more than {} bytes of text (anchors and aliases)",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(())
    }

    fn depth(&self) -> usize {
        self.stack.last().map_or(0, |frame| frame.depth)
    }

    fn check_depth(&self, depth: usize, at: Pos) -> Result<(), ParseError> {
        if depth > self.limits.max_depth {
            return Err(depth_error(at, self.limits));
        }
        Ok(())
    }

    /// Whether the open map waits for a key.
    fn wants_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { body: Body::Map { pending: Pending::Key, .. }, .. }))
    }

    /// The position of a tag, if the node has one, and of the node's content,
    /// skipping its properties (tag and anchor) from `start`.
    fn properties(&mut self, start: Marker) -> (Option<Pos>, Pos) {
        let bytes = self.text.as_bytes();
        let mut at = self.locator.byte(start.index());
        let mut line = start.line();
        let mut column = start.col();
        let mut tag = None;
        loop {
            match bytes.get(at) {
                Some(b'!') => tag = Some(pos(line, column + 1)),
                Some(b'&') => {}
                _ => break,
            }
            let verbatim = bytes.get(at + 1) == Some(&b'<');
            let Some(rest) = self.text.get(at..) else { break };
            for c in rest.chars() {
                if c.is_whitespace() || (!verbatim && matches!(c, ',' | '[' | ']' | '{' | '}')) {
                    break;
                }
                at += c.len_utf8();
                column += 1;
                if verbatim && c == '>' {
                    break;
                }
            }
            // Separation: spaces, line breaks and comments.
            while let Some(&b) = bytes.get(at) {
                match b {
                    b' ' | b'\t' => column += 1,
                    b'\n' => {
                        line += 1;
                        column = 0;
                    }
                    b'\r' => {
                        if bytes.get(at + 1) == Some(&b'\n') {
                            at += 1;
                        }
                        line += 1;
                        column = 0;
                    }
                    b'#' => {
                        at += bytes[at..].iter().position(|&c| c == b'\n' || c == b'\r').unwrap_or(bytes.len() - at);
                        continue;
                    }
                    _ => break,
                }
                at += 1;
            }
        }
        (tag, pos(line, column + 1))
    }

    fn scalar(
        &mut self,
        value: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<(), ParseError> {
        let value = match self.masked {
            Some(mask) => surrogates::unmask(value, style, mask),
            None => value,
        };
        let has_properties = anchor > 0 || tag.is_some();
        let empty = value.is_empty() && style == ScalarStyle::Plain;
        let (tag_pos, mut at) =
            if has_properties { self.properties(span.start) } else { (None, marker_pos(span.start)) };
        if empty {
            // Nothing follows the properties: the node is where they are.
            at = marker_pos(span.start);
        }
        let kind = classify(tag, tag_pos.unwrap_or(at))?;

        if self.wants_key() {
            if let (Some(tag), TagKind::Intrinsic(_) | TagKind::Core(Core::Map | Core::Seq)) = (tag, kind) {
                return Err(ParseError::at(
                    tag_pos.unwrap_or(at),
                    format!("a key must be a string, not `{}`", shown(tag)),
                ));
            }
            let merge = style == ScalarStyle::Plain && tag.is_none() && value == "<<";
            if anchor > 0 {
                let node = Node::new(at, scalar_value(&value, style, kind, at)?);
                self.store_anchor(anchor, node, Some(value.to_string()), at)?;
            }
            return self.key(Key { name: value.into_owned(), pos: at, short_form: false }, merge);
        }

        let leaf_depth = self.depth()
            + match kind {
                TagKind::Intrinsic("GetAtt") => 3,
                TagKind::Intrinsic(_) => 2,
                _ => 1,
            };
        self.check_depth(leaf_depth, at)?;
        let node = match kind {
            TagKind::Intrinsic(name) => {
                let argument = if name == "GetAtt" {
                    get_att(&value, style, at, span.end)
                } else {
                    Node::new(at, Value::String(value.to_string()))
                };
                let key_pos = tag_pos.unwrap_or(at);
                self.count(2 + argument.items().len(), key_pos)?;
                Node::new(
                    key_pos,
                    Value::Map(vec![(Key { name: long_form(name), pos: key_pos, short_form: true }, argument)]),
                )
            }
            TagKind::Core(_) | TagKind::None | TagKind::NonSpecific => {
                self.count(1, at)?;
                Node::new(at, scalar_value(&value, style, kind, at)?)
            }
        };
        if anchor > 0 {
            let key = (!matches!(kind, TagKind::Intrinsic(_))).then(|| value.to_string());
            self.store_anchor(anchor, node.clone(), key, at)?;
        }
        if self.stack.is_empty() && empty && !has_properties {
            self.root_empty = true;
        }
        self.deliver(node)
    }

    /// Takes a key for the open map.
    fn key(&mut self, key: Key, merge: bool) -> Result<(), ParseError> {
        let Some(Frame { body: Body::Map { entries, index, pending, .. }, .. }) = self.stack.last_mut() else {
            return Ok(());
        };
        if merge {
            *pending = Pending::Merge(key.pos);
            return Ok(());
        }
        let first = match index {
            Some(index) => index.get(&key.name).map(|&i| &entries[i].0),
            None => entries.iter().map(|(k, _)| k).find(|k| k.name == key.name),
        };
        if let Some(first) = first {
            return Err(ParseError::at(key.pos, format!("duplicate key `{}` (first at {})", key.name, first.pos)));
        }
        *pending = Pending::Value(key);
        Ok(())
    }

    fn open(&mut self, map: bool, anchor: usize, tag: Option<&Tag>, span: Span) -> Result<(), ParseError> {
        let (tag_pos, at) =
            if anchor > 0 || tag.is_some() { self.properties(span.start) } else { (None, marker_pos(span.start)) };
        let what = if map { "map" } else { "list" };
        if self.wants_key() {
            return Err(ParseError::at(at, format!("a key must be a string, not a {what}")));
        }
        let kind = classify(tag, tag_pos.unwrap_or(at))?;
        let wrap = match kind {
            TagKind::Intrinsic(name) => Some((long_form(name), tag_pos.unwrap_or(at))),
            TagKind::None | TagKind::NonSpecific => None,
            TagKind::Core(Core::Map) if map => None,
            TagKind::Core(Core::Seq) if !map => None,
            TagKind::Core(_) => {
                let name = tag.map(shown).unwrap_or_default();
                return Err(ParseError::at(tag_pos.unwrap_or(at), format!("the tag `{name}` cannot be on a {what}")));
            }
        };
        let depth = self.depth() + 1 + usize::from(wrap.is_some());
        self.check_depth(depth, at)?;
        self.count(1 + usize::from(wrap.is_some()), at)?;
        let body = if map {
            Body::Map { entries: Vec::new(), index: None, pending: Pending::Key, merges: Vec::new() }
        } else {
            Body::Seq(Vec::new())
        };
        self.stack.push(Frame { pos: at, depth, wrap, anchor, body });
        Ok(())
    }

    fn close(&mut self, span: Span) -> Result<(), ParseError> {
        let Some(frame) = self.stack.pop() else {
            return Err(ParseError::at(marker_pos(span.start), "unexpected end of a map or list"));
        };
        let value = match frame.body {
            Body::Seq(items) => Value::Seq(items),
            Body::Map { mut entries, merges, .. } => {
                if !merges.is_empty() {
                    merge(&mut entries, merges)?;
                }
                Value::Map(entries)
            }
        };
        let mut node = Node::new(frame.pos, value);
        if let Some((name, key_pos)) = frame.wrap {
            node = Node::new(key_pos, Value::Map(vec![(Key { name, pos: key_pos, short_form: true }, node)]));
        }
        if frame.anchor > 0 {
            self.store_anchor(frame.anchor, node.clone(), None, frame.pos)?;
        }
        self.deliver(node)
    }

    fn alias(&mut self, id: usize, span: Span) -> Result<(), ParseError> {
        let at = marker_pos(span.start);
        let Some(anchor) = self.anchors.get(&id) else {
            return Err(ParseError::at(at, "an alias to a node that is not complete yet (a recursive alias)"));
        };
        if self.wants_key() {
            let Some(name) = anchor.key.clone() else {
                return Err(ParseError::at(at, "a key must be a string, not an alias to a map or list"));
            };
            return self.key(Key { name, pos: at, short_form: false }, false);
        }
        let (size, bytes, depth) = (anchor.size, anchor.bytes, self.depth() + anchor.height);
        self.expanded = true;
        self.count(size, at)?;
        self.copy(bytes, at)?;
        self.check_depth(depth, at)?;
        let node = self.anchors.get(&id).map(|anchor| anchor.node.clone());
        match node {
            Some(node) => self.deliver(node),
            None => Ok(()),
        }
    }

    fn store_anchor(&mut self, id: usize, node: Node, key: Option<String>, at: Pos) -> Result<(), ParseError> {
        let (size, height, bytes) = measure(&node);
        self.expanded = true;
        self.count(size, at)?;
        self.copy(bytes, at)?;
        self.anchors.insert(id, Anchor { node, size, height, bytes, key });
        Ok(())
    }

    /// Puts a finished node in the open map or list, or makes it the root.
    fn deliver(&mut self, node: Node) -> Result<(), ParseError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut frame.body {
            Body::Seq(items) => items.push(node),
            Body::Map { entries, index, pending, merges } => match std::mem::replace(pending, Pending::Key) {
                Pending::Value(key) => {
                    if let Some(index) = index {
                        index.insert(key.name.clone(), entries.len());
                    } else if entries.len() >= LINEAR_KEYS {
                        let mut built: HashMap<String, usize> =
                            entries.iter().enumerate().map(|(i, (k, _))| (k.name.clone(), i)).collect();
                        built.insert(key.name.clone(), entries.len());
                        *index = Some(built);
                    }
                    entries.push((key, node));
                }
                Pending::Merge(at) => merges.push((at, node)),
                Pending::Key => {
                    return Err(ParseError::at(node.pos, "a key must be a string"));
                }
            },
        }
        Ok(())
    }
}

/// A scalar's value: plain scalars resolve, the rest are strings unless a core tag says otherwise.
fn scalar_value(text: &str, style: ScalarStyle, kind: TagKind<'_>, at: Pos) -> Result<Value, ParseError> {
    let value = match kind {
        TagKind::None if style == ScalarStyle::Plain => resolve_plain(text),
        TagKind::Core(Core::Int | Core::Float) if is_number(text) => Value::Number(text.to_owned()),
        TagKind::Core(Core::Bool) => match resolve_plain(text) {
            Value::Bool(b) => Value::Bool(b),
            _ => return Err(ParseError::at(at, format!("`{text}` is not a boolean (`!!bool`)"))),
        },
        TagKind::Core(Core::Null) => match resolve_plain(text) {
            Value::Null => Value::Null,
            _ => return Err(ParseError::at(at, format!("`{text}` is not null (`!!null`)"))),
        },
        TagKind::Core(Core::Int | Core::Float) => {
            return Err(ParseError::at(at, format!("`{text}` is not a number (`!!int`/`!!float`)")));
        }
        TagKind::Core(Core::Map | Core::Seq) => {
            return Err(ParseError::at(at, "a `!!map` or `!!seq` tag cannot be on a scalar"));
        }
        TagKind::None | TagKind::NonSpecific | TagKind::Core(Core::Str) | TagKind::Intrinsic(_) => {
            Value::String(text.to_owned())
        }
    };
    Ok(value)
}

/// `!GetAtt A.B.C` as the list `[A, "B.C"]`; `B.C` is placed after the dot when
/// the scalar is on one line and written without escapes.
fn get_att(text: &str, style: ScalarStyle, at: Pos, end: Marker) -> Node {
    let Some((resource, attribute)) = text.split_once('.') else {
        return Node::new(at, Value::Seq(vec![Node::new(at, Value::String(text.to_owned()))]));
    };
    let quotes = match style {
        ScalarStyle::Plain => Some(0),
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Some(1),
        ScalarStyle::Literal | ScalarStyle::Folded => None,
    };
    let chars = text.chars().count();
    let start = at.column as usize;
    let attribute_pos = match quotes {
        Some(quotes) if end.line() == at.line as usize && end.col() + 1 == start + chars + 2 * quotes => {
            pos(at.line as usize, start + quotes + resource.chars().count() + 1)
        }
        _ => at,
    };
    Node::new(
        at,
        Value::Seq(vec![
            Node::new(at, Value::String(resource.to_owned())),
            Node::new(attribute_pos, Value::String(attribute.to_owned())),
        ]),
    )
}

/// Merges the maps of `<<` keys into `entries`: keys already there win, then earlier maps.
fn merge(entries: &mut Vec<(Key, Node)>, merges: Vec<(Pos, Node)>) -> Result<(), ParseError> {
    let mut names: HashSet<String> = entries.iter().map(|(k, _)| k.name.clone()).collect();
    for (at, source) in merges {
        let maps = match source.value {
            Value::Map(map) => vec![map],
            Value::Seq(items) => items
                .into_iter()
                .map(|item| match item.value {
                    Value::Map(map) => Ok(map),
                    _ => Err(ParseError::at(item.pos, "a merge key `<<` takes a map or a list of maps")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(ParseError::at(at, "a merge key `<<` takes a map or a list of maps")),
        };
        for map in maps {
            for (key, value) in map {
                if names.insert(key.name.clone()) {
                    entries.push((key, value));
                }
            }
        }
    }
    Ok(())
}

/// How many nodes `node` has, how many levels and how many bytes of text, without recursing.
fn measure(node: &Node) -> (usize, usize, usize) {
    let mut size = 0;
    let mut height = 0;
    let mut bytes = 0;
    let mut stack = vec![(node, 1usize)];
    while let Some((node, level)) = stack.pop() {
        size += 1;
        height = height.max(level);
        match &node.value {
            Value::Seq(items) => stack.extend(items.iter().map(|item| (item, level + 1))),
            Value::Map(entries) => {
                bytes += entries.iter().map(|(key, _)| key.name.len()).sum::<usize>();
                stack.extend(entries.iter().map(|(_, value)| (value, level + 1)));
            }
            Value::String(text) | Value::Number(text) => bytes += text.len(),
            Value::Null | Value::Bool(_) => {}
        }
    }
    (size, height, bytes)
}
