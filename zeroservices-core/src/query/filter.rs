//! Parsed filter documents and their evaluation.

use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::check_path;
use super::path::{cmp_values, resolve, values_equal};
use crate::error::{Error, Result};

/// A parsed filter. Parsing rejects unknown operators and malformed operands, so evaluation
/// never fails. It keeps the document it was parsed from ([`Filter::doc`]): that is what
/// travels on the wire (it serializes as the document and deserializes by parsing, so a query
/// that arrives is checked once, where it arrives), what an index plans with and what MongoDB
/// is given.
#[derive(Debug, Clone)]
pub struct Filter {
    node: Node,
    doc: Value,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter::all()
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.doc == other.doc
    }
}

impl serde::Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.doc.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Filter {
    /// A filter document, or `null` for "everything".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Filter, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Filter::all()),
            doc => Filter::parse(&doc).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Field(String, Vec<Cond>),
    /// Distinct lowercase terms (at most [`MAX_TEXT_TERMS`]).
    Text(std::collections::HashSet<String>),
}

#[derive(Debug, Clone)]
enum Cond {
    Eq(Value),
    Ne(Value),
    Cmp(Ordering, bool, Value), // wanted ordering, or-equal
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Regex(Regex),
    Not(Vec<Cond>),
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

impl Filter {
    /// The filter that matches everything.
    pub fn all() -> Filter {
        Filter {
            node: Node::And(Vec::new()),
            doc: Value::Object(serde_json::Map::new()),
        }
    }

    /// Both `self` and `other` (as the document `{"$and": [self, other]}`), without parsing
    /// either again.
    pub fn and(self, other: Filter) -> Filter {
        if self.is_all() {
            return other;
        }
        if other.is_all() {
            return self;
        }
        Filter {
            doc: serde_json::json!({ "$and": [self.doc, other.doc] }),
            node: Node::And(vec![self.node, other.node]),
        }
    }

    /// The document this filter was parsed from.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Parses a filter document.
    pub fn parse(doc: &Value) -> Result<Filter> {
        let texts = count_key(doc, "$text", 0);
        if texts > MAX_TEXTS {
            return Err(bad(format!(
                "{texts} $text in one filter (at most {MAX_TEXTS})"
            )));
        }
        let regexes = count_key(doc, "$regex", 0);
        if regexes > MAX_REGEXES {
            return Err(bad(format!(
                "{regexes} $regex in one filter (at most {MAX_REGEXES})"
            )));
        }
        Ok(Filter {
            node: parse_doc(doc, 0)?,
            doc: doc.clone(),
        })
    }

    /// True when `data` matches.
    pub fn matches(&self, data: &Value) -> bool {
        eval(&self.node, data)
    }

    /// True for the empty filter, which matches every resource.
    pub fn is_all(&self) -> bool {
        matches!(&self.node, Node::And(v) if v.is_empty())
    }
}

const MAX_DEPTH: usize = 32;
/// `$regex` conditions one filter may hold: each is compiled and run on every candidate.
pub(crate) const MAX_REGEXES: usize = 16;
/// Distinct terms of one `$text` (each document's words are looked up in a set of them).
pub(crate) const MAX_TEXT_TERMS: usize = 64;
/// `$text` conditions one filter may hold.
const MAX_TEXTS: usize = 4;

/// How many times `key` appears as an object key in `v` (nesting beyond [`MAX_DEPTH`] is left
/// to the parser, which refuses it).
fn count_key(v: &Value, key: &str, depth: usize) -> usize {
    if depth > MAX_DEPTH + 2 {
        return 0;
    }
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| usize::from(k == key) + count_key(v, key, depth + 1))
            .sum(),
        Value::Array(a) => a.iter().map(|v| count_key(v, key, depth + 1)).sum(),
        _ => 0,
    }
}

