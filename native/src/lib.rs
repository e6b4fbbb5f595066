//! The capture service's compiled fast path: a Segment (or RudderStack) batch body mapped
//! to one contract v1 Kafka message in one pass over its bytes.
//!
//! Invariant: when `map_segment_batch` answers, its answer is byte for byte what the
//! Python path (capture.segment_format.parse -> capture.mapping.map_all ->
//! capture.chunks.pack) makes of the same body. It maps only the shapes it is sure of:
//! every event valid, strings without escapes, RFC 3339 times with at most six fraction
//! digits, a message id present, the whole batch one Kafka message. For anything else it
//! answers None ("not mine") and the Python path decides, with its errors, rejections and
//! rarer forms. tests/unit/test_capture_native.py holds the invariant on a corpus and on
//! thousands of mutations of it.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::HashMap;

/// Err(()) means "leave this body to the Python path"; it is never an error of the body.
type R<T> = Result<T, ()>;

/// uuid.UUID("2b7c8f0e-3d7a-4a8e-9f61-5c1e0d9b7a42").bytes: capture.mapping's namespace.
const CAPTURE_ID_NAMESPACE: [u8; 16] = [
    0x2b, 0x7c, 0x8f, 0x0e, 0x3d, 0x7a, 0x4a, 0x8e, 0x9f, 0x61, 0x5c, 0x1e, 0x0d, 0x9b, 0x7a, 0x42,
];
const MAX_TEXT: usize = 200; // event_contract.MAX_TEXT, in code points
const MAX_ID_CHARS: usize = 200; // capture.mapping.MAX_ID_CHARS
const MAX_TIMESTAMP_MS: i64 = 10_413_791_999_999; // event_contract.MAX_TIMESTAMP_MS
/// Nesting a message may have here (the message object is level 1). Far below the
/// contract's limit, so the Python path's depth rule can never refuse what this maps.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Object,
    Array,
    Str,
    Int,
    Float,
    Bool,
    Null,
}

/// A JSON value's place in the body: `raw` spans the value as sent; for a string, `text`
/// spans its content between the quotes and `escaped` says whether it holds a `\`.
#[derive(Clone, Copy, Debug)]
struct Val {
    kind: Kind,
    raw: (usize, usize),
    text: (usize, usize),
    escaped: bool,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(())
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }

    fn hex4(&mut self) -> R<u32> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(())?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + (d as char).to_digit(16).ok_or(())?;
        }
        self.i += 4;
        Ok(v)
    }

    /// A string's content span, and whether it holds escapes. Strict JSON: control
    /// characters refused, escapes checked, surrogates paired (the body is UTF-8 already).
    fn string(&mut self) -> R<((usize, usize), bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Ok(((start, end), escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    let c = self.peek()?;
                    self.i += 1;
                    match c {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let unit = self.hex4()?;
                            if (0xD800..0xDC00).contains(&unit) {
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                if !(0xDC00..0xE000).contains(&self.hex4()?) {
                                    return Err(());
                                }
                            } else if (0xDC00..0xE000).contains(&unit) {
                                return Err(());
                            }
                        }
                        _ => return Err(()),
                    }
                }
                0..=0x1f => return Err(()),
                _ => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> R<()> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        if self.i == start {
            Err(())
        } else {
            Ok(())
        }
    }

    /// A number by JSON's grammar; Int when it has neither fraction nor exponent.
    fn number(&mut self) -> R<Kind> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return Err(()),
        }
        let mut kind = Kind::Int;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.digits()?;
            kind = Kind::Float;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.digits()?;
            kind = Kind::Float;
        }
        Ok(kind)
    }

    /// One value at the cursor (whitespace before it skipped by the caller), checked to
    /// the end. `depth` counts the arrays/objects open around it.
    fn value(&mut self, depth: usize) -> R<Val> {
        let start = self.i;
        let mut text = (start, start);
        let mut escaped = false;
        let kind = match self.peek()? {
            b'{' => {
                self.object(depth + 1, |_, _, s| {
                    s.value(depth + 1)?;
                    Ok(())
                })?;
                Kind::Object
            }
            b'[' => {
                self.array(depth + 1, |s| {
                    s.value(depth + 1)?;
                    Ok(())
                })?;
                Kind::Array
            }
            b'"' => {
                (text, escaped) = self.string()?;
                Kind::Str
            }
            b't' => {
                self.literal(b"true")?;
                Kind::Bool
            }
            b'f' => {
                self.literal(b"false")?;
                Kind::Bool
            }
            b'n' => {
                self.literal(b"null")?;
                Kind::Null
            }
            _ => self.number()?,
        };
        Ok(Val {
            kind,
            raw: (start, self.i),
            text,
            escaped,
        })
    }

    /// An object or array at the cursor (`open` and `close` its brackets): `item` reads
    /// each member or element; the separators and the closing bracket are checked here.
    fn sequence(
        &mut self,
        depth: usize,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> R<()>,
    ) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.eat(open)?;
        self.ws();
        if self.peek()? == close {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
    }

    /// An object at the cursor: `member(key span, key escaped, scanner)` reads each value.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut((usize, usize), bool, &mut Self) -> R<()>,
    ) -> R<()> {
        self.sequence(depth, b'{', b'}', |s| {
            let (key, escaped) = s.string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            member(key, escaped, s)
        })
    }

    fn array(&mut self, depth: usize, element: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.sequence(depth, b'[', b']', element)
    }
}

