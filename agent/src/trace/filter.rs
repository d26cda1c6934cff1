//! The `--where` language: comparisons of an event's fields with numbers and strings, joined by
//! `&&`, `||`, `!` and parentheses, bpftrace-style:
//!
//! ```text
//! ret < 0 && (comm == "nginx" || comm == "php-fpm*") && !(errno == "EAGAIN")
//! ```
//!
//! A string with `*`, `?` or `[...]` compared with `==` or `!=` is a glob (`"nginx*"` is a prefix
//! match). A bare field is true when it is a non-zero number or a non-empty string. Parsed with
//! winnow; every error carries the 1-based column it points at.

use std::fmt;

use winnow::{
    ModalResult, Parser,
    ascii::{digit1, hex_digit1, multispace0},
    combinator::{alt, cut_err, delimited, eof, opt, preceded, repeat, terminated},
    error::{StrContext, StrContextValue},
    stream::{LocatingSlice, Location as _},
    token::{none_of, one_of, take_while},
};

use crate::kernel::value::{Event, Kind, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        field: Field,
        op: Op,
        literal: Literal,
    },
    /// A bare field: non-zero, non-empty.
    Truthy(Field),
}

/// A field name and the byte offset it starts at (for errors found after parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Number(i128),
    Text(String),
}

/// A syntax or type error, with the input it was found in and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FilterError {
    pub input: String,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    /// One line for the message, then the expression and a caret under the column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pad = " ".repeat(self.column.saturating_sub(1));
        write!(f, "--where: {} at column {}\n  {}\n  {pad}^", self.message, self.column, self.input)
    }
}

type Input<'a> = LocatingSlice<&'a str>;

/// Parses an expression; the error points at the first character that does not fit.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let mut parser =
        terminated(or_expr, (multispace0, eof.context(expected("an operator, `&&`, `||` or `)`"))));
    parser.parse(LocatingSlice::new(input)).map_err(|err| {
        let context: Vec<String> = err
            .inner()
            .context()
            .filter_map(|c| match c {
                StrContext::Expected(StrContextValue::Description(d)) => Some((*d).to_owned()),
                StrContext::Label(l) => Some(format!("a {l}")),
                _ => None,
            })
            .collect();
        let offset = err.offset();
        let found = input[offset..].chars().next().map_or("the end".to_owned(), |c| format!("`{c}`"));
        let message = match context.first() {
            Some(expected) => format!("expected {expected}, found {found}"),
            None => format!("unexpected {found}"),
        };
        FilterError { input: input.to_owned(), column: column_of(input, offset), message }
    })
}

fn column_of(input: &str, byte_offset: usize) -> usize {
    input.get(..byte_offset).map_or(byte_offset, |before| before.chars().count()) + 1
}

fn expected(what: &'static str) -> StrContext {
    StrContext::Expected(StrContextValue::Description(what))
}

/// Skips whitespace, then runs `parser`.
fn token<'a, O>(
    parser: impl Parser<Input<'a>, O, winnow::error::ErrMode<winnow::error::ContextError>>,
) -> impl Parser<Input<'a>, O, winnow::error::ErrMode<winnow::error::ContextError>> {
    preceded(multispace0, parser)
}

fn or_expr(input: &mut Input<'_>) -> ModalResult<Expr> {
    let first = and_expr(input)?;
    let rest: Vec<Expr> = repeat(0.., preceded(token("||"), cut_err(and_expr))).parse_next(input)?;
    Ok(rest.into_iter().fold(first, |left, right| Expr::Or(Box::new(left), Box::new(right))))
}

fn and_expr(input: &mut Input<'_>) -> ModalResult<Expr> {
    let first = unary(input)?;
    let rest: Vec<Expr> = repeat(0.., preceded(token("&&"), cut_err(unary))).parse_next(input)?;
    Ok(rest.into_iter().fold(first, |left, right| Expr::And(Box::new(left), Box::new(right))))
}

fn unary(input: &mut Input<'_>) -> ModalResult<Expr> {
    alt((
        // `!` alone: `!=` is only ever found after a field.
        preceded(token(('!', winnow::combinator::not('='))), cut_err(unary)).map(|e| Expr::Not(Box::new(e))),
        primary,
    ))
    .parse_next(input)
}

fn primary(input: &mut Input<'_>) -> ModalResult<Expr> {
    alt((delimited(token('('), cut_err(or_expr), cut_err(token(')')).context(expected("`)`"))), comparison))
        .context(expected("a field, `!` or `(`"))
        .parse_next(input)
}

fn comparison(input: &mut Input<'_>) -> ModalResult<Expr> {
    let field = token(field).parse_next(input)?;
    let compared = opt((token(op), cut_err(token(literal)).context(expected("a number or a \"string\""))))
        .parse_next(input)?;
    Ok(match compared {
        Some((op, literal)) => Expr::Compare { field, op, literal },
        None => Expr::Truthy(field),
    })
}

fn field(input: &mut Input<'_>) -> ModalResult<Field> {
    let start = input.current_token_start();
    let name = (
        one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
        take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
    )
        .take()
        .parse_next(input)?;
    Ok(Field { name: name.to_owned(), offset: start })
}

fn op(input: &mut Input<'_>) -> ModalResult<Op> {
    alt((
        "==".value(Op::Eq),
        "!=".value(Op::Ne),
        "<=".value(Op::Le),
        ">=".value(Op::Ge),
        "<".value(Op::Lt),
        ">".value(Op::Gt),
    ))
    .parse_next(input)
}

