//! Filters compiled to a parameterized SQL `WHERE` clause over a bucket's typed indexes
//! (spec A7), plus the ORDER BY of a find.
//!
//! As in Triton the column goes on the right (`(a>=5)` is `$1 <= a`) and every comparison
//! adds `a IS NOT NULL` (the indexes are partial). Values are passed as text parameters and
//! cast in SQL after they have been validated; identifiers are quoted.
//!
//! A leaf on an unindexed field compiles to nothing and is checked in-process against each
//! row ("residual"), as Triton does. Unlike Triton, only what SQL could not decide is
//! re-checked, and where an OR or NOT mixes SQL-decided and in-process parts, the SQL-decided
//! parts are selected as boolean columns so the in-process check uses PostgreSQL's answer for
//! them: the rows returned are exactly those the filter matches.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::MorayError;
use crate::filter::{Filter, Leaf, Op, Substrings};
use crate::types::{IndexType, Scalar, filter_value};

/// Internal fields usable in filters and sort, with their SQL column.
pub const INTERNAL_FIELDS: &[&str] = &["_id", "_key", "_etag", "_mtime", "_txn_snap"];

/// What a filter can use: the bucket's indexed fields that are not being reindexed.
#[derive(Debug, Clone, Default)]
pub struct QuerySchema {
    pub bucket: String,
    /// field name → (type, quoted column)
    pub fields: HashMap<String, (IndexType, String)>,
    /// Indexed fields being reindexed: not usable until reindexing finishes.
    pub reindexing: HashSet<String>,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Query {
    pub where_sql: String,
    /// Text parameters, numbered from the `first_param` given to [`compile`].
    pub params: Vec<String>,
    /// What must still be checked in-process, if anything.
    pub residual: Option<Residual>,
    /// Boolean SQL expressions the residual refers to by position; select them after the
    /// row's other columns.
    pub residual_columns: Vec<String>,
}

/// The in-process part of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Residual {
    And(Vec<Residual>),
    Or(Vec<Residual>),
    Not(Box<Residual>),
    /// The value of the n-th residual column.
    Column(usize),
    /// An unindexed leaf, checked against the object's value.
    Local(Leaf),
}

#[derive(Clone, Copy)]
enum Target<'a> {
    Index(IndexType, &'a str),
    /// An internal column: its name and whether it is a number.
    Internal(&'static str, bool),
}

struct Part {
    sql: Option<String>,
    residual: Option<Residual>,
}

struct Ctx<'a> {
    schema: &'a QuerySchema,
    first_param: usize,
    params: Vec<String>,
    columns: Vec<String>,
}

/// Compiles `filter`; parameters are numbered from `$first_param`.
pub fn compile(
    schema: &QuerySchema,
    filter: &Filter,
    first_param: usize,
) -> Result<Query, MorayError> {
    let mut ctx = Ctx {
        schema,
        first_param,
        params: Vec::new(),
        columns: Vec::new(),
    };
    let part = ctx.node(filter)?;
    let Some(where_sql) = part.sql else {
        return Err(MorayError::invalid_query(
            filter.to_string(),
            "the filter uses no indexed field, so it cannot be run as a query",
        ));
    };
    Ok(Query {
        where_sql,
        params: ctx.params,
        residual: part.residual,
        residual_columns: ctx.columns,
    })
}

/// Triton's `requireIndexes` / `checkOnlyUsableIndexes`: every leaf must use an indexed
/// field that is not being reindexed, or an internal field.
pub fn check_usable(schema: &QuerySchema, filter: &Filter) -> Result<(), MorayError> {
    let (unindexed, reindexing) = unusable_fields(schema, filter.leaves());
    if unindexed.is_empty() && reindexing.is_empty() {
        return Ok(());
    }
    Err(MorayError::NotIndexed {
        bucket: schema.bucket.clone(),
        filter: filter.to_string(),
        unindexed,
        reindexing,
    })
}

fn unusable_fields(schema: &QuerySchema, leaves: Vec<&Leaf>) -> (Vec<String>, Vec<String>) {
    let mut unindexed = Vec::new();
    let mut reindexing = Vec::new();
    for leaf in leaves {
        let a = &leaf.attribute;
        if INTERNAL_FIELDS.contains(&a.as_str()) || schema.fields.contains_key(a) {
            continue;
        }
        let list = if schema.reindexing.contains(a) {
            &mut reindexing
        } else {
            &mut unindexed
        };
        if !list.contains(a) {
            list.push(a.clone());
        }
    }
    (unindexed, reindexing)
}

