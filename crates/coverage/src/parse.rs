//! The two report formats, read as a stream: each file's lines are handed to a callback as
//! soon as the report has said all it says of the file, so memory holds one file at a time
//! (plus what the caller keeps).

use std::collections::BTreeMap;
use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};

/// What a report says of one line of a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineHit {
    /// How many times it ran.
    pub hits: u64,
    /// Branches from it that were taken.
    pub branches_covered: u32,
    /// Branches from it.
    pub branches_total: u32,
    /// Whether the report lists the line itself (LCOV can name branches of a line it does not list).
    pub line: bool,
}

/// A file's lines by number.
pub type FileLines = BTreeMap<u32, LineHit>;

/// Adds what another record says of the same file: a line ran if either says so.
pub fn merge(into: &mut FileLines, from: FileLines) {
    for (number, hit) in from {
        let line = into.entry(number).or_default();
        line.hits = line.hits.max(hit.hits);
        line.line |= hit.line;
        line.branches_total = line.branches_total.max(hit.branches_total);
        line.branches_covered = line.branches_covered.max(hit.branches_covered).min(line.branches_total);
    }
}

/// The most lines a report may list for the files kept (and for one file): about 80 MB in
/// memory. Far more than any component's source; a report past it is an error, not a slow read.
pub const MAX_LINES: usize = 2_000_000;

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// More lines than [`MAX_LINES`].
    #[error("it lists more than {limit} lines for the files kept; measure only the component's code")]
    TooManyLines {
        /// [`MAX_LINES`].
        limit: usize,
    },
    /// The XML itself is broken.
    #[error("malformed XML near byte {position}")]
    Xml {
        /// Where the reader was.
        position: u64,
        /// What quick-xml said.
        #[source]
        source: quick_xml::Error,
    },
    /// Well-formed XML that is not a Cobertura report, or a truncated one.
    #[error("not a Cobertura report (near byte {position}): {message}")]
    Cobertura {
        /// Where the reader was.
        position: u64,
        /// What is wrong.
        message: String,
    },
    /// A line that is not LCOV.
    #[error("not an LCOV report (line {line}): {message}")]
    Lcov {
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read.
    #[error("cannot read it")]
    Io(#[source] std::io::Error),
}

/// Reads Cobertura XML (what coverage.py, `pytest --cov-report=xml`, and many other tools
/// write). Calls `on_file(filename, sources, lines)` for each `<class>`; `sources` are the
/// `<source>` folders seen so far (they come before the classes). Lines under `<method>`
/// repeat the class's own and are skipped. A document that ends before its root closes is
/// an error, so a truncated report never reads as a short one.
pub fn cobertura(input: impl BufRead, on_file: &mut dyn FnMut(&str, &[String], FileLines)) -> Result<(), ParseError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut state = Cobertura::default();
    loop {
        let position = reader.buffer_position();
        let xml_error = |source| ParseError::Xml { position, source };
        let structure = |message: String| ParseError::Cobertura { position, message };
        let event = reader.read_event_into(&mut buf).map_err(xml_error)?;
        match event {
            Event::Start(ref e) => state.start(e, false, position, on_file)?,
            Event::Empty(ref e) => state.start(e, true, position, on_file)?,
            Event::End(ref e) => state.end(e.local_name().as_ref(), on_file),
            Event::Text(ref t) => {
                let text = t.decode().map_err(|e| xml_error(e.into()))?;
                if state.depth == 0 && !text.trim().is_empty() {
                    return Err(structure("text outside the root element".into()));
                }
                if let Some(source) = state.source_text.as_mut() {
                    source.push_str(&quick_xml::escape::unescape(&text).map_err(|e| xml_error(e.into()))?);
                }
            }
            Event::CData(ref t) => {
                if let Some(source) = state.source_text.as_mut() {
                    source.push_str(&t.decode().map_err(|e| xml_error(e.into()))?);
                }
            }
            Event::GeneralRef(ref r) => {
                if let Some(source) = state.source_text.as_mut() {
                    let name = r.decode().map_err(|e| xml_error(e.into()))?;
                    let resolved = match r.resolve_char_ref().map_err(xml_error)? {
                        Some(c) => Some(c.to_string()),
                        None => quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string),
                    };
                    let resolved = resolved.ok_or_else(|| structure(format!("unknown entity &{name};")))?;
                    source.push_str(&resolved);
                }
            }
            Event::Eof => {
                if !state.root_seen {
                    return Err(structure("no <coverage> element (an empty or non-XML file)".into()));
                }
                if state.depth > 0 {
                    return Err(structure("the document ends before </coverage> (a truncated report?)".into()));
                }
                return Ok(());
            }
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
        buf.clear();
    }
}

