//! Placement strategies and constraints, parsed from the strings the CLI
//! passes (`--placement-strategy spread:attribute:zone`,
//! `--placement-constraint 'memberOf(attribute:os == linux)'`). Both
//! serialize as those same strings, so stored requests stay readable.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::expr::{Expr, ExprError};

/// ECS accepts at most this many strategies per task or service.
pub const MAX_STRATEGIES: usize = 5;
/// ECS accepts at most this many constraints per task or service.
pub const MAX_CONSTRAINTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpreadField {
    InstanceId,
    Attribute(String),
}

/// How to choose among the instances a task may go to. Strategies apply in
/// order: the first decides, later ones break its ties.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Strategy {
    /// Prefer the instance with the least of this resource left, so that
    /// fewer instances are used.
    Binpack(Resource),
    /// Prefer the instance (or attribute value) with the fewest tasks of the
    /// request's group.
    Spread(SpreadField),
    /// Any feasible instance, chosen at random.
    Random,
}

impl Strategy {
    /// Used when a request names no strategy.
    pub const DEFAULT: Strategy = Strategy::Spread(SpreadField::InstanceId);
}

/// A rule an instance must satisfy to receive the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Constraint {
    /// No two tasks of the request's group on one instance: an instance
    /// already running a task of the group (placed before, or earlier in the
    /// same request) is excluded.
    DistinctInstance,
    MemberOf(MemberOf),
}

/// A parsed `memberOf` expression and the text it came from, which is what
/// messages show so people recognise what they typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberOf {
    pub expression: Expr,
    pub text: String,
}

impl Constraint {
    /// The ECS API form: `{"type": "memberOf", "expression": "..."}`.
    pub fn member_of(expression: &str) -> Result<Constraint, SpecError> {
        let text = expression.trim();
        let expression = Expr::parse(text).map_err(|source| SpecError::Expression {
            text: format!("memberOf({text})"),
            source,
        })?;
        Ok(Constraint::MemberOf(MemberOf {
            expression,
            text: text.to_string(),
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("placement strategy {text:?}: unknown type {kind:?}; use binpack:cpu, binpack:memory, spread:instanceId, spread:attribute:NAME or random")]
    UnknownStrategy { text: String, kind: String },
    #[error(
        "placement strategy {text:?}: binpack needs a field; use binpack:cpu or binpack:memory"
    )]
    MissingBinpackField { text: String },
    #[error("placement strategy {text:?}: unknown binpack field {field:?}; use binpack:cpu or binpack:memory")]
    UnknownBinpackField { text: String, field: String },
    #[error("placement strategy {text:?}: spread needs a field; use spread:instanceId or spread:attribute:NAME")]
    MissingSpreadField { text: String },
    #[error("placement strategy {text:?}: unknown spread field {field:?}; use spread:instanceId or spread:attribute:NAME (e.g. spread:attribute:{field})")]
    UnknownSpreadField { text: String, field: String },
    #[error("placement strategy {text:?}: missing attribute name; write spread:attribute:NAME, e.g. spread:attribute:zone")]
    MissingAttributeName { text: String },
    #[error("placement strategy {text:?}: random takes no field; write random")]
    RandomField { text: String },
    #[error("at most {max} placement strategies are allowed, got {count}")]
    TooManyStrategies { count: usize, max: usize },
    #[error(
        "placement constraint {text:?}: unknown type; use distinctInstance or memberOf(EXPRESSION)"
    )]
    UnknownConstraint { text: String },
    #[error("placement constraint {text:?}: distinctInstance takes no expression; write distinctInstance")]
    DistinctInstanceArgument { text: String },
    #[error(
        "placement constraint {text:?}: put the expression in parentheses: memberOf(EXPRESSION)"
    )]
    MemberOfParentheses { text: String },
    #[error("placement constraint {text:?}: missing ')' at the end; write memberOf(EXPRESSION)")]
    MemberOfUnclosed { text: String },
    #[error("placement constraint {text:?}: {source}")]
    Expression {
        text: String,
        #[source]
        source: ExprError,
    },
    #[error("at most {max} placement constraints are allowed, got {count}")]
    TooManyConstraints { count: usize, max: usize },
}

impl FromStr for Strategy {
    type Err = SpecError;

