//! The subset of ECS's cluster query language that `memberOf(...)` accepts.
//!
//! ```text
//! expr      := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" expr ")" | predicate
//! predicate := subject ( ("==" | "equals" | "!=" | "not_equals") value
//!                      | ("=~" | "matches" | "!~" | "not_matches") value
//!                      | ("in" | "!in" | "not_in") "[" value ("," value)* "]"
//!                      | "exists" | "!exists" | "not_exists" )
//! subject   := "attribute:"NAME | "instanceId" | "ec2InstanceId" | "task:group"
//! value     := bare word | "double quoted" | 'single quoted'
//! ```
//!
//! Keywords and subjects are case-insensitive; attribute names and values
//! are not. `=~` is a wildcard match, not a regular expression: `*` matches
//! any run of characters and everything else matches itself, so ECS's usual
//! `attribute:ecs.instance-type =~ t2.*` means what people expect, while
//! regex syntax such as `[0-9]` is taken literally. (A regex engine would be a
//! dependency and a new way for a user to write a slow or surprising
//! constraint, for little gain in placement rules.)
//!
//! A comparison with an attribute the instance does not have is false; its
//! negation (`!=`, `not_in`, `!~`, `not_exists`) is true, so `not (a == b)`
//! and `a != b` always agree. `task:group` compares against the groups of the
//! tasks on the instance: `==`, `in`, `=~` and `exists` hold when any task
//! matches, and their negations when none does (ECS-style affinity and
//! anti-affinity).
//!
//! Columns in errors count characters from 1 at the start of the expression
//! (the text inside `memberOf(...)`).

use std::fmt;

/// What a `memberOf` condition tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Attribute(String),
    InstanceId,
    TaskGroup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Matches(String),
    NotMatches(String),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    pub subject: Subject,
    pub op: Op,
}

/// A parsed `memberOf` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Pred(Predicate),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A syntax error in a `memberOf` expression, with the column (from 1) where
/// it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("memberOf expression: empty; write a condition such as attribute:os == linux")]
    Empty,
    #[error("memberOf expression: unterminated string starting at column {column}; close it with {quote:?}")]
    UnterminatedString { column: usize, quote: char },
    #[error("memberOf expression: unexpected {ch:?} at column {column}; {hint}")]
    UnexpectedChar {
        ch: char,
        column: usize,
        hint: &'static str,
    },
    #[error("memberOf expression: unmatched ')' at column {column}")]
    UnmatchedParen { column: usize },
    #[error("memberOf expression: expected {expected} at column {column}, found {found}")]
    Expected {
        expected: String,
        column: usize,
        found: String,
    },
}

impl ExprError {
    /// Column (from 1) of the problem, where there is one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ExprError::Empty => None,
            ExprError::UnterminatedString { column, .. }
            | ExprError::UnexpectedChar { column, .. }
            | ExprError::UnmatchedParen { column }
            | ExprError::Expected { column, .. } => Some(*column),
        }
    }
}

/// The facts about one instance that an expression can test.
pub(crate) trait Facts {
    fn attribute(&self, name: &str) -> Option<&str>;
    fn instance_id(&self) -> &str;
    /// Whether any task group on the instance satisfies `pred`.
    fn any_group(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser { tokens, pos: 0 };
        if parser.peek().kind == Kind::End {
            return Err(ExprError::Empty);
        }
        let expr = parser.or_expr(None)?;
        let tok = parser.peek();
        match tok.kind {
            Kind::End => Ok(expr),
            Kind::RParen => Err(ExprError::UnmatchedParen { column: tok.column }),
            _ => Err(parser.expected("'and', 'or' or the end of the expression")),
        }
    }

    /// Whether the expression looks at the tasks on an instance, which change
    /// as tasks are placed; everything else about an instance is fixed during
    /// a decision.
    pub fn uses_task_groups(&self) -> bool {
        match self {
            Expr::Pred(p) => p.subject == Subject::TaskGroup,
            Expr::Not(e) => e.uses_task_groups(),
            Expr::And(a, b) | Expr::Or(a, b) => a.uses_task_groups() || b.uses_task_groups(),
        }
    }

    /// Whether the instance satisfies the expression.
    pub fn matches(&self, instance: &crate::InstanceView) -> bool {
        self.eval(&crate::view::InstanceFacts {
            instance,
            extra_group: None,
        })
    }