/// Where a Cobertura reader is in the document.
#[derive(Default)]
struct Cobertura {
    depth: usize,
    root_seen: bool,
    /// `<sources>` read so far.
    sources: Vec<String>,
    /// The text of the `<source>` being read.
    source_text: Option<String>,
    /// The `<class>` being read: its file and lines.
    class: Option<(String, FileLines)>,
    /// Inside a `<method>`: its lines repeat the class's and are not counted again.
    in_method: usize,
}

impl Cobertura {
    /// An element opens (`empty`: and closes at once).
    fn start(
        &mut self,
        e: &BytesStart<'_>,
        empty: bool,
        position: u64,
        on_file: &mut dyn FnMut(&str, &[String], FileLines),
    ) -> Result<(), ParseError> {
        let structure = |message: String| ParseError::Cobertura { position, message };
        let name = e.local_name();
        let name = name.as_ref();
        if self.depth == 0 {
            if self.root_seen {
                return Err(structure("a second root element".into()));
            }
            if name != b"coverage" {
                return Err(structure(format!(
                    "the root element is <{}>, not <coverage>",
                    String::from_utf8_lossy(name)
                )));
            }
            self.root_seen = true;
        }
        match name {
            b"source" if !empty => self.source_text = Some(String::new()),
            b"class" => {
                let filename = attribute(e, b"filename", position)?
                    .ok_or_else(|| structure("a <class> without a filename".into()))?;
                if empty {
                    on_file(&filename, &self.sources, FileLines::new());
                } else {
                    self.class = Some((filename, FileLines::new()));
                }
            }
            b"method" if !empty => self.in_method += 1,
            b"line" if self.in_method == 0 => {
                if let Some((_, lines)) = self.class.as_mut() {
                    let (number, hit) = line(e, position)?;
                    merge(lines, FileLines::from([(number, hit)]));
                    if lines.len() > MAX_LINES {
                        return Err(ParseError::TooManyLines { limit: MAX_LINES });
                    }
                }
            }
            _ => {}
        }
        if !empty {
            self.depth += 1;
        }
        Ok(())
    }

    /// An element closes: a `<source>`'s text is kept, a `<class>` is given to `on_file`.
    fn end(&mut self, name: &[u8], on_file: &mut dyn FnMut(&str, &[String], FileLines)) {
        self.depth = self.depth.saturating_sub(1);
        match name {
            b"source" => {
                if let Some(text) = self.source_text.take() {
                    let text = text.trim();
                    if !text.is_empty() {
                        self.sources.push(text.to_string());
                    }
                }
            }
            b"class" => {
                if let Some((filename, lines)) = self.class.take() {
                    on_file(&filename, &self.sources, lines);
                }
            }
            b"method" => self.in_method = self.in_method.saturating_sub(1),
            _ => {}
        }
    }
}

fn attribute(e: &BytesStart<'_>, name: &[u8], position: u64) -> Result<Option<String>, ParseError> {
    let xml_error = |source| ParseError::Xml { position, source };
    match e.try_get_attribute(name).map_err(|e| xml_error(e.into()))? {
        Some(value) => {
            Ok(Some(value.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(xml_error)?.into_owned()))
        }
        None => Ok(None),
    }
}

/// `<line number="12" hits="3" branch="true" condition-coverage="50% (1/2)"/>`.
fn line(e: &BytesStart<'_>, position: u64) -> Result<(u32, LineHit), ParseError> {
    let structure = |message: String| ParseError::Cobertura { position, message };
    let number = attribute(e, b"number", position)?.ok_or_else(|| structure("a <line> without a number".into()))?;
    let number: u32 = number
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| structure(format!("line number `{number}` is not a positive integer")))?;
    let hits = attribute(e, b"hits", position)?.ok_or_else(|| structure(format!("line {number} has no hits")))?;
    let hits = parse_hits(&hits).ok_or_else(|| structure(format!("line {number}: hits `{hits}` is not a count")))?;
    let mut hit = LineHit { hits, line: true, ..LineHit::default() };
    if attribute(e, b"branch", position)?.is_some_and(|b| b.trim() == "true")
        && let Some(condition) = attribute(e, b"condition-coverage", position)?
    {
        // `50% (1/2)`: the counts are in the parentheses.
        let counts = condition.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map(|(inner, _)| inner);
        let parsed = counts.and_then(|c| c.split_once('/')).and_then(|(a, b)| {
            let (covered, total) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
            (covered <= total).then_some((covered, total))
        });
        let (covered, total) = parsed
            .ok_or_else(|| structure(format!("line {number}: condition-coverage `{condition}` is not `N% (A/B)`")))?;
        hit.branches_covered = covered;
        hit.branches_total = total;
    }
    Ok((number, hit))
}