    fn from_str(input: &str) -> Result<Self, SpecError> {
        let text = input.trim().to_string();
        let (kind, field) = match text.split_once(':') {
            Some((k, f)) => (k, Some(f)),
            None => (text.as_str(), None),
        };
        match kind.to_ascii_lowercase().as_str() {
            "binpack" => match field.map(str::to_ascii_lowercase).as_deref() {
                None | Some("") => Err(SpecError::MissingBinpackField { text }),
                Some("cpu") => Ok(Strategy::Binpack(Resource::Cpu)),
                Some("memory") => Ok(Strategy::Binpack(Resource::Memory)),
                Some(_) => Err(SpecError::UnknownBinpackField {
                    field: field.unwrap_or_default().to_string(),
                    text,
                }),
            },
            "spread" => {
                let field = field.unwrap_or_default();
                if field.is_empty() {
                    return Err(SpecError::MissingSpreadField { text });
                }
                // ECS accepts `host` as a synonym of `instanceId`.
                if field.eq_ignore_ascii_case("instanceId") || field.eq_ignore_ascii_case("host") {
                    return Ok(Strategy::Spread(SpreadField::InstanceId));
                }
                match field.split_once(':') {
                    Some((prefix, name)) if prefix.eq_ignore_ascii_case("attribute") => {
                        if name.trim().is_empty() {
                            Err(SpecError::MissingAttributeName { text })
                        } else {
                            Ok(Strategy::Spread(SpreadField::Attribute(
                                name.trim().to_string(),
                            )))
                        }
                    }
                    _ if field.eq_ignore_ascii_case("attribute") => {
                        Err(SpecError::MissingAttributeName { text })
                    }
                    _ => Err(SpecError::UnknownSpreadField {
                        field: field.to_string(),
                        text,
                    }),
                }
            }
            "random" => match field {
                None => Ok(Strategy::Random),
                Some(_) => Err(SpecError::RandomField { text }),
            },
            _ => Err(SpecError::UnknownStrategy {
                kind: kind.to_string(),
                text,
            }),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Binpack(r) => write!(f, "binpack:{}", r.as_str()),
            Strategy::Spread(SpreadField::InstanceId) => f.write_str("spread:instanceId"),
            Strategy::Spread(SpreadField::Attribute(name)) => {
                write!(f, "spread:attribute:{name}")
            }
            Strategy::Random => f.write_str("random"),
        }
    }
}

impl FromStr for Constraint {
    type Err = SpecError;

    fn from_str(input: &str) -> Result<Self, SpecError> {
        let text = input.trim();
        let lower = text.to_ascii_lowercase();
        if lower == "distinctinstance" {
            return Ok(Constraint::DistinctInstance);
        }
        if lower.starts_with("distinctinstance") {
            return Err(SpecError::DistinctInstanceArgument { text: text.into() });
        }
        const MEMBER_OF: &str = "memberof";
        if lower.starts_with(MEMBER_OF) {
            // ASCII lowercasing keeps byte offsets, so the prefix length is
            // valid in the original text too.
            let rest = text[MEMBER_OF.len()..].trim_start();
            let Some(inner) = rest.strip_prefix('(') else {
                return Err(SpecError::MemberOfParentheses { text: text.into() });
            };
            let Some(inner) = inner.strip_suffix(')') else {
                return Err(SpecError::MemberOfUnclosed { text: text.into() });
            };
            let expression = Expr::parse(inner).map_err(|source| SpecError::Expression {
                text: text.into(),
                source,
            })?;
            return Ok(Constraint::MemberOf(MemberOf {
                expression,
                text: inner.trim().to_string(),
            }));
        }
        Err(SpecError::UnknownConstraint { text: text.into() })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::DistinctInstance => f.write_str("distinctInstance"),
            Constraint::MemberOf(m) => write!(f, "memberOf({})", m.text),
        }
    }
}