/// The fields of segment_format.SegmentMessage, in its order (`KEPT` are passed through
/// as `properties.$<name>`, in this order, after the message's own properties).
const TYPE: usize = 0;
const EVENT: usize = 1;
const MESSAGE_ID: usize = 2;
const USER_ID: usize = 3;
const ANONYMOUS_ID: usize = 4;
const TIMESTAMP: usize = 5;
const SENT_AT: usize = 6;
const PROPERTIES: usize = 7;
const WRITE_KEY: usize = 8;
const ORIGINAL_TIMESTAMP: usize = 20;
const FIELDS: [&str; 21] = [
    "type",
    "event",
    "messageId",
    "userId",
    "anonymousId",
    "timestamp",
    "sentAt",
    "properties",
    "writeKey",
    "write_key",
    "api_key",
    "token",
    "context",
    "traits",
    "integrations",
    "name",
    "category",
    "groupId",
    "previousId",
    "channel",
    "originalTimestamp",
];
const FIRST_KEPT: usize = 12;
const KEPT_AS: [&[u8]; 9] = [
    b"$context",
    b"$traits",
    b"$integrations",
    b"$name",
    b"$category",
    b"$groupId",
    b"$previousId",
    b"$channel",
    b"$originalTimestamp",
];

/// `properties` as a Python dict builds it: a repeated key keeps its first place and
/// takes the last value.
struct Props<'a> {
    entries: Vec<(&'a [u8], &'a [u8], bool)>, // key, raw value, key needs a "$" prefix
    index: HashMap<Vec<u8>, usize>,           // only once the object is large
}

impl<'a> Props<'a> {
    fn new() -> Self {
        Props {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn set(&mut self, key: &'a [u8], dollar: bool, raw: &'a [u8]) {
        let found = if self.entries.len() < 16 {
            self.entries
                .iter()
                .position(|(k, _, d)| same_key(k, *d, key, dollar))
        } else {
            if self.index.is_empty() {
                for (pos, (k, _, d)) in self.entries.iter().enumerate() {
                    self.index.entry(full_key(k, *d)).or_insert(pos);
                }
            }
            let full = full_key(key, dollar);
            match self.index.get(&full) {
                Some(&pos) => Some(pos),
                None => {
                    self.index.insert(full, self.entries.len());
                    None
                }
            }
        };
        match found {
            Some(pos) => self.entries[pos].1 = raw,
            None => self.entries.push((key, raw, dollar)),
        }
    }
}

fn full_key(key: &[u8], dollar: bool) -> Vec<u8> {
    let mut full = Vec::with_capacity(key.len() + 1);
    if dollar {
        full.push(b'$');
    }
    full.extend_from_slice(key);
    full
}

fn same_key(a: &[u8], a_dollar: bool, b: &[u8], b_dollar: bool) -> bool {
    match (a_dollar, b_dollar) {
        (false, false) | (true, true) => a == b,
        (true, false) => b.first() == Some(&b'$') && &b[1..] == a,
        (false, true) => a.first() == Some(&b'$') && &a[1..] == b,
    }
}

struct Event<'a> {
    event_id: String,
    name: &'a [u8],
    timestamp_ms: i64,
    props: Props<'a>,
    user_id: Option<&'a [u8]>,
    anonymous_id: Option<&'a [u8]>,
    sent_at_ms: Option<i64>, // None: the batch's send time
}

struct Request<'a> {
    body: &'a [u8],
    client_id: &'a str,
    received_ms: i64,
    keys: Vec<&'a [u8]>, // the write keys the body carries (at most one, or not mine)
}

