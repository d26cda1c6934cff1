//! What a traced event carries: named fields with typed values, in the order they were decoded.

use std::{fmt, rc::Rc};

/// A field's name, shared by every event of a trace. Counted without atomics: a trace is
/// decoded, enriched and printed on one thread, and an atomic increment and decrement per field
/// of every event were a tenth of the tracer's CPU (docs/performance.md, "The tracer: one
/// wakeup per wait, and a JSON line for less").
pub type Name = Rc<str>;

/// A text value, counted without atomics like `Name`. What many events carry alike (a
/// cgroup's path, container, pod and namespace, a syscall's name) is shared, not copied: a
/// copy per field of every event was an allocation, a copy and a free each.
pub type Text = Rc<str>;

/// The text of `bytes` up to their first NUL (a C string in a record), decoded lossily.
pub fn c_text(bytes: &[u8]) -> Text {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Text::from(&*String::from_utf8_lossy(&bytes[..end]))
}

/// A field's value, as decoded from a kernel record or computed by kernsight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Int(i64),
    UInt(u64),
    /// A kernel address: shown in hex, compared as a number.
    Pointer(u64),
    Str(Text),
    List(Vec<Value>),
}

impl Value {
    /// A text value of `text`.
    pub fn text(text: &str) -> Self {
        Self::Str(Text::from(text))
    }

    /// The empty text (shared: an empty `Text` of its own is an allocation).
    pub fn empty() -> Self {
        thread_local! {
            static EMPTY: Text = Text::from("");
        }
        Self::Str(EMPTY.with(Text::clone))
    }

    /// The value as a number, when it is one (for comparisons, sums and histograms).
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            Self::Int(v) => Some(i128::from(*v)),
            Self::UInt(v) | Self::Pointer(v) => Some(i128::from(*v)),
            Self::Str(_) | Self::List(_) => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Int(v) => (*v).into(),
            Self::UInt(v) => (*v).into(),
            Self::Pointer(v) => format!("{v:#x}").into(),
            Self::Str(s) => (**s).into(),
            Self::List(items) => items.iter().map(Self::to_json).collect::<Vec<_>>().into(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::UInt(v) => write!(f, "{v}"),
            Self::Pointer(v) => write!(f, "{v:#x}"),
            Self::Str(s) => f.write_str(s),
            Self::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The kinds of value a field can hold, known before any event arrives (to check filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Text,
    List,
}

/// One event: its fields in display order. Names are shared between events of one trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub fields: Vec<(Name, Value)>,
}

impl Event {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn push(&mut self, name: &Name, value: Value) {
        self.fields.push((Name::clone(name), value));
    }
}