impl<'a> Ctx<'a> {
    fn param(&mut self, value: String) -> String {
        self.params.push(value);
        format!("${}", self.first_param + self.params.len() - 1)
    }

    fn not_indexed(&self, node: &Filter) -> MorayError {
        let (unindexed, reindexing) = unusable_fields(self.schema, node.leaves());
        MorayError::NotIndexed {
            bucket: self.schema.bucket.clone(),
            filter: node.to_string(),
            unindexed,
            reindexing,
        }
    }

    /// A residual that stands for a subtree: its SQL as a selected column, and its own
    /// residual if it has one.
    fn as_residual(&mut self, part: Part) -> Residual {
        let column = part.sql.map(|sql| {
            self.columns.push(format!("coalesce(({sql}), false)"));
            Residual::Column(self.columns.len() - 1)
        });
        match (column, part.residual) {
            (Some(c), Some(r)) => Residual::And(vec![c, r]),
            (Some(c), None) => c,
            (None, Some(r)) => r,
            (None, None) => Residual::And(Vec::new()),
        }
    }

    fn node(&mut self, f: &Filter) -> Result<Part, MorayError> {
        match f {
            Filter::And(children) => {
                let mut sqls = Vec::new();
                let mut residuals = Vec::new();
                for c in children {
                    let p = self.node(c)?;
                    sqls.extend(p.sql);
                    residuals.extend(p.residual);
                }
                if sqls.is_empty() {
                    return Err(self.not_indexed(f));
                }
                Ok(Part {
                    sql: Some(join(&sqls, "AND")),
                    residual: match residuals.len() {
                        0 => None,
                        1 => residuals.pop(),
                        _ => Some(Residual::And(residuals)),
                    },
                })
            }
            Filter::Or(children) => {
                let mut parts = Vec::new();
                for c in children {
                    let p = self.node(c)?;
                    if p.sql.is_none() {
                        return Err(self.not_indexed(f));
                    }
                    parts.push(p);
                }
                let sqls: Vec<String> = parts.iter().filter_map(|p| p.sql.clone()).collect();
                let sql = Some(join(&sqls, "OR"));
                if parts.iter().all(|p| p.residual.is_none()) {
                    return Ok(Part {
                        sql,
                        residual: None,
                    });
                }
                // SQL selects a superset; the in-process check decides.
                let rs = parts.into_iter().map(|p| self.as_residual(p)).collect();
                Ok(Part {
                    sql,
                    residual: Some(Residual::Or(rs)),
                })
            }
            Filter::Not(child) => {
                let p = self.node(child)?;
                match (p.sql, p.residual) {
                    (Some(sql), None) => Ok(Part {
                        sql: Some(format!("NOT ({sql})")),
                        residual: None,
                    }),
                    (sql, residual) => {
                        let r = self.as_residual(Part { sql, residual });
                        Ok(Part {
                            sql: None,
                            residual: Some(Residual::Not(Box::new(r))),
                        })
                    }
                }
            }
            Filter::Leaf(leaf) => self.leaf(f, leaf),
        }
    }