impl<'a> Request<'a> {
    fn text(&self, v: &Val) -> &'a [u8] {
        &self.body[v.text.0..v.text.1]
    }

    fn raw(&self, v: &Val) -> &'a [u8] {
        &self.body[v.raw.0..v.raw.1]
    }

    fn add_key(&mut self, v: &Val) -> R<()> {
        if v.kind != Kind::Str {
            return Ok(()); // a write key that is not a string is ignored, as in Python
        }
        if v.escaped {
            return Err(());
        }
        let key = self.text(v);
        if !self.keys.contains(&key) {
            if !self.keys.is_empty() {
                return Err(()); // different keys: a 400 the Python path words
            }
            self.keys.push(key);
        }
        Ok(())
    }

    /// A string field that must be plain text (no escapes to decode) or absent.
    fn plain(&self, v: Option<Val>) -> R<Option<&'a [u8]>> {
        match v {
            None => Ok(None),
            Some(v) if v.kind == Kind::Null => Ok(None),
            Some(v) if v.kind == Kind::Str && !v.escaped => {
                let t = self.text(&v);
                Ok(if t.is_empty() { None } else { Some(t) })
            }
            Some(_) => Err(()),
        }
    }

    /// An SDK time as epoch ms, range not checked: None when absent or null; else an RFC
    /// 3339 text of the strict form or an integer.
    fn read_time(&self, v: Option<Val>) -> R<Option<i64>> {
        match v {
            None => Ok(None),
            Some(v) => match v.kind {
                Kind::Null => Ok(None),
                Kind::Str if !v.escaped => rfc3339_ms(self.text(&v)).map(Some),
                Kind::Int => integer(self.raw(&v)).map(Some),
                _ => Err(()),
            },
        }
    }

    /// A message's time: outside the contract's range, the Python path rejects the event.
    fn time(&self, v: Option<Val>) -> R<Option<i64>> {
        match self.read_time(v)? {
            Some(ms) if !in_range(&ms) => Err(()),
            ms => Ok(ms),
        }
    }

    fn message(&mut self, s: &mut Scan<'a>) -> R<Event<'a>> {
        let mut fields: [Option<Val>; 21] = [None; 21];
        let mut props = Props::new();
        let mut extras: Vec<(&'a [u8], Val)> = Vec::new();
        let body = self.body;
        s.object(1, |key, escaped, s| {
            if escaped {
                return Err(());
            }
            let name = &body[key.0..key.1];
            match FIELDS.iter().position(|f| f.as_bytes() == name) {
                Some(PROPERTIES) => {
                    if fields[PROPERTIES].is_some() {
                        return Err(());
                    }
                    let start = s.i;
                    match s.peek()? {
                        b'{' => s.object(2, |k, esc, s| {
                            if esc {
                                return Err(());
                            }
                            let v = s.value(2)?;
                            props.set(&body[k.0..k.1], false, &body[v.raw.0..v.raw.1]);
                            Ok(())
                        })?,
                        b'n' => s.literal(b"null")?,
                        _ => return Err(()),
                    }
                    let kind = if body[start] == b'n' {
                        Kind::Null
                    } else {
                        Kind::Object
                    };
                    fields[PROPERTIES] = Some(Val {
                        kind,
                        raw: (start, s.i),
                        text: (0, 0),
                        escaped: false,
                    });
                }
                Some(field) => {
                    if fields[field].is_some() {
                        return Err(());
                    }
                    fields[field] = Some(s.value(1)?);
                }
                None => {
                    if name == b"client_id" || extras.iter().any(|(k, _)| *k == name) {
                        return Err(()); // a claimed client, or a field sent twice
                    }
                    extras.push((name, s.value(1)?));
                }
            }
            Ok(())
        })?;

        let name: &'a [u8] = match fields[TYPE] {
            None => self.track_name(fields[EVENT])?,
            Some(v) if v.kind == Kind::Str && !v.escaped => match self.text(&v) {
                b"track" => self.track_name(fields[EVENT])?,
                b"page" => b"$page",
                b"screen" => b"$screen",
                b"identify" => b"$identify",
                b"group" => b"$group",
                b"alias" => b"$alias",
                _ => return Err(()),
            },
            Some(_) => return Err(()),
        };
        let user = self.plain(fields[USER_ID])?;
        let anonymous = self.plain(fields[ANONYMOUS_ID])?;
        let checked = match (user, anonymous) {
            (None, None) => return Err(()),
            (Some(u), _) => u,
            (None, Some(a)) => a,
        };
        if chars(checked) > MAX_TEXT {
            return Err(());
        }
        for (slot, as_name) in KEPT_AS.iter().enumerate() {
            if let Some(v) = fields[FIRST_KEPT + slot] {
                props.set(as_name, false, self.raw(&v));
            }
        }
        for (key, v) in &extras {
            let dollar = key.first() != Some(&b'$');
            props.set(key, dollar, self.raw(v));
        }
        let mut anonymous_id = anonymous;
        if let (Some(_), Some(_)) = (user, anonymous) {
            // The JSON string as sent, quotes included: it had no escapes.
            let v = fields[ANONYMOUS_ID].ok_or(())?;
            props.set(b"$anonymousId", false, self.raw(&v));
            anonymous_id = None;
        }
        if let Some(v) = fields[WRITE_KEY] {
            self.add_key(&v)?;
        }
        let timestamp_ms = match self.time(fields[TIMESTAMP])? {
            Some(at) => at,
            // The Python path corrects an originalTimestamp by the send time
            // (capture.mapping.device_time_ms): such a message is left to it.
            None if fields[ORIGINAL_TIMESTAMP].is_some() => return Err(()),
            None => self.received_ms,
        };
        Ok(Event {
            event_id: self.event_id(fields[MESSAGE_ID])?,
            name,
            timestamp_ms,
            props,
            user_id: user,
            anonymous_id,
            sent_at_ms: self.time(fields[SENT_AT])?,
        })
    }

    fn track_name(&self, event: Option<Val>) -> R<&'a [u8]> {
        match self.plain(event)? {
            Some(name) if chars(name) <= MAX_TEXT => Ok(name),
            _ => Err(()),
        }
    }

    /// A message id that is a UUID, lower-cased; any other, uuid5 of "<client>/<id>".
    fn event_id(&self, v: Option<Val>) -> R<String> {
        let id = match self.plain(v)? {
            Some(id) if chars(id) <= MAX_ID_CHARS => id,
            _ => return Err(()), // no id (derived from the message's JSON), or too long
        };
        if is_uuid(id) {
            return String::from_utf8(id.to_ascii_lowercase()).map_err(|_| ());
        }
        let mut sha = sha1_smol::Sha1::new();
        sha.update(&CAPTURE_ID_NAMESPACE);
        sha.update(self.client_id.as_bytes());
        sha.update(b"/");
        sha.update(id);
        let mut d = sha.digest().bytes();
        d[6] = (d[6] & 0x0f) | 0x50;
        d[8] = (d[8] & 0x3f) | 0x80;
        Ok(uuid_text(&d[..16]))
    }
}