    pub(crate) fn eval(&self, facts: &dyn Facts) -> bool {
        match self {
            Expr::Pred(p) => p.eval(facts),
            Expr::Not(e) => !e.eval(facts),
            Expr::And(a, b) => a.eval(facts) && b.eval(facts),
            Expr::Or(a, b) => a.eval(facts) || b.eval(facts),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(..) => 1,
            Expr::And(..) => 2,
            Expr::Not(_) => 3,
            Expr::Pred(_) => 4,
        }
    }
}

impl Predicate {
    fn eval(&self, facts: &dyn Facts) -> bool {
        match &self.subject {
            Subject::Attribute(name) => eval_one(&self.op, facts.attribute(name)),
            Subject::InstanceId => eval_one(&self.op, Some(facts.instance_id())),
            Subject::TaskGroup => {
                // Negated operators hold when no group satisfies the positive
                // form, which is what anti-affinity needs.
                let (positive, negated) = positive_form(&self.op);
                let any = match &positive {
                    Positive::Exists => facts.any_group(&mut |_| true),
                    Positive::Eq(v) => facts.any_group(&mut |g| g == v.as_str()),
                    Positive::In(vs) => facts.any_group(&mut |g| vs.iter().any(|v| v == g)),
                    Positive::Matches(p) => facts.any_group(&mut |g| glob_match(p, g)),
                };
                any != negated
            }
        }
    }
}