/// A hit count: an integer, or a float some tools write (`1.0`).
fn parse_hits(text: &str) -> Option<u64> {
    let text = text.trim();
    text.parse::<u64>().ok().or_else(|| {
        let f: f64 = text.parse().ok()?;
        (f.is_finite() && f >= 0.0).then_some(f as u64)
    })
}

/// Reads LCOV (what c8, nyc, jest, vitest and node's `--test-reporter=lcov` write): `SF:`
/// opens a file's record and `end_of_record` closes it; `DA:line,hits` and
/// `BRDA:line,block,branch,taken` give lines and branches; the other records (`TN`, `FN`,
/// `FNDA`, `LF`, `LH`, `BRF`, `BRH` …) are summaries and are recomputed. A report that ends
/// inside a record is an error (a truncated report).
pub fn lcov(mut input: impl BufRead, on_file: &mut dyn FnMut(&str, &[String], FileLines)) -> Result<(), ParseError> {
    let mut raw = Vec::new();
    let mut number = 0u64;
    let mut current: Option<(String, FileLines)> = None;
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw).map_err(ParseError::Io)? == 0 {
            break;
        }
        number += 1;
        let bad = |message: String| ParseError::Lcov { line: number, message };
        let text = std::str::from_utf8(&raw).map_err(|_| bad("not UTF-8".into()))?;
        let text = text.trim_end_matches(['\n', '\r']).trim();
        if text.is_empty() {
            continue;
        }
        if text == "end_of_record" {
            let (file, lines) = current.take().ok_or_else(|| bad("end_of_record without SF:".into()))?;
            on_file(&file, &[], lines);
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            return Err(bad(format!("`{}` is not a `KEY:VALUE` record", shorten(text))));
        };
        match key {
            "SF" => {
                if current.is_some() {
                    return Err(bad("SF: inside a record (end_of_record missing)".into()));
                }
                if value.is_empty() {
                    return Err(bad("SF: without a path".into()));
                }
                current = Some((value.to_string(), FileLines::new()));
            }
            "DA" | "BRDA" => {
                let (_, lines) = current.as_mut().ok_or_else(|| bad(format!("{key}: outside a record (no SF:)")))?;
                lcov_line(key, value, text, lines, number)?;
            }
            "TN" | "VER" | "FN" | "FNDA" | "FNF" | "FNH" | "FNL" | "FNA" | "LF" | "LH" | "BRF" | "BRH" => {}
            _ => return Err(bad(format!("unknown record `{}`", shorten(key)))),
        }
    }
    if let Some((file, _)) = current {
        return Err(ParseError::Lcov {
            line: number,
            message: format!("the report ends inside the record of {file} (no end_of_record: a truncated report?)"),
        });
    }
    Ok(())
}

/// A `DA:` (a line's hits) or `BRDA:` (a branch taken or not) record of LCOV's line `number`,
/// added to the file's lines.
fn lcov_line(key: &str, value: &str, text: &str, lines: &mut FileLines, number: u64) -> Result<(), ParseError> {
    let bad = |message: String| ParseError::Lcov { line: number, message };
    if lines.len() > MAX_LINES {
        return Err(ParseError::TooManyLines { limit: MAX_LINES });
    }
    let fields: Vec<&str> = value.split(',').collect();
    let line: u32 = fields
        .first()
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(format!("`{}`: the line number is not a positive integer", shorten(text))))?;
    let hit = if key == "DA" {
        let hits = fields
            .get(1)
            .and_then(|h| parse_hits(h))
            .ok_or_else(|| bad(format!("`{}`: the hit count is not a number", shorten(text))))?;
        LineHit { hits, ..LineHit::default() }
    } else {
        let taken = fields
            .get(3)
            .map(|t| t.trim())
            .filter(|_| fields.len() == 4)
            .ok_or_else(|| bad(format!("`{}`: BRDA needs line,block,branch,taken", shorten(text))))?;
        let taken = if taken == "-" {
            0
        } else {
            parse_hits(taken).ok_or_else(|| bad(format!("`{}`: taken is not a number", shorten(text))))?
        };
        // Branch counts add up per line; the line's own hits come from DA.
        let line_entry = lines.entry(line).or_default();
        line_entry.branches_total = line_entry.branches_total.saturating_add(1);
        if taken > 0 {
            line_entry.branches_covered = line_entry.branches_covered.saturating_add(1);
        }
        return Ok(());
    };
    let entry = lines.entry(line).or_default();
    entry.hits = entry.hits.max(hit.hits);
    entry.line = true;
    Ok(())
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 60 { format!("{}…", text.chars().take(59).collect::<String>()) } else { text.into() }
}