    fn target(&self, attribute: &str) -> Option<Target<'a>> {
        let schema: &'a QuerySchema = self.schema;
        match attribute {
            "_id" => Some(Target::Internal("_id", true)),
            "_mtime" => Some(Target::Internal("_mtime", true)),
            "_txn_snap" => Some(Target::Internal("_txn_snap", true)),
            "_key" => Some(Target::Internal("_key", false)),
            "_etag" => Some(Target::Internal("_etag", false)),
            _ => schema
                .fields
                .get(attribute)
                .map(|(ty, col)| Target::Index(*ty, col.as_str())),
        }
    }

    fn leaf(&mut self, node: &Filter, leaf: &Leaf) -> Result<Part, MorayError> {
        let attr = leaf.attribute.as_str();
        let bad = |reason: String| MorayError::invalid_query(node.to_string(), reason);
        if attr == "_idx" {
            return Err(bad("filtering on _idx is not allowed".into()));
        }
        let local = || {
            Ok(Part {
                sql: None,
                residual: Some(Residual::Local(leaf.clone())),
            })
        };
        let sql = |s: String| {
            Ok(Part {
                sql: Some(s),
                residual: None,
            })
        };
        let target = self.target(attr);
        match &leaf.op {
            Op::Present => match target {
                Some(Target::Index(_, col)) => sql(format!("{col} IS NOT NULL")),
                Some(Target::Internal(col, _)) => sql(format!("{col} IS NOT NULL")),
                None => local(),
            },
            Op::Equal(v) | Op::GreaterOrEqual(v) | Op::LessOrEqual(v) => {
                let op = match &leaf.op {
                    Op::Equal(_) => "=",
                    Op::GreaterOrEqual(_) => "<=",
                    _ => ">=",
                };
                match target {
                    None => local(),
                    Some(Target::Internal(col, number)) => {
                        let (value, cast) = if number {
                            let n = filter_value(Scalar::Number, v).map_err(bad)?;
                            let integral = n
                                .bytes()
                                .all(|c| c.is_ascii_digit() || c == b'-' || c == b'+');
                            (
                                n,
                                if integral {
                                    "::text::bigint"
                                } else {
                                    "::text::numeric"
                                },
                            )
                        } else {
                            (v.clone(), "::text")
                        };
                        let p = self.param(value);
                        sql(format!("({p}{cast} {op} {col} AND {col} IS NOT NULL)"))
                    }
                    Some(Target::Index(ty, col)) => {
                        let value = filter_value(ty.scalar, v).map_err(bad)?;
                        let cast = scalar_cast(ty.scalar);
                        let p = self.param(value);
                        if ty.array {
                            if op == "=" {
                                sql(format!("{col} @> ARRAY[{p}{cast}]"))
                            } else {
                                sql(format!("{p}{cast} {op} ANY({col})"))
                            }
                        } else {
                            sql(format!("({p}{cast} {op} {col} AND {col} IS NOT NULL)"))
                        }
                    }
                }
            }
            Op::Substring(s) | Op::CaseIgnoreSubstrings(s) => {
                let like = if matches!(leaf.op, Op::Substring(_)) {
                    "LIKE"
                } else {
                    "ILIKE"
                };
                let col = match target {
                    None => return local(),
                    Some(Target::Internal(col, false)) => col,
                    Some(Target::Index(ty, _)) if ty.array => return Err(self.not_indexed(node)),
                    Some(Target::Index(ty, col)) if ty.scalar == Scalar::String => col,
                    _ => {
                        return Err(bad(format!(
                            "a substring match needs a string field; {attr} is not one"
                        )));
                    }
                };
                let p = self.param(like_pattern(s));
                sql(format!("({col} {like} {p} AND {col} IS NOT NULL)"))
            }
            Op::CaseIgnore(v) => match target {
                None => local(),
                Some(Target::Internal(col, false)) => {
                    let p = self.param(like_escape(v));
                    sql(format!("({col} ILIKE {p} AND {col} IS NOT NULL)"))
                }
                Some(Target::Index(ty, col)) if ty.scalar == Scalar::String => {
                    let p = self.param(like_escape(v));
                    if ty.array {
                        sql(format!(
                            "EXISTS (SELECT 1 FROM unnest({col}) AS e WHERE e ILIKE {p})"
                        ))
                    } else {
                        sql(format!("({col} ILIKE {p} AND {col} IS NOT NULL)"))
                    }
                }
                _ => Err(bad(format!(
                    "caseIgnoreMatch needs a string field; {attr} is not one"
                ))),
            },
            Op::Overlaps(v) | Op::Contains(v) | Op::Within(v) => {
                let (rule, op_of): (&str, fn(IndexType) -> _) = match &leaf.op {
                    Op::Overlaps(_) => ("overlaps", IndexType::overlaps),
                    Op::Contains(_) => ("contains", IndexType::contains),
                    _ => ("within", IndexType::within),
                };
                let Some(Target::Index(ty, col)) = target else {
                    return Err(self.not_indexed(node));
                };
                let Some(range_op) = op_of(ty) else {
                    return Err(bad(format!(
                        "{rule} is not supported by the {ty} index of {attr}"
                    )));
                };
                let value = filter_value(range_op.arg, v).map_err(bad)?;
                let p = self.param(value);
                let cast = format!("::text::{}", range_op.arg.pg());
                let op = range_op.sql;
                if ty.array {
                    sql(format!("{p}{cast} {op} ANY({col})"))
                } else {
                    sql(format!("({p}{cast} {op} {col} AND {col} IS NOT NULL)"))
                }
            }
        }
    }
}

fn scalar_cast(s: Scalar) -> String {
    if s == Scalar::String {
        "::text".to_string()
    } else {
        format!("::text::{}", s.pg())
    }
}

