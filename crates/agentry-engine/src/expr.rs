//! The `when` expression language of workflow edges, and reason templates.
//!
//! A tiny, safe language: literals (`true`, `false`, `null`, integers,
//! floats, `"strings"`, `'strings'`), paths (`context.qa.passed`,
//! `outputs.qa.test_run.passed`, `visits.developer`, `status`, `step`,
//! `requirements`, `current_step`, `errors`), the operators `==` `!=` `<`
//! `<=` `>` `>=` `&&` `||` `!`, and parentheses. Expressions are parsed once,
//! when the definition is loaded; evaluation never fails and never panics:
//! a missing path is `null`, ordering a `null` or values of different types
//! is `false`, `==` compares JSON values (numbers by value, so `1 == 1.0`).
//!
//! Precedence, loosest first: `||`, `&&`, comparisons (non-associative),
//! `!`, then literals, paths and parentheses. Truthiness (for `&&`, `||`,
//! `!` and a bare `when = "context.ok"`): `false`, `null`, `0`, `""`, `[]`
//! and `{}` are false, everything else is true.

use std::collections::BTreeMap;
use std::fmt;

use agentry_core::WorkflowState;
use serde_json::Value;

/// Roots a path may start with.
const ROOTS: &[&str] = &[
    "context",
    "shared_context",
    "outputs",
    "agent_outputs",
    "visits",
    "status",
    "step",
    "requirements",
    "current_step",
    "errors",
];

/// What an expression is evaluated against: the workflow state (merged up
/// to the routing point) and the scheduler's visit counts.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The workflow state the paths read (`shared_context.qa.passed`,
    /// `status`, ...).
    pub state: &'a WorkflowState,
    /// Completed runs per node (`visits.<node>`; 0 when absent).
    pub visits: &'a BTreeMap<String, u32>,
}

impl Env<'_> {
    /// Resolves a dotted path; missing paths are `null`.
    pub fn lookup(&self, path: &str) -> Value {
        if let Some(node) = path.strip_prefix("visits.") {
            return Value::from(self.visits.get(node).copied().unwrap_or(0));
        }
        self.state.lookup(path).unwrap_or(Value::Null)
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinOp {
    fn as_str(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// A dotted path into the environment.
    Path(String),
    /// `!e`
    Not(Box<Expr>),
    /// `a op b`
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Path(p) => f.write_str(p),
            Expr::Not(e) => write!(f, "!({e})"),
            Expr::Binary(op, a, b) => write!(f, "({a} {} {b})", op.as_str()),
        }
    }
}

/// A parse error: what was wrong and at which (1-based, in characters)
/// column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(Value),
    Path(String),
    Op(BinOp),
    Not,
    LParen,
    RParen,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Lit(v) => format!("`{v}`"),
            Tok::Path(p) => format!("`{p}`"),
            Tok::Op(op) => format!("`{}`", op.as_str()),
            Tok::Not => "`!`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::End => "the end".into(),
        }
    }
}