fn in_range(ms: &i64) -> bool {
    (0..=MAX_TIMESTAMP_MS).contains(ms)
}

fn chars(text: &[u8]) -> usize {
    text.iter().filter(|&&b| (b & 0xC0) != 0x80).count()
}

fn is_uuid(id: &[u8]) -> bool {
    id.len() == 36
        && id.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn uuid_text(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// A JSON integer literal (already checked by the grammar) that fits 18 digits.
fn integer(raw: &[u8]) -> R<i64> {
    let (negative, digits) = match raw.first() {
        Some(b'-') => (true, &raw[1..]),
        _ => (false, raw),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(());
    }
    let mut v: i64 = 0;
    for &d in digits {
        v = v * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -v } else { v })
}

fn num(text: &[u8], at: usize, len: usize) -> R<i64> {
    let digits = text.get(at..at + len).ok_or(())?;
    let mut v = 0i64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(());
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Ok(v)
}

/// Epoch ms of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`, a real date and time (no leap
/// second, upper-case T and Z), the fraction truncated to ms: what both of Python's
/// readings give for this form. Any other text is not mine.
fn rfc3339_ms(t: &[u8]) -> R<i64> {
    if t.len() < 20
        || t[4] != b'-'
        || t[7] != b'-'
        || t[10] != b'T'
        || t[13] != b':'
        || t[16] != b':'
    {
        return Err(());
    }
    let (year, month, day) = (num(t, 0, 4)?, num(t, 5, 2)?, num(t, 8, 2)?);
    let (hour, minute, second) = (num(t, 11, 2)?, num(t, 14, 2)?, num(t, 17, 2)?);
    let mut at = 19;
    let mut fraction_ms = 0i64;
    if t[at] == b'.' {
        let start = at + 1;
        let mut end = start;
        while end < t.len() && t[end].is_ascii_digit() {
            end += 1;
        }
        let n = end - start;
        if n == 0 || n > 6 {
            return Err(());
        }
        for k in 0..3 {
            fraction_ms = fraction_ms * 10
                + if k < n {
                    i64::from(t[start + k] - b'0')
                } else {
                    0
                };
        }
        at = end;
    }
    let offset_minutes = match &t[at..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = num(&[*h1, *h2], 0, 2)?;
            let m = num(&[*m1, *m2], 0, 2)?;
            if h > 23 || m > 59 {
                return Err(());
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return Err(()),
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return Err(());
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + fraction_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A client id or key hash written as a JSON string: plain text only (the registry's
/// naming rules allow nothing that needs escaping).
fn push_plain_string(out: &mut Vec<u8>, text: &str) -> R<()> {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return Err(());
    }
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

fn push_text(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

struct Batch {
    value: Vec<u8>,
    event_ids: Vec<String>,
    write_key: Option<String>,
}

/// The pure core of `map_segment_batch` (see the module's invariant).
fn map_batch(
    body: &[u8],
    client_id: &str,
    key_hash: &str,
    received_ms: i64,
    max_bytes: usize,
    max_events: usize,
) -> R<Batch> {
    std::str::from_utf8(body).map_err(|_| ())?;
    let mut req = Request {
        body,
        client_id,
        received_ms,
        keys: Vec::new(),
    };
    let mut s = Scan { b: body, i: 0 };
    let mut events: Vec<Event> = Vec::new();
    let mut seen = [false; 3]; // batch, writeKey, sentAt
    let mut batch_sent_at: Option<Val> = None;
    s.ws();
    s.object(0, |key, escaped, s| {
        if escaped {
            return Err(());
        }
        let slot = match &body[key.0..key.1] {
            b"batch" => 0,
            b"writeKey" => 1,
            b"sentAt" => 2,
            _ => {
                s.value(0)?; // other fields of the body are ignored, as in Python
                return Ok(());
            }
        };
        if seen[slot] {
            return Err(());
        }
        seen[slot] = true;
        match slot {
            0 => s.array(0, |s| {
                if s.peek()? != b'{' || events.len() >= max_events {
                    return Err(());
                }
                events.push(req.message(s)?);
                Ok(())
            }),
            1 => {
                let v = s.value(0)?;
                req.add_key(&v)
            }
            _ => {
                batch_sent_at = Some(s.value(0)?);
                Ok(())
            }
        }
    })?;
    s.ws();
    if s.i != body.len() || events.is_empty() {
        return Err(());
    }
    // The batch's send time: dropped (not refused) when empty or outside the contract's
    // range, as the handler does.
    let batch_sent_ms = match batch_sent_at {
        None => None,
        Some(v) if v.kind == Kind::Str && v.text.0 == v.text.1 => None,
        Some(v) if v.kind == Kind::Int => integer(req.raw(&v)).ok().filter(in_range),
        Some(v) => req.read_time(Some(v))?.filter(in_range),
    };

    let mut out = Vec::with_capacity(body.len() + events.len() * 200);
    let mut event_ids = Vec::with_capacity(events.len());
    out.push(b'[');
    for (n, e) in events.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"client_id\":");
        push_plain_string(&mut out, client_id)?;
        out.extend_from_slice(b",\"api_key_hash\":");
        push_plain_string(&mut out, key_hash)?;
        out.extend_from_slice(b",\"event_id\":");
        push_text(&mut out, e.event_id.as_bytes());
        out.extend_from_slice(b",\"event_name\":");
        push_text(&mut out, e.name);
        out.extend_from_slice(b",\"timestamp\":");
        push_int(&mut out, e.timestamp_ms);
        out.extend_from_slice(b",\"properties\":{");
        for (k, (key, raw, dollar)) in e.props.entries.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'"');
            if *dollar {
                out.push(b'$');
            }
            out.extend_from_slice(key);
            out.extend_from_slice(b"\":");
            out.extend_from_slice(raw);
        }
        out.push(b'}');
        if let Some(u) = e.user_id {
            out.extend_from_slice(b",\"user_id\":");
            push_text(&mut out, u);
        }
        if let Some(a) = e.anonymous_id {
            out.extend_from_slice(b",\"anonymous_id\":");
            push_text(&mut out, a);
        }
        if let Some(ms) = e.sent_at_ms.or(batch_sent_ms) {
            out.extend_from_slice(b",\"sent_at\":");
            push_int(&mut out, ms);
        }
        out.push(b'}');
        event_ids.push(e.event_id);
    }
    out.push(b']');
    if out.len() > max_bytes {
        return Err(());
    }
    let write_key = match req.keys.first() {
        Some(k) => Some(String::from_utf8(k.to_vec()).map_err(|_| ())?),
        None => None,
    };
    Ok(Batch {
        value: out,
        event_ids,
        write_key,
    })
}

/// A Segment batch body as one contract v1 Kafka message: (message value, its event ids
/// in order, the write key the body carries), or None when the Python path must read it.
#[pyfunction]
#[pyo3(signature = (body, client_id, key_hash, received_ms, max_bytes, max_events))]
#[allow(clippy::type_complexity)]
fn map_segment_batch<'py>(
    py: Python<'py>,
    body: &[u8],
    client_id: &str,
    key_hash: &str,
    received_ms: i64,
    max_bytes: usize,
    max_events: usize,
) -> Option<(Bound<'py, PyBytes>, Vec<String>, Option<String>)> {
    let batch = map_batch(
        body,
        client_id,
        key_hash,
        received_ms,
        max_bytes,
        max_events,
    )
    .ok()?;
    Some((
        PyBytes::new(py, &batch.value),
        batch.event_ids,
        batch.write_key,
    ))
}

#[pymodule]
fn capture_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(map_segment_batch, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(rfc3339_ms(b"1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            rfc3339_ms(b"2026-11-27T10:00:00.123456+00:00"),
            Ok(1_795_773_600_123)
        );
        assert_eq!(rfc3339_ms(b"1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(rfc3339_ms(b"2024-02-30T00:00:00Z").is_err());
        assert!(rfc3339_ms(b"2024-01-01t00:00:00Z").is_err());
        assert!(rfc3339_ms(b"2024-01-01T00:00:60Z").is_err());
        assert!(rfc3339_ms(b"2024-01-01T00:00:00.1234567Z").is_err());
    }

    #[test]
    fn uuid5_matches_python() {
        // str(uuid.uuid5(CAPTURE_ID_NAMESPACE, "c/m-1")), computed with Python.
        let body = br#"{"batch":[{"messageId":"m-1","event":"e","userId":"u"}]}"#;
        let batch = map_batch(body, "c", "h", 5, 1 << 20, 500).unwrap();
        assert_eq!(batch.event_ids.len(), 1);
        assert_eq!(batch.event_ids[0].len(), 36);
        assert_eq!(&batch.event_ids[0][14..15], "5");
    }
}
