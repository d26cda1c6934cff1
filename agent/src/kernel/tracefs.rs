//! Tracepoint record layouts from tracefs (`events/<category>/<name>/format`) and a decoder of
//! raw records by field name. The layout is the running kernel's own: integers of each size and
//! sign, pointers, fixed arrays, `char[N]`, `__data_loc` and `__rel_loc` strings and arrays, and
//! the `__print_symbolic` tables of `print fmt` (so enum fields decode to the kernel's names).

use std::path::{Path, PathBuf};

use super::tracefs_symbols::Symbols;

use crate::kernel::value::{Kind, Name, Value, c_text};

/// The layout of one tracepoint's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    /// Every field, the `common_*` ones first, in record order.
    pub fields: Vec<FieldFormat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFormat {
    pub name: Name,
    /// The declaration's type, as tracefs prints it (`unsigned long`, `__data_loc char[]`).
    pub type_name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    pub layout: Layout,
    /// `common_type`, `common_pid`...: the header every record has.
    pub common: bool,
    /// `__print_symbolic` names of this field's values, if `print fmt` has them.
    pub symbols: Symbols,
}

/// How a field's bytes are laid out in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// An integer of 1, 2, 4 or 8 bytes (`size`), signed or not.
    Int,
    Pointer,
    /// `char name[N]`: NUL-terminated text of at most `size` bytes.
    Chars,
    /// `type name[N]`: `size / element` integers.
    Array {
        element: usize,
    },
    /// `__data_loc char[]` (`relative: false`) or `__rel_loc char[]`: text elsewhere in the record.
    DynamicString {
        relative: bool,
    },
    /// `__data_loc type[]`: integers of `element` bytes elsewhere in the record.
    DynamicArray {
        element: usize,
        relative: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "no tracepoint {category}:{name} in {dir}{hint}: list them with `ls {dir}` \
         (is tracefs mounted there? `mount -t tracefs nodev /sys/kernel/tracing`)"
    )]
    Unknown { category: String, name: String, dir: String, hint: String },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes ends before field {field} (bytes {start}..{end})")]
    Truncated { field: Name, start: usize, end: usize, len: usize },
    #[error("field {field} points at bytes {start}..{end} outside the record of {len} bytes")]
    OutOfRecord { field: Name, start: usize, end: usize, len: usize },
}

impl Format {
    /// Reads `events/<category>/<name>/format` under `tracefs`; an unknown tracepoint's error
    /// lists the closest names that exist.
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let events = tracefs.join("events");
        let path = events.join(category).join(name).join("format");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|message| TracefsError::Parse { path, message }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(TracefsError::Unknown {
                category: category.to_owned(),
                name: name.to_owned(),
                dir: events.display().to_string(),
                hint: closest_tracepoints(&events, category, name),
            }),
            Err(error) => Err(TracefsError::Read { path, error }),
        }
    }

    /// Parses the text of a `format` file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = "";
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(n) = trimmed.strip_prefix("name:") {
                name = Some(n.trim().to_owned());
            } else if let Some(i) = trimmed.strip_prefix("ID:") {
                id = i.trim().parse::<u32>().ok();
            } else if trimmed.starts_with("field:") {
                fields.push(parse_field(trimmed)?);
            } else if let Some(p) = trimmed.strip_prefix("print fmt:") {
                print_fmt = p;
            }
        }
        let Some(name) = name else { return Err("no `name:` line".into()) };
        if fields.is_empty() {
            return Err("no fields".into());
        }
        for field in fields.iter_mut().filter(|f| !f.common) {
            field.symbols = super::tracefs_symbols::parse(print_fmt, &field.name);
        }
        Ok(Self { name, id: id.unwrap_or(0), fields })
    }

    pub fn field(&self, name: &str) -> Option<&FieldFormat> {
        self.fields.iter().find(|f| &*f.name == name)
    }

    /// The bytes of the fixed part of the record (where the dynamic data starts).
    pub fn fixed_size(&self) -> usize {
        self.fields.iter().map(|f| f.offset + f.size).max().unwrap_or(0)
    }

    /// Whether some field's data lies past the fixed part.
    pub fn has_dynamic_fields(&self) -> bool {
        self.fields
            .iter()
            .any(|f| matches!(f.layout, Layout::DynamicString { .. } | Layout::DynamicArray { .. }))
    }

    /// The fields an event of this tracepoint has (without the `common_` header), and their kinds.
    pub fn kinds(&self) -> Vec<(Name, Kind)> {
        self.fields.iter().filter(|f| !f.common).map(|f| (Name::clone(&f.name), f.kind())).collect()
    }

    /// Decodes the non-common fields of `record`. Never reads outside it: a field that does not
    /// fit is an error.
    pub fn decode(&self, record: &[u8]) -> Result<Vec<(Name, Value)>, DecodeError> {
        self.fields
            .iter()
            .filter(|f| !f.common)
            .map(|f| Ok((Name::clone(&f.name), f.decode(record)?)))
            .collect()
    }
}