fn parse_doc(doc: &Value, depth: usize) -> Result<Node> {
    if depth > MAX_DEPTH {
        return Err(bad("filter nested too deeply"));
    }
    let obj = doc
        .as_object()
        .ok_or_else(|| bad("a filter must be a JSON object"))?;
    let mut parts = Vec::new();
    for (k, v) in obj {
        let node = match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let items = v
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| bad(format!("{k} takes a non-empty array of filters")))?;
                let subs = items
                    .iter()
                    .map(|i| parse_doc(i, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                match k.as_str() {
                    "$and" => Node::And(subs),
                    "$or" => Node::Or(subs),
                    _ => Node::Nor(subs),
                }
            }
            "$text" => {
                let search = match v {
                    Value::String(s) => s.as_str(),
                    Value::Object(o) => o
                        .get("$search")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("$text takes a string or {\"$search\": string}"))?,
                    _ => return Err(bad("$text takes a string or {\"$search\": string}")),
                };
                let terms: std::collections::HashSet<String> =
                    search.split_whitespace().map(str::to_lowercase).collect();
                if terms.len() > MAX_TEXT_TERMS {
                    return Err(bad(format!(
                        "$text has {} distinct terms (at most {MAX_TEXT_TERMS})",
                        terms.len()
                    )));
                }
                Node::Text(terms)
            }
            op if op.starts_with('$') => return Err(bad(format!("unknown operator {op}"))),
            path => {
                check_path(path)?;
                Node::Field(path.to_owned(), parse_conds(v, depth)?)
            }
        };
        parts.push(node);
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Node::And(parts)
    })
}

fn is_operator_doc(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| !o.is_empty() && o.keys().all(|k| k.starts_with('$')))
}

fn parse_conds(v: &Value, depth: usize) -> Result<Vec<Cond>> {
    if !is_operator_doc(v) {
        if let Some(o) = v.as_object() {
            if o.keys().any(|k| k.starts_with('$')) {
                return Err(bad("cannot mix operators and fields in one condition"));
            }
        }
        return Ok(vec![Cond::Eq(v.clone())]);
    }
    let obj = v
        .as_object()
        .ok_or_else(|| bad("condition must be an object"))?;
    let options = obj
        .get("$options")
        .map(|o| o.as_str().ok_or_else(|| bad("$options takes a string")))
        .transpose()?;
    let mut conds = Vec::new();
    for (op, arg) in obj {
        let c = match op.as_str() {
            "$eq" => Cond::Eq(arg.clone()),
            "$ne" => Cond::Ne(arg.clone()),
            "$gt" => Cond::Cmp(Ordering::Greater, false, arg.clone()),
            "$gte" => Cond::Cmp(Ordering::Greater, true, arg.clone()),
            "$lt" => Cond::Cmp(Ordering::Less, false, arg.clone()),
            "$lte" => Cond::Cmp(Ordering::Less, true, arg.clone()),
            "$in" | "$nin" => {
                let list = arg
                    .as_array()
                    .ok_or_else(|| bad(format!("{op} takes an array")))?
                    .clone();
                if op == "$in" {
                    Cond::In(list)
                } else {
                    Cond::Nin(list)
                }
            }
            "$exists" => Cond::Exists(
                arg.as_bool()
                    .ok_or_else(|| bad("$exists takes a boolean"))?,
            ),
            "$regex" => regex(arg, options)?,
            "$options" => {
                if !obj.contains_key("$regex") {
                    return Err(bad("$options needs $regex"));
                }
                continue;
            }
            "$not" => {
                if depth > MAX_DEPTH || !is_operator_doc(arg) {
                    return Err(bad("$not takes an operator document such as {\"$gt\": 3}"));
                }
                Cond::Not(parse_conds(arg, depth + 1)?)
            }
            other => return Err(bad(format!("unknown operator {other}"))),
        };
        conds.push(c);
    }
    Ok(conds)
}

/// A `$regex` condition with its `$options` flags (`i`, `m`, `s`, `x`), compiled with a size
/// limit.
fn regex(arg: &Value, options: Option<&str>) -> Result<Cond> {
    let pattern = arg.as_str().ok_or_else(|| bad("$regex takes a string"))?;
    let mut b = RegexBuilder::new(pattern);
    b.size_limit(1 << 20);
    for flag in options.unwrap_or("").chars() {
        match flag {
            'i' => b.case_insensitive(true),
            'm' => b.multi_line(true),
            's' => b.dot_matches_new_line(true),
            'x' => b.ignore_whitespace(true),
            f => return Err(bad(format!("unknown $regex option {f:?}"))),
        };
    }
    Ok(Cond::Regex(
        b.build().map_err(|e| bad(format!("invalid $regex: {e}")))?,
    ))
}