fn literal(input: &mut Input<'_>) -> ModalResult<Literal> {
    alt((string.map(Literal::Text), number.map(Literal::Number))).parse_next(input)
}

fn number(input: &mut Input<'_>) -> ModalResult<i128> {
    let negative = opt('-').parse_next(input)?.is_some();
    let magnitude = alt((
        preceded(alt(("0x", "0X")), cut_err(hex_digit1).context(expected("hex digits")))
            .try_map(|digits| i128::from_str_radix(digits, 16)),
        digit1.try_map(str::parse::<i128>),
    ))
    .parse_next(input)?;
    Ok(if negative { -magnitude } else { magnitude })
}

fn string(input: &mut Input<'_>) -> ModalResult<String> {
    let chars: String = preceded(
        '"',
        cut_err(terminated(
            repeat(
                0..,
                alt((
                    none_of(['"', '\\']),
                    preceded(
                        '\\',
                        cut_err(alt(('"'.value('"'), '\\'.value('\\'), 'n'.value('\n'), 't'.value('\t'))))
                            .context(expected("an escape: \\\" \\\\ \\n \\t")),
                    ),
                )),
            ),
            '"',
        ))
        .context(expected("a closing `\"`")),
    )
    .parse_next(input)?;
    Ok(chars)
}

/// Checks an expression against the fields a trace has: unknown fields (with the closest
/// names) and numbers compared with strings are errors, found before any event.
pub fn check(input: &str, expr: &Expr, fields: &[(&str, Kind)]) -> Result<(), FilterError> {
    let error = |field: &Field, message: String| FilterError {
        input: input.to_owned(),
        column: column_of(input, field.offset),
        message,
    };
    match expr {
        Expr::Or(a, b) | Expr::And(a, b) => {
            check(input, a, fields)?;
            check(input, b, fields)
        }
        Expr::Not(e) => check(input, e, fields),
        Expr::Truthy(field) | Expr::Compare { field, .. } => {
            let Some((_, kind)) = fields.iter().find(|(name, _)| *name == field.name) else {
                let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
                return Err(error(
                    field,
                    format!(
                        "unknown field `{}`{}",
                        field.name,
                        crate::kernel::names::did_you_mean(&field.name, &names)
                    ),
                ));
            };
            match (expr, kind) {
                (Expr::Compare { literal: Literal::Number(_), .. }, Kind::Text) => {
                    Err(error(field, format!("`{}` is text: compare it with a \"string\"", field.name)))
                }
                (Expr::Compare { literal: Literal::Text(_), .. }, Kind::Number) => {
                    Err(error(field, format!("`{}` is a number: compare it with a number", field.name)))
                }
                (Expr::Compare { .. }, Kind::List) => {
                    Err(error(field, format!("`{}` is a list and cannot be compared", field.name)))
                }
                _ => Ok(()),
            }
        }
    }
}

impl Expr {
    /// Whether `event` matches. A missing field or a number compared with text never matches.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Self::Or(a, b) => a.matches(event) || b.matches(event),
            Self::And(a, b) => a.matches(event) && b.matches(event),
            Self::Not(e) => !e.matches(event),
            Self::Truthy(field) => match event.get(&field.name) {
                Some(Value::Str(s)) => !s.is_empty(),
                Some(Value::List(items)) => !items.is_empty(),
                Some(value) => value.as_i128().is_some_and(|v| v != 0),
                None => false,
            },
            Self::Compare { field, op, literal } => {
                let Some(value) = event.get(&field.name) else { return false };
                match (value, literal) {
                    (Value::Str(text), Literal::Text(pattern)) => compare_text(text, *op, pattern),
                    (value, Literal::Number(n)) => value.as_i128().is_some_and(|v| compare(&v, *op, n)),
                    _ => false,
                }
            }
        }
    }
}

fn compare<T: Ord>(a: &T, op: Op, b: &T) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
    }
}

fn compare_text(text: &str, op: Op, pattern: &str) -> bool {
    let is_glob = pattern.contains(['*', '?', '[']);
    match op {
        Op::Eq if is_glob => glob(pattern.as_bytes(), text.as_bytes()),
        Op::Ne if is_glob => !glob(pattern.as_bytes(), text.as_bytes()),
        _ => compare(&text, op, &pattern),
    }
}

/// Shell-style glob: `*` any run, `?` one byte, `[abc]` / `[a-z]` / `[!a]` one of a set.
/// Iterative with one backtrack point for the last `*`: linear in practice, never recursive.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, text[t]),
            Some(&c) if c == text[t] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_p, star_t))) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`: the index after `]`,
/// or `None`. An unclosed `[` is a literal `[`.
fn class(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let Some(close) = pattern[open + 1..].iter().skip(1).position(|&b| b == b']').map(|i| open + 2 + i)
    else {
        return (c == b'[').then_some(open + 1);
    };
    let mut set = &pattern[open + 1..close];
    let negated = matches!(set.first(), Some(b'!' | b'^'));
    if negated {
        set = &set[1..];
    }
    let mut found = false;
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == b'-' {
            found |= (set[i]..=set[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= set[i] == c;
            i += 1;
        }
    }
    (found != negated).then_some(close + 1)
}

#[cfg(test)]
mod tests;