impl FieldFormat {
    pub fn kind(&self) -> Kind {
        match self.layout {
            _ if !self.symbols.is_empty() => Kind::Text,
            Layout::Int | Layout::Pointer => Kind::Number,
            Layout::Chars | Layout::DynamicString { .. } => Kind::Text,
            Layout::Array { .. } | Layout::DynamicArray { .. } => Kind::List,
        }
    }

    /// This field's value in `record`.
    pub fn decode(&self, record: &[u8]) -> Result<Value, DecodeError> {
        let fixed = self.bytes(record, self.offset, self.size, false)?;
        Ok(match self.layout {
            Layout::Int => {
                let value = integer(fixed, self.signed);
                match (
                    self.symbols.get(&value.as_i128().map_or(u64::MAX, |v| v as u64)),
                    self.symbols.is_empty(),
                ) {
                    (Some(name), _) => Value::text(name),
                    (None, false) => Value::text(&value.to_string()),
                    (None, true) => value,
                }
            }
            Layout::Pointer => Value::Pointer(integer(fixed, false).as_i128().map_or(0, |v| v as u64)),
            Layout::Chars => Value::Str(c_text(fixed)),
            Layout::Array { element } => list(fixed, element, self.signed),
            Layout::DynamicString { relative } => Value::Str(c_text(self.dynamic(record, fixed, relative)?)),
            Layout::DynamicArray { element, relative } => {
                list(self.dynamic(record, fixed, relative)?, element, self.signed)
            }
        })
    }

    /// The bytes a `__data_loc` (offset from the record's start) or `__rel_loc` (offset from
    /// the end of the field) descriptor points at: low 16 bits offset, high 16 bits length.
    fn dynamic<'r>(
        &self,
        record: &'r [u8],
        descriptor: &[u8],
        relative: bool,
    ) -> Result<&'r [u8], DecodeError> {
        let loc = match descriptor {
            [a, b, c, d] => u32::from_ne_bytes([*a, *b, *c, *d]),
            _ => 0,
        };
        let mut start = (loc & 0xffff) as usize;
        if relative {
            start += self.offset + self.size;
        }
        self.bytes(record, start, (loc >> 16) as usize, true)
    }

    fn bytes<'r>(
        &self,
        record: &'r [u8],
        start: usize,
        len: usize,
        dynamic: bool,
    ) -> Result<&'r [u8], DecodeError> {
        let end = start.saturating_add(len);
        record.get(start..end).ok_or_else(|| {
            let (field, len) = (Name::clone(&self.name), record.len());
            if dynamic {
                DecodeError::OutOfRecord { field, start, end, len }
            } else {
                DecodeError::Truncated { field, start, end, len }
            }
        })
    }
}

fn integer(bytes: &[u8], signed: bool) -> Value {
    let mut raw = [0u8; 8];
    let n = bytes.len().min(8);
    raw[..n].copy_from_slice(&bytes[..n]);
    let unsigned = u64::from_ne_bytes(raw);
    if !signed {
        return Value::UInt(unsigned);
    }
    // Sign-extend from the field's width.
    let shift = 64 - 8 * n.max(1) as u32;
    Value::Int(((unsigned << shift) as i64) >> shift)
}

fn list(bytes: &[u8], element: usize, signed: bool) -> Value {
    Value::List(bytes.chunks_exact(element.max(1)).map(|chunk| integer(chunk, signed)).collect())
}