fn join(parts: &[String], op: &str) -> String {
    if parts.len() == 1 {
        return parts[0].clone();
    }
    parts
        .iter()
        .map(|p| format!("({p})"))
        .collect::<Vec<_>>()
        .join(&format!(" {op} "))
}

/// Escapes `\`, `%` and `_` for LIKE (PostgreSQL's default escape character is `\`).
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn like_pattern(s: &Substrings) -> String {
    let mut p = like_escape(&s.initial);
    p.push('%');
    for a in &s.any {
        p.push_str(&like_escape(a));
        p.push('%');
    }
    p.push_str(&like_escape(&s.last));
    p
}

/// `ORDER BY ...` for a find: attributes must be usable indexed fields or internal fields.
/// No sort means `_id ASC`, the order Triton's documentation promises.
pub fn order_by(schema: &QuerySchema, sorts: &[(String, String)]) -> Result<String, MorayError> {
    if sorts.is_empty() {
        return Ok("ORDER BY _id ASC".to_string());
    }
    let mut out = Vec::new();
    for (attribute, order) in sorts {
        let col = if INTERNAL_FIELDS.contains(&attribute.as_str()) {
            attribute.clone()
        } else if let Some((_, col)) = schema.fields.get(attribute) {
            col.clone()
        } else {
            return Err(MorayError::invalid_query(
                format!("sort {attribute}"),
                format!(
                    "cannot sort on {attribute:?}: it is neither an indexed field of {} nor one of {}",
                    schema.bucket,
                    INTERNAL_FIELDS.join(", ")
                ),
            ));
        };
        let dir = if order.is_empty() || order.eq_ignore_ascii_case("asc") {
            "ASC"
        } else if order.eq_ignore_ascii_case("desc") {
            "DESC"
        } else {
            return Err(MorayError::invalid_query(
                format!("sort {attribute} {order}"),
                "sort order must be ASC or DESC",
            ));
        };
        out.push(format!("{col} {dir}"));
    }
    Ok(format!("ORDER BY {}", out.join(", ")))
}

/// Evaluates a residual against an object's value and the row's residual columns.
pub fn eval(r: &Residual, value: &Map<String, Value>, columns: &[bool]) -> bool {
    match r {
        Residual::And(rs) => rs.iter().all(|r| eval(r, value, columns)),
        Residual::Or(rs) => rs.iter().any(|r| eval(r, value, columns)),
        Residual::Not(r) => !eval(r, value, columns),
        Residual::Column(i) => columns.get(*i).copied().unwrap_or(false),
        Residual::Local(leaf) => matches_local(leaf, value),
    }
}

/// Lookup as `moray-filter` does: the exact name, else the first name equal ignoring case.
fn attr_value<'a>(value: &'a Map<String, Value>, attr: &str) -> Option<&'a Value> {
    value.get(attr).or_else(|| {
        value
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v)
    })
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn any_value(v: &Value, test: impl Fn(&Value) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(test),
        v => test(v),
    }
}

/// An unindexed leaf against a value: scalars compared as strings (numbers numerically
/// against a numeric bound), arrays match when any element does.
pub fn matches_local(leaf: &Leaf, value: &Map<String, Value>) -> bool {
    let Some(v) = attr_value(value, &leaf.attribute) else {
        return false;
    };
    if v.is_null() {
        return false;
    }
    match &leaf.op {
        Op::Present => true,
        Op::Equal(want) => any_value(v, |x| scalar_text(x).is_some_and(|s| &s == want)),
        Op::GreaterOrEqual(bound) | Op::LessOrEqual(bound) => {
            let ge = matches!(leaf.op, Op::GreaterOrEqual(_));
            any_value(v, |x| {
                let ord = match (x, bound.parse::<f64>()) {
                    (Value::Number(n), Ok(b)) => n.as_f64().and_then(|n| n.partial_cmp(&b)),
                    _ => scalar_text(x).map(|s| s.as_str().cmp(bound.as_str())),
                };
                match ord {
                    Some(o) => {
                        if ge {
                            o.is_ge()
                        } else {
                            o.is_le()
                        }
                    }
                    None => false,
                }
            })
        }
        Op::Substring(s) => any_value(v, |x| {
            scalar_text(x).is_some_and(|t| substring_match(&t, s, false))
        }),
        Op::CaseIgnore(want) => any_value(
            v,
            |x| matches!(x, Value::String(t) if t.to_lowercase() == want.to_lowercase()),
        ),
        Op::CaseIgnoreSubstrings(s) => any_value(
            v,
            |x| matches!(x, Value::String(t) if substring_match(t, s, true)),
        ),
        // Compilation refuses these on unindexed fields.
        Op::Overlaps(_) | Op::Contains(_) | Op::Within(_) => false,
    }
}