fn eval(node: &Node, data: &Value) -> bool {
    match node {
        Node::And(v) => v.iter().all(|n| eval(n, data)),
        Node::Or(v) => v.iter().any(|n| eval(n, data)),
        Node::Nor(v) => !v.iter().any(|n| eval(n, data)),
        Node::Field(path, conds) => {
            let found = resolve(data, path);
            conds.iter().all(|c| eval_cond(c, &found))
        }
        Node::Text(terms) => text_matches(data, terms),
    }
}

/// Candidates of a path: each found value, plus the elements of found arrays.
fn any_candidate(found: &[&Value], f: impl Fn(&Value) -> bool) -> bool {
    found
        .iter()
        .any(|v| f(v) || v.as_array().is_some_and(|a| a.iter().any(&f)))
}

fn eq_matches(found: &[&Value], want: &Value) -> bool {
    if want.is_null() && found.is_empty() {
        return true;
    }
    any_candidate(found, |c| values_equal(c, want))
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_))
    )
}

fn eval_cond(c: &Cond, found: &[&Value]) -> bool {
    match c {
        Cond::Eq(v) => eq_matches(found, v),
        Cond::Ne(v) => !eq_matches(found, v),
        Cond::Cmp(want, or_eq, v) => any_candidate(found, |c| {
            same_kind(c, v) && {
                let o = cmp_values(c, v);
                o == *want || (*or_eq && o.is_eq())
            }
        }),
        Cond::In(list) => list.iter().any(|v| eq_matches(found, v)),
        Cond::Nin(list) => !list.iter().any(|v| eq_matches(found, v)),
        Cond::Exists(want) => found.is_empty() != *want,
        Cond::Regex(re) => any_candidate(found, |c| c.as_str().is_some_and(|s| re.is_match(s))),
        Cond::Not(conds) => !conds.iter().all(|c| eval_cond(c, found)),
    }
}

/// Any term appears as a whole word (case-insensitive) in any string of the document. Each
/// word is lowercased once and looked up in the set of terms: the cost is the document's
/// words, whatever the number of terms.
fn text_matches(data: &Value, terms: &std::collections::HashSet<String>) -> bool {
    fn any_word(v: &Value, terms: &std::collections::HashSet<String>, word: &mut String) -> bool {
        match v {
            Value::String(s) => s
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .any(|w| {
                    word.clear();
                    word.extend(w.chars().flat_map(char::to_lowercase));
                    terms.contains(word.as_str())
                }),
            Value::Array(a) => a.iter().any(|x| any_word(x, terms, word)),
            Value::Object(o) => o.values().any(|x| any_word(x, terms, word)),
            _ => false,
        }
    }
    !terms.is_empty() && any_word(data, terms, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_terms_are_deduplicated_and_capped() {
        let many: Vec<String> = (0..=MAX_TEXT_TERMS).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            Filter::parse(&json!({"$text": many.join(" ")})),
            Err(crate::Error::BadRequest(_))
        ));
        // 8,000 terms, all the same word: one term.
        let same = vec!["Word"; 8000].join(" ");
        let f = Filter::parse(&json!({ "$text": same })).unwrap();
        assert!(f.matches(&json!({"title": "a WORD here"})));
        assert!(!f.matches(&json!({"title": "words"})));
        let or: Vec<Value> = (0..=MAX_TEXTS).map(|_| json!({"$text": "a"})).collect();
        assert!(Filter::parse(&json!({ "$or": or })).is_err());
    }

    #[test]
    fn at_most_sixteen_regexes_per_filter() {
        let cond = |n: usize| -> Value {
            let parts: Vec<Value> = (0..n)
                .map(|i| json!({format!("f{i}"): {"$regex": "^a"}}))
                .collect();
            json!({"$or": parts})
        };
        assert!(Filter::parse(&cond(MAX_REGEXES)).is_ok());
        assert!(matches!(
            Filter::parse(&cond(MAX_REGEXES + 1)),
            Err(crate::Error::BadRequest(_))
        ));
    }
}