impl TryFrom<String> for Strategy {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<Strategy> for String {
    fn from(s: Strategy) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Constraint {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<Constraint> for String {
    fn from(c: Constraint) -> String {
        c.to_string()
    }
}

/// Parses repeated `--placement-strategy` values, in order.
pub fn parse_strategies<S: AsRef<str>>(values: &[S]) -> Result<Vec<Strategy>, SpecError> {
    if values.len() > MAX_STRATEGIES {
        return Err(SpecError::TooManyStrategies {
            count: values.len(),
            max: MAX_STRATEGIES,
        });
    }
    values.iter().map(|v| v.as_ref().parse()).collect()
}

/// Parses repeated `--placement-constraint` values.
pub fn parse_constraints<S: AsRef<str>>(values: &[S]) -> Result<Vec<Constraint>, SpecError> {
    if values.len() > MAX_CONSTRAINTS {
        return Err(SpecError::TooManyConstraints {
            count: values.len(),
            max: MAX_CONSTRAINTS,
        });
    }
    values.iter().map(|v| v.as_ref().parse()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_and_display() {
        let cases = [
            ("binpack:cpu", "binpack:cpu"),
            ("binpack:MEMORY", "binpack:memory"),
            (" spread:instanceId ", "spread:instanceId"),
            ("spread:host", "spread:instanceId"),
            ("spread:attribute:zone", "spread:attribute:zone"),
            (
                "Spread:Attribute:ecs.availability-zone",
                "spread:attribute:ecs.availability-zone",
            ),
            ("random", "random"),
        ];
        for (input, shown) in cases {
            let s: Strategy = input.parse().unwrap();
            assert_eq!(s.to_string(), shown);
            assert_eq!(shown.parse::<Strategy>().unwrap(), s);
        }
    }

    #[test]
    fn strategy_errors_name_the_bad_part() {
        let cases = [
            ("pack:cpu", "placement strategy \"pack:cpu\": unknown type \"pack\"; use binpack:cpu, binpack:memory, spread:instanceId, spread:attribute:NAME or random"),
            ("binpack", "placement strategy \"binpack\": binpack needs a field; use binpack:cpu or binpack:memory"),
            ("binpack:", "placement strategy \"binpack:\": binpack needs a field; use binpack:cpu or binpack:memory"),
            ("binpack:disk", "placement strategy \"binpack:disk\": unknown binpack field \"disk\"; use binpack:cpu or binpack:memory"),
            ("spread", "placement strategy \"spread\": spread needs a field; use spread:instanceId or spread:attribute:NAME"),
            ("spread:zone", "placement strategy \"spread:zone\": unknown spread field \"zone\"; use spread:instanceId or spread:attribute:NAME (e.g. spread:attribute:zone)"),
            ("spread:attribute:", "placement strategy \"spread:attribute:\": missing attribute name; write spread:attribute:NAME, e.g. spread:attribute:zone"),
            ("spread:attribute", "placement strategy \"spread:attribute\": missing attribute name; write spread:attribute:NAME, e.g. spread:attribute:zone"),
            ("random:cpu", "placement strategy \"random:cpu\": random takes no field; write random"),
            ("", "placement strategy \"\": unknown type \"\"; use binpack:cpu, binpack:memory, spread:instanceId, spread:attribute:NAME or random"),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Strategy>().unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn constraints_parse_and_display() {
        assert_eq!(
            "distinctInstance".parse::<Constraint>().unwrap(),
            Constraint::DistinctInstance
        );
        assert_eq!(
            " DISTINCTINSTANCE ".parse::<Constraint>().unwrap(),
            Constraint::DistinctInstance
        );
        let c: Constraint = "memberOf(attribute:os == linux and (attribute:zone in [a, b]))"
            .parse()
            .unwrap();
        assert_eq!(
            c.to_string(),
            "memberOf(attribute:os == linux and (attribute:zone in [a, b]))"
        );
        assert_eq!(c.to_string().parse::<Constraint>().unwrap(), c);
        let spaced: Constraint = "memberof ( attribute:os == linux )".parse().unwrap();
        assert_eq!(spaced.to_string(), "memberOf(attribute:os == linux)");
        assert_eq!(
            Constraint::member_of("attribute:os == linux").unwrap(),
            spaced
        );
    }

    #[test]
    fn constraint_errors_name_the_bad_part() {
        let cases = [
            ("distinct", "placement constraint \"distinct\": unknown type; use distinctInstance or memberOf(EXPRESSION)"),
            ("distinctInstance(x)", "placement constraint \"distinctInstance(x)\": distinctInstance takes no expression; write distinctInstance"),
            ("memberOf attribute:os == linux", "placement constraint \"memberOf attribute:os == linux\": put the expression in parentheses: memberOf(EXPRESSION)"),
            ("memberOf(attribute:os == linux", "placement constraint \"memberOf(attribute:os == linux\": missing ')' at the end; write memberOf(EXPRESSION)"),
            ("memberOf(attribute:os == )", "placement constraint \"memberOf(attribute:os == )\": memberOf expression: expected a value after '==' at column 17, found the end of the expression"),
            ("memberOf()", "placement constraint \"memberOf()\": memberOf expression: empty; write a condition such as attribute:os == linux"),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Constraint>().unwrap_err().to_string(), want);
        }
        assert!(matches!(
            Constraint::member_of("attribute:os ="),
            Err(SpecError::Expression { .. })
        ));
    }

    #[test]
    fn cli_lists_and_limits() {
        let s = parse_strategies(&["spread:attribute:zone", "binpack:memory"]).unwrap();
        assert_eq!(
            s,
            vec![
                Strategy::Spread(SpreadField::Attribute("zone".into())),
                Strategy::Binpack(Resource::Memory)
            ]
        );
        let c =
            parse_constraints(&["distinctInstance", "memberOf(attribute:os == linux)"]).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            parse_strategies(&["random"; 6]).unwrap_err().to_string(),
            "at most 5 placement strategies are allowed, got 6"
        );
        assert_eq!(
            parse_constraints(&["distinctInstance"; 11])
                .unwrap_err()
                .to_string(),
            "at most 10 placement constraints are allowed, got 11"
        );
        assert!(matches!(
            parse_strategies(&["random", "binpack:gpu"]),
            Err(SpecError::UnknownBinpackField { .. })
        ));
    }

    #[test]
    fn serde_uses_the_cli_strings() {
        let s = vec![
            Strategy::Spread(SpreadField::Attribute("zone".into())),
            Strategy::Binpack(Resource::Memory),
        ];
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["spread:attribute:zone","binpack:memory"]"#);
        assert_eq!(serde_json::from_str::<Vec<Strategy>>(&json).unwrap(), s);
        let c: Vec<Constraint> =
            serde_json::from_str(r#"["distinctInstance","memberOf(attribute:os == linux)"]"#)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"["distinctInstance","memberOf(attribute:os == linux)"]"#
        );
        assert!(serde_json::from_str::<Strategy>(r#""binpack:gpu""#).is_err());
    }
}