fn err(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Splits the source into tokens with their 1-based columns.
fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => out.push((Tok::LParen, col)),
            ')' => out.push((Tok::RParen, col)),
            '=' if next == Some('=') => {
                out.push((Tok::Op(BinOp::Eq), col));
                i += 1;
            }
            '=' => return Err(err(col, "`=` is not an operator (use `==`)")),
            '!' if next == Some('=') => {
                out.push((Tok::Op(BinOp::Ne), col));
                i += 1;
            }
            '!' => out.push((Tok::Not, col)),
            '<' if next == Some('=') => {
                out.push((Tok::Op(BinOp::Le), col));
                i += 1;
            }
            '<' => out.push((Tok::Op(BinOp::Lt), col)),
            '>' if next == Some('=') => {
                out.push((Tok::Op(BinOp::Ge), col));
                i += 1;
            }
            '>' => out.push((Tok::Op(BinOp::Gt), col)),
            '&' if next == Some('&') => {
                out.push((Tok::Op(BinOp::And), col));
                i += 1;
            }
            '|' if next == Some('|') => {
                out.push((Tok::Op(BinOp::Or), col));
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err(col, "unterminated string")),
                        Some(&ch) if ch == quote => break,
                        Some('\\') => {
                            match chars.get(j + 1) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(&e @ ('\\' | '"' | '\'')) => s.push(e),
                                _ => return Err(err(j + 1, "unknown escape in string")),
                            }
                            j += 1;
                        }
                        Some(&ch) => s.push(ch),
                    }
                    j += 1;
                }
                out.push((Tok::Lit(Value::String(s)), col));
                i = j;
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let value = if text.contains('.') {
                    text.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                } else {
                    text.parse::<i64>().ok().map(Value::from)
                };
                match value {
                    Some(v) => out.push((Tok::Lit(v), col)),
                    None => return Err(err(col, format!("`{text}` is not a number"))),
                }
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && (is_ident(chars[j]) || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let tok = match text.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "null" => Tok::Lit(Value::Null),
                    _ => {
                        if text.ends_with('.') || text.contains("..") {
                            return Err(err(col, format!("`{text}` is not a valid path")));
                        }
                        let root = text.split('.').next().unwrap_or_default();
                        if !ROOTS.contains(&root) {
                            return Err(err(
                                col,
                                format!(
                                    "unknown name `{root}` (a path starts with one of {})",
                                    ROOTS.join(", ")
                                ),
                            ));
                        }
                        Tok::Path(text)
                    }
                };
                out.push((tok, col));
                i = j;
                continue;
            }
            other => return Err(err(col, format!("unexpected character `{other}`"))),
        }
        i += 1;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &(Tok, usize) {
        // `lex` always ends with `End`, and the parser never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.and()?;
        while self.peek().0 == Tok::Op(BinOp::Or) {
            self.bump();
            let rhs = self.and()?;
            lhs = Expr::Binary(BinOp::Or, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut lhs = self.cmp()?;
        while self.peek().0 == Tok::Op(BinOp::And) {
            self.bump();
            let rhs = self.cmp()?;
            lhs = Expr::Binary(BinOp::And, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.unary()?;
        match self.peek().0 {
            Tok::Op(
                op @ (BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge),
            ) => {
                self.bump();
                let rhs = self.unary()?;
                if let (
                    Tok::Op(
                        next @ (BinOp::Eq
                        | BinOp::Ne
                        | BinOp::Lt
                        | BinOp::Le
                        | BinOp::Gt
                        | BinOp::Ge),
                    ),
                    col,
                ) = self.peek().clone()
                {
                    return Err(err(
                        col,
                        format!(
                            "comparisons do not chain (`{}` after `{}`); use `&&` or parentheses",
                            next.as_str(),
                            op.as_str()
                        ),
                    ));
                }
                Ok(Expr::Binary(op, Box::new(lhs), Box::new(rhs)))
            }
            _ => Ok(lhs),
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.peek().0 == Tok::Not {
            self.bump();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let (tok, col) = self.bump();
        match tok {
            Tok::Lit(v) => Ok(Expr::Literal(v)),
            Tok::Path(p) => Ok(Expr::Path(p)),
            Tok::LParen => {
                let e = self.or()?;
                match self.bump() {
                    (Tok::RParen, _) => Ok(e),
                    (other, c) => Err(err(
                        c,
                        format!(
                            "expected `)` to close `(` at column {col}, found {}",
                            other.describe()
                        ),
                    )),
                }
            }
            other => Err(err(
                col,
                format!("expected a value, found {}", other.describe()),
            )),
        }
    }
}

impl Expr {
    /// Parses an expression.
    pub fn parse(src: &str) -> Result<Expr, ParseError> {
        let toks = lex(src)?;
        let mut p = Parser { toks, pos: 0 };
        let e = p.or()?;
        match p.peek() {
            (Tok::End, _) => Ok(e),
            (other, col) => Err(err(
                *col,
                format!(
                    "expected an operator or the end, found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// The paths the expression reads, for validation (`visits.X` must name a
    /// node).
    pub fn paths(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Path(p) => out.push(p),
            Expr::Not(e) => e.collect_paths(out),
            Expr::Binary(_, a, b) => {
                a.collect_paths(out);
                b.collect_paths(out);
            }
        }
    }

    /// Evaluates to a JSON value.
    pub fn eval(&self, env: &Env<'_>) -> Value {
        match self {
            Expr::Literal(v) => v.clone(),
            Expr::Path(p) => env.lookup(p),
            Expr::Not(e) => Value::Bool(!truthy(&e.eval(env))),
            Expr::Binary(BinOp::And, a, b) => {
                Value::Bool(truthy(&a.eval(env)) && truthy(&b.eval(env)))
            }
            Expr::Binary(BinOp::Or, a, b) => {
                Value::Bool(truthy(&a.eval(env)) || truthy(&b.eval(env)))
            }
            Expr::Binary(op, a, b) => Value::Bool(compare(*op, &a.eval(env), &b.eval(env))),
        }
    }

    /// Evaluates to a boolean (by truthiness).
    pub fn holds(&self, env: &Env<'_>) -> bool {
        truthy(&self.eval(env))
    }
}

/// The truthiness rule of the language.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn compare(op: BinOp, a: &Value, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => x
                .as_f64()
                .zip(y.as_f64())
                .and_then(|(f, g)| f.partial_cmp(&g)),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        BinOp::Eq => json_eq(a, b),
        BinOp::Ne => !json_eq(a, b),
        BinOp::Lt => ord == Some(Ordering::Less),
        BinOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        BinOp::Gt => ord == Some(Ordering::Greater),
        BinOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        // Handled by `Expr::eval`; never reached, answered sensibly anyway.
        BinOp::And => truthy(a) && truthy(b),
        BinOp::Or => truthy(a) || truthy(b),
    }
}

/// A reason template: text with `{path}` placeholders (`{visits.developer}`)
/// filled from the evaluation environment. `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<TemplatePart>,
    source: String,
}

#[derive(Debug, Clone, PartialEq)]
enum TemplatePart {
    Text(String),
    Path(String),
}

impl Template {
    /// Parses a template; a placeholder must be a valid path.
    pub fn parse(src: &str) -> Result<Template, ParseError> {
        let chars: Vec<char> = src.chars().collect();
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '{' if chars.get(i + 1) == Some(&'{') => {
                    text.push('{');
                    i += 2;
                }
                '}' if chars.get(i + 1) == Some(&'}') => {
                    text.push('}');
                    i += 2;
                }
                '{' => {
                    let start = i + 1;
                    let Some(len) = chars[start..].iter().position(|c| *c == '}') else {
                        return Err(err(i + 1, "unclosed `{` in template"));
                    };
                    let inner: String = chars[start..start + len].iter().collect();
                    match Expr::parse(inner.trim()) {
                        Ok(Expr::Path(p)) => {
                            if !text.is_empty() {
                                parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                            }
                            parts.push(TemplatePart::Path(p));
                        }
                        Ok(_) => {
                            return Err(err(start + 1, format!("`{{{inner}}}` is not a path")))
                        }
                        Err(e) => return Err(err(start + e.column, e.message)),
                    }
                    i = start + len + 1;
                }
                '}' => return Err(err(i + 1, "unmatched `}` in template (use `}}`)")),
                c => {
                    text.push(c);
                    i += 1;
                }
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        Ok(Template {
            parts,
            source: src.to_string(),
        })
    }

    /// The template text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The paths it reads.
    pub fn paths(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                TemplatePart::Path(p) => Some(p.as_str()),
                TemplatePart::Text(_) => None,
            })
            .collect()
    }

    /// Fills the placeholders: strings as they are, other values as JSON.
    pub fn render(&self, env: &Env<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Path(p) => match env.lookup(p) {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentry_core::{AgentOutputWrite, StateDelta, WorkflowId};
    use serde_json::json;

    fn state() -> (WorkflowState, BTreeMap<String, u32>) {
        let mut st = WorkflowState::initial(
            WorkflowId::new(),
            agentry_core::RequestId::new("r").unwrap(),
            "build a shop",
            chrono::Utc::now(),
        );
        st.apply(&StateDelta {
            shared_context: BTreeMap::from([
                ("qa.passed".into(), json!(false)),
                ("score".into(), json!(2.5)),
                ("name".into(), json!("shop")),
            ]),
            agent_outputs: vec![AgentOutputWrite {
                agent_name: "qa".into(),
                output_type: "test_run".into(),
                content: json!({"passed": true, "failed": 0}),
            }],
            ..Default::default()
        });
        (st, BTreeMap::from([("developer".into(), 2)]))
    }

    fn check(src: &str, expected: Value) {
        let (st, visits) = state();
        let env = Env {
            state: &st,
            visits: &visits,
        };
        let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(e.eval(&env), expected, "{src} (parsed as {e})");
    }

    fn check_err(src: &str, column: usize, message: &str) {
        let e = Expr::parse(src).expect_err(src);
        assert_eq!(e.column, column, "{src}: {e}");
        assert!(e.message.contains(message), "{src}: {e}");
    }

    #[test]
    fn literals_and_paths() {
        check("true", json!(true));
        check("null", json!(null));
        check("-3", json!(-3));
        check("'a' == \"a\"", json!(true));
        check("context.qa.passed", json!(false));
        check("outputs.qa.test_run.passed", json!(true));
        check("visits.developer", json!(2));
        check("visits.qa", json!(0));
        check("context.nothing", json!(null));
        check("requirements", json!("build a shop"));
        check("status == 'pending'", json!(true));
    }

    #[test]
    fn comparisons() {
        check("context.qa.passed == false", json!(true));
        check("visits.developer < 3", json!(true));
        check("visits.developer >= 3", json!(false));
        check("context.score > 2", json!(true));
        check("context.score <= 2.5", json!(true));
        check("2 == 2.0", json!(true));
        check("context.name < 'zoo'", json!(true));
        check("context.name != 'shop'", json!(false));
        // Ordering null or mismatched types is false, never an error.
        check("context.nothing < 3", json!(false));
        check("context.nothing >= 3", json!(false));
        check("context.name > 1", json!(false));
        check("context.nothing == null", json!(true));
    }

    #[test]
    fn logic_and_precedence() {
        check(
            "context.qa.passed == false && visits.developer < 3",
            json!(true),
        );
        check("true || false && false", json!(true));
        check("(true || false) && false", json!(false));
        check("!context.qa.passed", json!(true));
        check("!(visits.developer == 2)", json!(false));
        check("context.nothing || context.name", json!(true));
    }

    #[test]
    fn parse_errors_name_the_column() {
        check_err("visits.developer = 3", 18, "use `==`");
        check_err("contxt.qa.passed", 1, "unknown name `contxt`");
        check_err("(true", 6, "expected `)`");
        check_err("true &&", 8, "expected a value");
        check_err("1 < 2 < 3", 7, "do not chain");
        check_err("'open", 1, "unterminated string");
        check_err("true false", 6, "expected an operator");
        check_err("a # b", 1, "unknown name `a`");
        check_err("step $ 2", 6, "unexpected character `$`");
    }

    #[test]
    fn templates_fill_placeholders() {
        let (st, visits) = state();
        let env = Env {
            state: &st,
            visits: &visits,
        };
        let t = Template::parse("failed after {visits.developer} rounds on {context.name} {{x}}")
            .unwrap();
        assert_eq!(t.render(&env), "failed after 2 rounds on shop {x}");
        assert_eq!(t.paths(), vec!["visits.developer", "context.name"]);
        assert!(Template::parse("oops {visits.").is_err());
        assert!(Template::parse("{1 + 2}").is_err());
        assert!(Template::parse("a } b").is_err());
    }
}