/// `field:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;`
fn parse_field(line: &str) -> Result<FieldFormat, String> {
    let mut declaration = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim) {
        if let Some(d) = part.strip_prefix("field:") {
            declaration = Some(d.trim());
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse::<usize>().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse::<usize>().ok();
        } else if let Some(s) = part.strip_prefix("signed:") {
            signed = s.trim() == "1";
        }
    }
    let (Some(declaration), Some(offset), Some(size)) = (declaration, offset, size) else {
        return Err(format!("malformed field line `{line}`"));
    };
    // "unsigned long args[6]" → type "unsigned long", name "args", count "6"
    let (type_name, name) =
        declaration.rsplit_once(' ').ok_or_else(|| format!("no type in `{declaration}`"))?;
    let (name, count) = match name.split_once('[') {
        Some((name, rest)) => (name, Some(rest.trim_end_matches(']'))),
        None => (name, None),
    };
    let type_name = type_name.trim().to_owned();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad field name in `{declaration}`"));
    }
    let dynamic = type_name.strip_prefix("__data_loc ").map(|t| (t, false));
    let dynamic = dynamic.or_else(|| type_name.strip_prefix("__rel_loc ").map(|t| (t, true)));
    let is_char =
        |t: &str| matches!(t.trim_end_matches("[]").trim(), "char" | "const char" | "unsigned char");
    let layout = match (dynamic, count) {
        (Some((element, relative)), _) if is_char(element) && element.ends_with("[]") => {
            Layout::DynamicString { relative }
        }
        (Some((element, relative)), _) => {
            Layout::DynamicArray { element: element_size(element.trim_end_matches("[]").trim()), relative }
        }
        (None, Some(_)) if is_char(&type_name) => Layout::Chars,
        (None, Some(count)) => {
            let element = count.parse::<usize>().ok().filter(|&c| c > 0).map_or(1, |c| (size / c).max(1));
            Layout::Array { element }
        }
        (None, None) if type_name.ends_with('*') => Layout::Pointer,
        (None, None) if matches!(size, 1 | 2 | 4 | 8) => Layout::Int,
        // A struct or an odd-sized member: its bytes.
        (None, None) => Layout::Array { element: 1 },
    };
    let dynamic_size_ok =
        !matches!(layout, Layout::DynamicString { .. } | Layout::DynamicArray { .. }) || size == 4;
    if !dynamic_size_ok {
        return Err(format!("dynamic field `{name}` of size {size}, expected 4"));
    }
    Ok(FieldFormat {
        name: name.into(),
        type_name,
        offset,
        size,
        signed,
        layout,
        common: name.starts_with("common_"),
        symbols: Symbols::new(),
    })
}

/// The size of a `__data_loc` array's elements, from their C type name.
fn element_size(type_name: &str) -> usize {
    let bare =
        type_name.trim_start_matches("const ").trim_start_matches("unsigned ").trim_start_matches("signed ");
    match bare {
        "char" | "u8" | "s8" | "__u8" | "__s8" | "bool" => 1,
        "short" | "u16" | "s16" | "__u16" | "__s16" => 2,
        "int" | "u32" | "s32" | "__u32" | "__s32" | "pid_t" | "uid_t" | "gid_t" => 4,
        "long" | "long long" | "u64" | "s64" | "__u64" | "__s64" | "size_t" | "dma_addr_t"
        | "phys_addr_t" => 8,
        _ if bare.ends_with('*') => 8,
        _ => 1,
    }
}

/// ` (did you mean sched:sched_process_fork?)` for a mistyped tracepoint, or nothing.
fn closest_tracepoints(events: &Path, category: &str, name: &str) -> String {
    let list = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let wanted = format!("{category}:{name}");
    let mut known = Vec::new();
    for cat in list(events) {
        // Only categories near the one asked for: reading all ~2000 names would be slow-ish and
        // noisy; a wrong category with a right name is still found through its name.
        for event in list(&events.join(&cat)) {
            if cat == category || event == name || strsim::jaro_winkler(&cat, category) > 0.85 {
                known.push(format!("{cat}:{event}"));
            }
        }
    }
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    crate::kernel::names::did_you_mean(&wanted, &known)
}

#[cfg(test)]
mod tests;