enum Positive<'a> {
    Exists,
    Eq(&'a String),
    In(&'a Vec<String>),
    Matches(&'a String),
}

fn positive_form(op: &Op) -> (Positive<'_>, bool) {
    match op {
        Op::Eq(v) => (Positive::Eq(v), false),
        Op::Ne(v) => (Positive::Eq(v), true),
        Op::In(vs) => (Positive::In(vs), false),
        Op::NotIn(vs) => (Positive::In(vs), true),
        Op::Matches(p) => (Positive::Matches(p), false),
        Op::NotMatches(p) => (Positive::Matches(p), true),
        Op::Exists => (Positive::Exists, false),
        Op::NotExists => (Positive::Exists, true),
    }
}

fn eval_one(op: &Op, value: Option<&str>) -> bool {
    let (positive, negated) = positive_form(op);
    let holds = match (positive, value) {
        (_, None) => false,
        (Positive::Exists, Some(_)) => true,
        (Positive::Eq(v), Some(x)) => v == x,
        (Positive::In(vs), Some(x)) => vs.iter().any(|v| v == x),
        (Positive::Matches(p), Some(x)) => glob_match(p, x),
    };
    holds != negated
}

/// `*` matches any run of characters (including none); every other character
/// matches itself. Linear backtracking on the last `*` keeps this
/// O(pattern × text) in the worst case, so no input can make it explode.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Bytes are safe here: '*' is ASCII, so it never splits a UTF-8 sequence,
    // and literal bytes must match whole sequences to match at all.
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

// ---------------------------------------------------------------- tokenizer

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// `==`, `!=`, `=~`, `!~`
    Sym(&'static str),
    Word(String),
    Quoted(String),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::LParen => "'('".into(),
            Kind::RParen => "')'".into(),
            Kind::LBracket => "'['".into(),
            Kind::RBracket => "']'".into(),
            Kind::Comma => "','".into(),
            Kind::Sym(s) => format!("'{s}'"),
            Kind::Word(w) => format!("'{w}'"),
            Kind::Quoted(q) => format!("{q:?}"),
            Kind::End => "the end of the expression".into(),
        }
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(&self.kind, Kind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !"()[],\"'=!~<>&|".contains(c)
}

fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        let simple = |kind| Token { kind, column };
        match c {
            c if c.is_whitespace() => {
                i += 1;
            }
            '(' | ')' | '[' | ']' | ',' => {
                tokens.push(simple(match c {
                    '(' => Kind::LParen,
                    ')' => Kind::RParen,
                    '[' => Kind::LBracket,
                    ']' => Kind::RBracket,
                    _ => Kind::Comma,
                }));
                i += 1;
            }
            '=' => {
                let sym = match next {
                    Some('=') => "==",
                    Some('~') => "=~",
                    _ => {
                        return Err(ExprError::UnexpectedChar {
                            ch: '=',
                            column,
                            hint: "compare with '==' (or '=~' for a wildcard match)",
                        })
                    }
                };
                tokens.push(simple(Kind::Sym(sym)));
                i += 2;
            }
            '!' => match next {
                Some('=') => {
                    tokens.push(simple(Kind::Sym("!=")));
                    i += 2;
                }
                Some('~') => {
                    tokens.push(simple(Kind::Sym("!~")));
                    i += 2;
                }
                // `!in` and `!exists` are operator words.
                Some(n) if n.is_alphabetic() => {
                    let end = scan_word(&chars, i + 1);
                    let word: String = chars[i..end].iter().collect();
                    tokens.push(simple(Kind::Word(word)));
                    i = end;
                }
                _ => {
                    return Err(ExprError::UnexpectedChar {
                        ch: '!',
                        column,
                        hint: "negate with 'not', or compare with '!=', '!~', '!in' or '!exists'",
                    })
                }
            },
            '"' | '\'' => {
                let close = chars[i + 1..].iter().position(|&q| q == c).ok_or(
                    ExprError::UnterminatedString {
                        column,
                        quote: c,
                    },
                )?;
                let value: String = chars[i + 1..i + 1 + close].iter().collect();
                tokens.push(simple(Kind::Quoted(value)));
                i += close + 2;
            }
            '~' => {
                return Err(ExprError::UnexpectedChar {
                    ch: '~',
                    column,
                    hint: "match with '=~' or '!~'",
                })
            }
            '<' | '>' => {
                return Err(ExprError::UnexpectedChar {
                    ch: c,
                    column,
                    hint: "ordering comparisons are not supported; use ==, !=, in, not_in, =~, !~ or exists",
                })
            }
            '&' | '|' => {
                return Err(ExprError::UnexpectedChar {
                    ch: c,
                    column,
                    hint: "combine conditions with 'and' or 'or'",
                })
            }
            _ => {
                let end = scan_word(&chars, i);
                let word: String = chars[i..end].iter().collect();
                tokens.push(simple(Kind::Word(word)));
                i = end;
            }
        }
    }
    tokens.push(Token {
        kind: Kind::End,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

fn scan_word(chars: &[char], from: usize) -> usize {
    let mut end = from;
    while end < chars.len() && is_word_char(chars[end]) {
        end += 1;
    }
    end
}

// ------------------------------------------------------------------- parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

const CONDITION: &str = "a condition (attribute:NAME, instanceId, task:group, 'not' or '(')";
const OPERATORS: &str = "==, !=, =~, !~, in, not_in, exists or not_exists";

impl Parser {
    fn peek(&self) -> &Token {
        // The tokenizer always ends the list with `End`, and the parser never
        // advances past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let tok = self.peek().clone();
        if tok.kind != Kind::End {
            self.pos += 1;
        }
        tok
    }

    fn expected(&self, what: impl Into<String>) -> ExprError {
        let tok = self.peek();
        ExprError::Expected {
            expected: what.into(),
            column: tok.column,
            found: tok.describe(),
        }
    }

    /// `after` names what came just before, so that a missing operand is
    /// reported as "expected a condition after 'and'".
    fn or_expr(&mut self, after: Option<&str>) -> Result<Expr, ExprError> {
        let mut left = self.and_expr(after)?;
        while self.peek().is_word("or") {
            self.advance();
            let right = self.and_expr(Some("'or'"))?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self, after: Option<&str>) -> Result<Expr, ExprError> {
        let mut left = self.unary(after)?;
        while self.peek().is_word("and") {
            self.advance();
            let right = self.unary(Some("'and'"))?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, after: Option<&str>) -> Result<Expr, ExprError> {
        let tok = self.peek().clone();
        if tok.is_word("not") {
            self.advance();
            return Ok(Expr::Not(Box::new(self.unary(Some("'not'"))?)));
        }
        match &tok.kind {
            Kind::LParen => {
                self.advance();
                let inner = self.or_expr(Some("'('"))?;
                if self.peek().kind == Kind::RParen {
                    self.advance();
                    Ok(inner)
                } else {
                    Err(self.expected(format!(
                        "'and', 'or' or ')' closing the '(' at column {}",
                        tok.column
                    )))
                }
            }
            Kind::Word(word) => {
                let Some(subject) = self.subject(word, tok.column)? else {
                    return Err(self.expected(with_after(CONDITION, after)));
                };
                self.advance();
                let op = self.operator(word)?;
                Ok(Expr::Pred(Predicate { subject, op }))
            }
            _ => Err(self.expected(with_after(CONDITION, after))),
        }
    }

    /// `Ok(None)` when the word is not a subject at all.
    fn subject(&self, word: &str, column: usize) -> Result<Option<Subject>, ExprError> {
        const PREFIX: &str = "attribute:";
        if word.len() >= PREFIX.len()
            && word.is_char_boundary(PREFIX.len())
            && word[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        {
            let name = &word[PREFIX.len()..];
            if name.is_empty() {
                // The name is missing inside the word; point at what follows.
                let next = self
                    .tokens
                    .get(self.pos + 1)
                    .cloned()
                    .unwrap_or_else(|| Token {
                        kind: Kind::End,
                        column: column + PREFIX.len(),
                    });
                return Err(ExprError::Expected {
                    expected: "an attribute name after 'attribute:'".into(),
                    column: next.column,
                    found: next.describe(),
                });
            }
            return Ok(Some(Subject::Attribute(name.to_string())));
        }
        if word.eq_ignore_ascii_case("instanceId") || word.eq_ignore_ascii_case("ec2InstanceId") {
            return Ok(Some(Subject::InstanceId));
        }
        if word.eq_ignore_ascii_case("task:group") {
            return Ok(Some(Subject::TaskGroup));
        }
        Ok(None)
    }

    fn operator(&mut self, subject: &str) -> Result<Op, ExprError> {
        let tok = self.peek().clone();
        let name: String = match &tok.kind {
            Kind::Sym(s) => (*s).to_string(),
            Kind::Word(w) => w.to_ascii_lowercase(),
            _ => String::new(),
        };
        let op_text = match &tok.kind {
            Kind::Sym(s) => (*s).to_string(),
            Kind::Word(w) => w.clone(),
            _ => String::new(),
        };
        let op = match name.as_str() {
            "==" | "equals" => {
                self.advance();
                Op::Eq(self.value(&op_text)?)
            }
            "!=" | "not_equals" => {
                self.advance();
                Op::Ne(self.value(&op_text)?)
            }
            "=~" | "matches" => {
                self.advance();
                Op::Matches(self.value(&op_text)?)
            }
            "!~" | "not_matches" => {
                self.advance();
                Op::NotMatches(self.value(&op_text)?)
            }
            "in" => {
                self.advance();
                Op::In(self.list(&op_text)?)
            }
            "!in" | "not_in" => {
                self.advance();
                Op::NotIn(self.list(&op_text)?)
            }
            "exists" => {
                self.advance();
                Op::Exists
            }
            "!exists" | "not_exists" => {
                self.advance();
                Op::NotExists
            }
            _ => {
                return Err(self.expected(format!("an operator ({OPERATORS}) after '{subject}'")));
            }
        };
        Ok(op)
    }

    fn value(&mut self, after: &str) -> Result<String, ExprError> {
        let tok = self.peek().clone();
        match tok.kind {
            Kind::Quoted(v) => {
                self.advance();
                Ok(v)
            }
            Kind::Word(w) if is_keyword(&w) => Err(ExprError::Expected {
                expected: format!("a value after '{after}'"),
                column: tok.column,
                found: format!("the keyword '{w}' (quote it to use it as a value: \"{w}\")"),
            }),
            Kind::Word(w) => {
                self.advance();
                Ok(w)
            }
            _ => Err(self.expected(format!("a value after '{after}'"))),
        }
    }

    fn list(&mut self, op: &str) -> Result<Vec<String>, ExprError> {
        let open = self.peek().clone();
        if open.kind != Kind::LBracket {
            return Err(self.expected(format!("'[' starting the list of values after '{op}'")));
        }
        self.advance();
        let mut values = vec![self.value("[")?];
        loop {
            match self.peek().kind {
                Kind::Comma => {
                    self.advance();
                    values.push(self.value(",")?);
                }
                Kind::RBracket => {
                    self.advance();
                    return Ok(values);
                }
                _ => {
                    return Err(self.expected(format!(
                        "',' or ']' closing the '[' at column {}",
                        open.column
                    )))
                }
            }
        }
    }
}

fn with_after(what: &str, after: Option<&str>) -> String {
    match after {
        Some(a) => format!("{what} after {a}"),
        None => what.to_string(),
    }
}

fn is_keyword(word: &str) -> bool {
    ["and", "or", "not"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

// ------------------------------------------------------------------ display

fn write_value(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let bare = !value.is_empty()
        && value.chars().all(is_word_char)
        && !is_keyword(value)
        && !value.starts_with('!');
    if bare {
        f.write_str(value)
    } else if value.contains('"') {
        write!(f, "'{value}'")
    } else {
        write!(f, "\"{value}\"")
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, values: &[String]) -> fmt::Result {
    f.write_str("[")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_value(f, v)?;
    }
    f.write_str("]")
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::InstanceId => f.write_str("instanceId"),
            Subject::TaskGroup => f.write_str("task:group"),
        }
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.subject)?;
        match &self.op {
            Op::Eq(v) => {
                f.write_str("== ")?;
                write_value(f, v)
            }
            Op::Ne(v) => {
                f.write_str("!= ")?;
                write_value(f, v)
            }
            Op::Matches(v) => {
                f.write_str("=~ ")?;
                write_value(f, v)
            }
            Op::NotMatches(v) => {
                f.write_str("!~ ")?;
                write_value(f, v)
            }
            Op::In(vs) => {
                f.write_str("in ")?;
                write_list(f, vs)
            }
            Op::NotIn(vs) => {
                f.write_str("not_in ")?;
                write_list(f, vs)
            }
            Op::Exists => f.write_str("exists"),
            Op::NotExists => f.write_str("not_exists"),
        }
    }
}

/// Canonical text that parses back to the same expression.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Binary operators parse left-associatively, so a right operand of
        // the same precedence needs parentheses to round-trip.
        let child = |f: &mut fmt::Formatter<'_>, e: &Expr, min: u8| -> fmt::Result {
            if e.precedence() < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::Pred(p) => write!(f, "{p}"),
            Expr::Not(e) => {
                f.write_str("not ")?;
                child(f, e, 3)
            }
            Expr::And(a, b) => {
                child(f, a, 2)?;
                f.write_str(" and ")?;
                child(f, b, 3)
            }
            Expr::Or(a, b) => {
                child(f, a, 1)?;
                f.write_str(" or ")?;
                child(f, b, 2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fake {
        id: &'static str,
        attrs: BTreeMap<&'static str, &'static str>,
        groups: Vec<&'static str>,
    }

    impl Facts for Fake {
        fn attribute(&self, name: &str) -> Option<&str> {
            self.attrs.get(name).copied()
        }
        fn instance_id(&self) -> &str {
            self.id
        }
        fn any_group(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
            self.groups.iter().any(|g| pred(g))
        }
    }

    fn linux_a() -> Fake {
        Fake {
            id: "i-0abc",
            attrs: [
                ("os", "linux"),
                ("zone", "a"),
                ("ecs.instance-type", "t2.small"),
            ]
            .into_iter()
            .collect(),
            groups: vec!["service:web", "family:batch"],
        }
    }

    fn eval(text: &str) -> bool {
        Expr::parse(text).unwrap().eval(&linux_a())
    }

    fn err(text: &str) -> String {
        Expr::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn comparisons() {
        assert!(eval("attribute:os == linux"));
        assert!(eval("attribute:os==linux"));
        assert!(eval("attribute:os equals linux"));
        assert!(!eval("attribute:os != linux"));
        assert!(eval("attribute:os not_equals windows"));
        assert!(eval("attribute:zone in [a, b]"));
        assert!(eval("attribute:zone in [\"a\"]"));
        assert!(!eval("attribute:zone not_in [a,b]"));
        assert!(eval("attribute:zone !in [b, c]"));
        assert!(eval("attribute:ecs.instance-type =~ t2.*"));
        assert!(eval("attribute:ecs.instance-type matches *small"));
        assert!(!eval("attribute:ecs.instance-type =~ m5.*"));
        assert!(eval("attribute:ecs.instance-type !~ m5.*"));
        assert!(eval("attribute:ecs.instance-type not_matches m5*"));
        assert!(eval("attribute:os exists"));
        assert!(eval("attribute:gpu !exists"));
        assert!(eval("attribute:gpu not_exists"));
        assert!(eval("instanceId == i-0abc"));
        assert!(eval("ec2InstanceId in [i-1, i-0abc]"));
        assert!(eval("INSTANCEID =~ i-0*"));
        assert!(eval("attribute:os == 'linux'"));
    }

    #[test]
    fn missing_attribute_is_false_and_its_negation_true() {
        for (pos, neg) in [
            ("attribute:gpu == x", "attribute:gpu != x"),
            ("attribute:gpu in [x]", "attribute:gpu not_in [x]"),
            ("attribute:gpu =~ *", "attribute:gpu !~ *"),
            ("attribute:gpu exists", "attribute:gpu not_exists"),
        ] {
            assert!(!eval(pos), "{pos}");
            assert!(eval(neg), "{neg}");
        }
    }

    #[test]
    fn task_group_affinity() {
        assert!(eval("task:group == service:web"));
        assert!(!eval("task:group != service:web"));
        assert!(eval("task:group != service:db"));
        assert!(eval("task:group in [service:db, family:batch]"));
        assert!(eval("task:group =~ family:*"));
        assert!(!eval("task:group !~ service:*"));
        assert!(eval("task:group exists"));
        let empty = Fake {
            id: "i-1",
            attrs: BTreeMap::new(),
            groups: vec![],
        };
        let e = Expr::parse("task:group not_exists").unwrap();
        assert!(e.eval(&empty));
        assert!(!e.eval(&linux_a()));
        assert!(e.uses_task_groups());
        assert!(!Expr::parse("attribute:a == b or not instanceId exists")
            .unwrap()
            .uses_task_groups());
    }

    #[test]
    fn precedence_not_and_or_and_parentheses() {
        // not > and > or
        assert!(eval(
            "attribute:os == windows or attribute:zone == a and attribute:os == linux"
        ));
        assert!(!eval(
            "(attribute:os == windows or attribute:zone == a) and attribute:os == mac"
        ));
        assert!(eval("not attribute:os == windows and attribute:zone == a"));
        assert!(!eval("not (attribute:os == linux and attribute:zone == a)"));
        assert!(eval("NOT NOT attribute:os == linux"));
        assert!(eval(
            "attribute:os == linux AND attribute:zone == a OR instanceId == x"
        ));
        assert!(eval("((attribute:os == linux))"));
        let e = Expr::parse("a == 1").err();
        assert!(e.is_some());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "attribute:os == linux",
            "attribute:a == x or attribute:b == y and not attribute:c exists",
            "(attribute:a == x or attribute:b == y) and attribute:c in [p, \"q r\", 'has \"quote']",
            "attribute:a == x or (attribute:b == y or attribute:c == z)",
            "not (attribute:a == \"and\" and instanceId != i-1)",
            "task:group =~ service:* and attribute:z not_in [a, b] or attribute:q !~ \"\"",
            "attribute:x not_exists and attribute:y matches \"!bang\"",
        ] {
            let e = Expr::parse(text).unwrap();
            let shown = e.to_string();
            assert_eq!(Expr::parse(&shown).unwrap(), e, "{text} -> {shown}");
        }
        assert_eq!(
            Expr::parse("attribute:os==linux  AND(zone_is_missing_ok)")
                .err()
                .map(|e| e.column()),
            Some(Some(26))
        );
    }

    #[test]
    fn glob() {
        assert!(glob_match("", ""));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("t2.*", "t2.small"));
        assert!(!glob_match("t2.*", "t3.small"));
        assert!(glob_match("*.large", "m5.large"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("**a", "a"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("[0-9]", "5"), "regex syntax is literal");
        assert!(glob_match("[0-9]", "[0-9]"));
        assert!(glob_match("zo*e-é", "zone-é"));
        // Pathological input stays fast (no exponential backtracking).
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "a*".repeat(50));
        assert!(!glob_match(&pattern, &text));
    }

    // Every distinct parse error, with its exact message.
    #[test]
    fn parse_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "memberOf expression: empty; write a condition such as attribute:os == linux"),
            ("   ", "memberOf expression: empty; write a condition such as attribute:os == linux"),
            (
                "attribute:os == ",
                "memberOf expression: expected a value after '==' at column 17, found the end of the expression",
            ),
            (
                "attribute:zone == ",
                "memberOf expression: expected a value after '==' at column 19, found the end of the expression",
            ),
            (
                "attribute:os == and",
                "memberOf expression: expected a value after '==' at column 17, found the keyword 'and' (quote it to use it as a value: \"and\")",
            ),
            (
                "attribute:os != )",
                "memberOf expression: expected a value after '!=' at column 17, found ')'",
            ),
            (
                "attribute:os =~ [",
                "memberOf expression: expected a value after '=~' at column 17, found '['",
            ),
            (
                "attribute:os matches",
                "memberOf expression: expected a value after 'matches' at column 21, found the end of the expression",
            ),
            (
                "attribute:os linux",
                "memberOf expression: expected an operator (==, !=, =~, !~, in, not_in, exists or not_exists) after 'attribute:os' at column 14, found 'linux'",
            ),
            (
                "attribute:os",
                "memberOf expression: expected an operator (==, !=, =~, !~, in, not_in, exists or not_exists) after 'attribute:os' at column 13, found the end of the expression",
            ),
            (
                "attribute: == linux",
                "memberOf expression: expected an attribute name after 'attribute:' at column 12, found '=='",
            ),
            (
                "attribute:",
                "memberOf expression: expected an attribute name after 'attribute:' at column 11, found the end of the expression",
            ),
            (
                "zone == a",
                "memberOf expression: expected a condition (attribute:NAME, instanceId, task:group, 'not' or '(') at column 1, found 'zone'",
            ),
            (
                "\"attribute:os\" == a",
                "memberOf expression: expected a condition (attribute:NAME, instanceId, task:group, 'not' or '(') at column 1, found \"attribute:os\"",
            ),
            (
                "attribute:os == linux and",
                "memberOf expression: expected a condition (attribute:NAME, instanceId, task:group, 'not' or '(') after 'and' at column 26, found the end of the expression",
            ),
            (
                "attribute:os == linux or or",
                "memberOf expression: expected a condition (attribute:NAME, instanceId, task:group, 'not' or '(') after 'or' at column 26, found 'or'",
            ),
            (
                "not",
                "memberOf expression: expected a condition (attribute:NAME, instanceId, task:group, 'not' or '(') after 'not' at column 4, found the end of the expression",
            ),
            (
                "()",
                "memberOf expression: expected a condition (attribute:NAME, instanceId, task:group, 'not' or '(') after '(' at column 2, found ')'",
            ),
            (
                "(attribute:os == linux",
                "memberOf expression: expected 'and', 'or' or ')' closing the '(' at column 1 at column 23, found the end of the expression",
            ),
            (
                "attribute:os == linux)",
                "memberOf expression: unmatched ')' at column 22",
            ),
            (
                "attribute:os == linux attribute:zone == a",
                "memberOf expression: expected 'and', 'or' or the end of the expression at column 23, found 'attribute:zone'",
            ),
            (
                "attribute:zone in a, b",
                "memberOf expression: expected '[' starting the list of values after 'in' at column 19, found 'a'",
            ),
            (
                "attribute:zone not_in []",
                "memberOf expression: expected a value after '[' at column 24, found ']'",
            ),
            (
                "attribute:zone in [a,]",
                "memberOf expression: expected a value after ',' at column 22, found ']'",
            ),
            (
                "attribute:zone in [a b]",
                "memberOf expression: expected ',' or ']' closing the '[' at column 19 at column 22, found 'b'",
            ),
            (
                "attribute:zone !in [a",
                "memberOf expression: expected ',' or ']' closing the '[' at column 20 at column 22, found the end of the expression",
            ),
            (
                "attribute:os == \"linux",
                "memberOf expression: unterminated string starting at column 17; close it with '\"'",
            ),
            (
                "attribute:os == 'linux",
                "memberOf expression: unterminated string starting at column 17; close it with '\\''",
            ),
            (
                "attribute:os = linux",
                "memberOf expression: unexpected '=' at column 14; compare with '==' (or '=~' for a wildcard match)",
            ),
            (
                "! attribute:os == linux",
                "memberOf expression: unexpected '!' at column 1; negate with 'not', or compare with '!=', '!~', '!in' or '!exists'",
            ),
            (
                "attribute:os ~ linux",
                "memberOf expression: unexpected '~' at column 14; match with '=~' or '!~'",
            ),
            (
                "attribute:cpus > 4",
                "memberOf expression: unexpected '>' at column 16; ordering comparisons are not supported; use ==, !=, in, not_in, =~, !~ or exists",
            ),
            (
                "attribute:a == b && attribute:c == d",
                "memberOf expression: unexpected '&' at column 18; combine conditions with 'and' or 'or'",
            ),
            (
                "attribute:a == b || attribute:c == d",
                "memberOf expression: unexpected '|' at column 18; combine conditions with 'and' or 'or'",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&err(text), want, "input: {text:?}");
        }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = Expr::parse("attribute:zöne == ").unwrap_err();
        assert_eq!(e.column(), Some(19));
    }
}
