//! The small OData `$filter` subset the services accept: `eq ne gt ge lt le`, `and`, `or`,
//! parentheses, `startswith(field,'x')`, quoted strings, numbers, unquoted dates, booleans.

use time::OffsetDateTime;

use crate::model::ts;

/// A field value of an entity, as the filter compares it.
#[derive(Debug, Clone)]
pub enum Val {
    Str(String),
    Num(f64),
    Date(OffsetDateTime),
    Bool(bool),
    List(Vec<String>),
    Null,
}

/// Entities that expose named fields to `$filter`.
pub trait Filterable {
    /// The value of `field`, or `None` when the field can't be filtered on.
    fn field(&self, name: &str) -> Option<Val>;
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed filter expression.
#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(String, Op, Val),
    StartsWith(String, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' | '+' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < chars.len() && !matches!(chars[i], ' ' | '(' | ')' | ',' | '\'' | '+') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.term()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn expect(&mut self, t: &Tok) -> Result<(), String> {
        match self.next() {
            Some(ref got) if got == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Ident(name)) if name.eq_ignore_ascii_case("startswith") => {
                self.expect(&Tok::LParen)?;
                let Some(Tok::Ident(field)) = self.next() else {
                    return Err("startswith needs a field name".into());
                };
                self.expect(&Tok::Comma)?;
                let Some(Tok::Str(prefix)) = self.next() else {
                    return Err("startswith needs a quoted prefix".into());
                };
                self.expect(&Tok::RParen)?;
                Ok(Expr::StartsWith(field, prefix))
            }
            Some(Tok::Ident(field)) => {
                let op = match self.next() {
                    Some(Tok::Ident(op)) => match op.to_ascii_lowercase().as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "gt" => Op::Gt,
                        "ge" => Op::Ge,
                        "lt" => Op::Lt,
                        "le" => Op::Le,
                        other => return Err(format!("unknown operator '{other}'")),
                    },
                    other => return Err(format!("expected an operator, found {other:?}")),
                };
                let value = match self.next() {
                    Some(Tok::Str(s)) => Val::Str(s),
                    Some(Tok::Ident(lit)) => literal(&lit)?,
                    other => return Err(format!("expected a value, found {other:?}")),
                };
                Ok(Expr::Cmp(field, op, value))
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn literal(lit: &str) -> Result<Val, String> {
    match lit.to_ascii_lowercase().as_str() {
        "true" => return Ok(Val::Bool(true)),
        "false" => return Ok(Val::Bool(false)),
        "null" => return Ok(Val::Null),
        _ => {}
    }
    if lit.contains('-')
        && lit.len() >= 10
        && let Some(t) = ts::parse(lit)
    {
        return Ok(Val::Date(t));
    }
    lit.parse::<f64>()
        .map(Val::Num)
        .map_err(|_| format!("invalid literal '{lit}'"))
}

/// Parses a `$filter` value.
///
/// # Errors
/// A message saying what is wrong with the expression.
pub fn parse(filter: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokenize(filter)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

impl Expr {
    /// Checks every field name against `entity`, so unknown fields fail before any match.
    ///
    /// # Errors
    /// The first unknown field name.
    pub fn check_fields(&self, entity: &impl Filterable) -> Result<(), String> {
        match self {
            Self::And(a, b) | Self::Or(a, b) => {
                a.check_fields(entity)?;
                b.check_fields(entity)
            }
            Self::Cmp(f, _, _) | Self::StartsWith(f, _) => entity
                .field(f)
                .map(|_| ())
                .ok_or_else(|| format!("Could not find a property named '{f}'")),
        }
    }

    /// Evaluates the expression on `entity` (unknown fields never match).
    pub fn matches(&self, entity: &impl Filterable) -> bool {
        match self {
            Self::And(a, b) => a.matches(entity) && b.matches(entity),
            Self::Or(a, b) => a.matches(entity) || b.matches(entity),
            Self::StartsWith(f, prefix) => match entity.field(f) {
                Some(Val::Str(s)) => s.to_lowercase().starts_with(&prefix.to_lowercase()),
                _ => false,
            },
            Self::Cmp(f, op, v) => entity
                .field(f)
                .is_some_and(|actual| compare(&actual, *op, v)),
        }
    }
}

fn compare(actual: &Val, op: Op, want: &Val) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (actual, want) {
        (Val::Str(a), Val::Str(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Num(a), Val::Str(b)) => b.parse::<f64>().ok().and_then(|b| a.partial_cmp(&b)),
        (Val::Date(a), Val::Date(b)) => Some(a.cmp(b)),
        (Val::Date(a), Val::Str(b)) => ts::parse(b).map(|b| a.cmp(&b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::List(items), Val::Str(b)) => {
            let has = items.iter().any(|i| i.eq_ignore_ascii_case(b));
            return match op {
                Op::Eq => has,
                Op::Ne => !has,
                _ => false,
            };
        }
        (Val::Null, Val::Null) => Some(Ordering::Equal),
        (Val::Null, _) | (_, Val::Null) => {
            return op == Op::Ne;
        }
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
    }
}

/// Wraps an optional string field.
pub(crate) fn opt_str(s: &Option<String>) -> Val {
    s.as_ref().map_or(Val::Null, |s| Val::Str(s.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E;
    impl Filterable for E {
        fn field(&self, name: &str) -> Option<Val> {
            match name {
                "name" => Some(Val::Str("Fin-LT-01.contoso.com".into())),
                "lastSeen" => Some(Val::Date(
                    ts::parse("2026-11-05T10:00:00Z").expect("valid date"),
                )),
                "rbacGroupId" => Some(Val::Num(412.0)),
                "tags" => Some(Val::List(vec!["DoNotOffboard".into()])),
                _ => None,
            }
        }
    }

    #[test]
    fn the_documented_examples_parse_and_match() {
        for (f, want) in [
            ("name eq 'fin-lt-01.contoso.com'", true),
            ("startswith(name,'fin-')", true),
            ("lastSeen gt 2018-08-01Z", true),
            (
                "lastSeen lt 2026-11-05T00:00:00Z and rbacGroupId eq 412",
                false,
            ),
            ("rbacGroupId ge 400 and (name ne 'x' or tags eq 'y')", true),
            ("tags eq 'donotoffboard'", true),
        ] {
            let e = parse(f).expect("parses");
            assert_eq!(e.matches(&E), want, "{f}");
        }
    }

    #[test]
    fn bad_filters_are_errors() {
        for f in [
            "name eq",
            "name xx 'a'",
            "(name eq 'a'",
            "startswith(name)",
            "'a",
        ] {
            assert!(parse(f).is_err(), "{f}");
        }
        let e = parse("nope eq 'a'").expect("parses");
        assert!(e.check_fields(&E).is_err());
    }
}