fn substring_match(text: &str, s: &Substrings, ignore_case: bool) -> bool {
    let lower = |x: &str| {
        if ignore_case {
            x.to_lowercase()
        } else {
            x.to_string()
        }
    };
    let text = lower(text);
    let Some(mut rest) = text.strip_prefix(lower(&s.initial).as_str()) else {
        return false;
    };
    for a in &s.any {
        let a = lower(a);
        match rest.find(a.as_str()) {
            Some(i) => rest = &rest[i + a.len()..],
            None => return false,
        }
    }
    rest.ends_with(lower(&s.last).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse;
    use serde_json::json;

    fn schema() -> QuerySchema {
        let mut fields = HashMap::new();
        for (name, ty) in [
            ("name", "string"),
            ("num", "number"),
            ("ok", "boolean"),
            ("ip", "ip"),
            ("net", "subnet"),
            ("tags", "[string]"),
            ("nums", "[number]"),
            ("r", "numrange"),
            ("when", "date"),
        ] {
            fields.insert(
                name.to_string(),
                (IndexType::parse(ty).unwrap(), format!("\"{name}\"")),
            );
        }
        QuerySchema {
            bucket: "b".into(),
            fields,
            reindexing: ["newf".to_string()].into_iter().collect(),
        }
    }

    fn c(filter: &str) -> Result<Query, MorayError> {
        compile(&schema(), &parse(filter).unwrap(), 1)
    }

    /// The name of the error compiling `filter` fails with.
    fn error_of(filter: &str) -> &'static str {
        match c(filter) {
            Ok(q) => panic!("{filter} compiled to {}", q.where_sql),
            Err(e) => e.name(),
        }
    }

    #[test]
    fn scalar_comparisons_put_the_column_on_the_right() {
        let q = c("(num>=5)").unwrap();
        assert_eq!(
            q.where_sql,
            "($1::text::numeric <= \"num\" AND \"num\" IS NOT NULL)"
        );
        assert_eq!(q.params, vec!["5"]);
        let q = c("(name<=m)").unwrap();
        assert_eq!(
            q.where_sql,
            "($1::text >= \"name\" AND \"name\" IS NOT NULL)"
        );
        assert!(q.residual.is_none());
    }

    #[test]
    fn arrays_use_containment_and_any() {
        assert_eq!(
            c("(tags=a)").unwrap().where_sql,
            "\"tags\" @> ARRAY[$1::text]"
        );
        assert_eq!(
            c("(nums>=3)").unwrap().where_sql,
            "$1::text::numeric <= ANY(\"nums\")"
        );
        assert_eq!(error_of("(tags=a*)"), "NotIndexedError");
    }

    #[test]
    fn substrings_become_escaped_like_patterns() {
        let q = c("(name=a%*b_*c)").unwrap();
        assert_eq!(q.where_sql, "(\"name\" LIKE $1 AND \"name\" IS NOT NULL)");
        assert_eq!(q.params, vec!["a\\%%b\\_%c"]);
        let q = c("(name:caseIgnoreSubstringsMatch:=*Foo*)").unwrap();
        assert!(q.where_sql.contains("ILIKE"));
        assert_eq!(q.params, vec!["%Foo%"]);
        assert_eq!(error_of("(num=1*)"), "InvalidQueryError");
    }

    #[test]
    fn extensible_range_operators() {
        let q = c("(num:within:=[1,5\\))").unwrap();
        assert_eq!(
            q.where_sql,
            "($1::text::numrange @> \"num\" AND \"num\" IS NOT NULL)"
        );
        let q = c("(net:contains:=10.1.2.3)").unwrap();
        assert_eq!(
            q.where_sql,
            "($1::text::inet << \"net\" AND \"net\" IS NOT NULL)"
        );
        let q = c("(r:overlaps:=[1,2])").unwrap();
        assert!(q.where_sql.contains("&&"));
        assert_eq!(error_of("(name:within:=[1,5\\))"), "InvalidQueryError");
        assert_eq!(error_of("(other:within:=[1,5\\))"), "NotIndexedError");
        assert_eq!(error_of("(num:within:=nope)"), "InvalidQueryError");
    }

    #[test]
    fn bad_values_are_invalid_queries() {
        for f in [
            "(num=abc)",
            "(ok=maybe)",
            "(ip=1.2.3)",
            "(when=today)",
            "(_id=x)",
        ] {
            assert_eq!(error_of(f), "InvalidQueryError", "{f}");
        }
        assert_eq!(error_of("(_idx=1)"), "InvalidQueryError");
    }

    #[test]
    fn unindexed_leaves() {
        // Alone: nothing to run.
        assert_eq!(error_of("(other=1)"), "InvalidQueryError");
        // In an AND: dropped from SQL, kept as residual.
        let q = c("(&(name=a)(other=1))").unwrap();
        assert_eq!(
            q.where_sql,
            "($1::text = \"name\" AND \"name\" IS NOT NULL)"
        );
        assert!(matches!(q.residual, Some(Residual::Local(_))));
        // An AND of only unindexed leaves, and an OR with one, are not indexed.
        assert_eq!(error_of("(&(x=1)(y=2))"), "NotIndexedError");
        assert_eq!(error_of("(|(name=a)(other=1))"), "NotIndexedError");
        // Reindexing fields count as unindexed.
        let q = c("(&(name=a)(newf=1))").unwrap();
        assert!(q.residual.is_some());
    }

    #[test]
    fn or_with_partial_children_selects_residual_columns() {
        let q = c("(|(&(name=a)(other=1))(num=2))").unwrap();
        assert_eq!(q.residual_columns.len(), 2);
        let r = q.residual.unwrap();
        let v = json!({"other": "1"});
        let v = v.as_object().unwrap();
        // name matched in SQL and other matches locally.
        assert!(eval(&r, v, &[true, false]));
        // name did not match: only num could make it match.
        assert!(!eval(&r, v, &[false, false]));
        assert!(eval(&r, v, &[false, true]));
    }

    #[test]
    fn not_of_unindexed_is_residual() {
        let q = c("(&(name=a)(!(other=1)))").unwrap();
        let r = q.residual.unwrap();
        assert!(eval(&r, json!({"other": "2"}).as_object().unwrap(), &[]));
        assert!(!eval(&r, json!({"other": "1"}).as_object().unwrap(), &[]));
        assert!(eval(&r, json!({}).as_object().unwrap(), &[]));
    }

    #[test]
    fn usable_check_lists_fields() {
        let e = check_usable(
            &schema(),
            &parse("(&(name=a)(other=1)(newf=2)(_id>=1))").unwrap(),
        )
        .unwrap_err();
        match e {
            MorayError::NotIndexed {
                unindexed,
                reindexing,
                ..
            } => {
                assert_eq!(unindexed, vec!["other"]);
                assert_eq!(reindexing, vec!["newf"]);
            }
            e => panic!("{e}"),
        }
        assert!(check_usable(&schema(), &parse("(&(name=a)(_key=x))").unwrap()).is_ok());
    }

    #[test]
    fn local_matching() {
        let v = json!({"S": "Hello", "n": 10, "arr": ["x", "yz"], "nul": null});
        let v = v.as_object().unwrap();
        let m = |f: &str| {
            let Filter::Leaf(l) = parse(f).unwrap() else {
                panic!()
            };
            matches_local(&l, v)
        };
        assert!(m("(s=Hello)"));
        assert!(m("(n=10)"));
        assert!(m("(n>=9)"));
        assert!(!m("(n>=11)"));
        assert!(m("(arr=yz)"));
        assert!(m("(arr=y*)"));
        assert!(m("(s=H*l*o)"));
        assert!(!m("(s=*x*)"));
        assert!(m("(s:caseIgnoreMatch:=hello)"));
        assert!(m("(s:caseIgnoreSubstringsMatch:=*ELL*)"));
        assert!(!m("(nul=*)"));
        assert!(!m("(missing=*)"));
    }

    #[test]
    fn sorting() {
        assert_eq!(order_by(&schema(), &[]).unwrap(), "ORDER BY _id ASC");
        assert_eq!(
            order_by(
                &schema(),
                &[("num".into(), "desc".into()), ("_key".into(), "".into())]
            )
            .unwrap(),
            "ORDER BY \"num\" DESC, _key ASC"
        );
        assert!(order_by(&schema(), &[("other".into(), "".into())]).is_err());
        assert!(order_by(&schema(), &[("num; DROP TABLE x".into(), "".into())]).is_err());
        assert!(order_by(&schema(), &[("num".into(), "sideways".into())]).is_err());
    }
}
