//! Kubernetes label selector syntax (also used for field selectors).

/// One comma-separated term of a selector; all terms must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    pub(super) fn key(&self) -> &str {
        match self {
            Requirement::Eq(k, _)
            | Requirement::NotEq(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _) => k,
        }
    }

    /// `value` is the object's value for [`Requirement::key`], if any.
    /// As in Kubernetes, `!=` and `notin` also match a missing key.
    pub(super) fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Requirement::Eq(_, v) => value == Some(v.as_str()),
            Requirement::NotEq(_, v) => value != Some(v.as_str()),
            Requirement::Exists(_) => value.is_some(),
            Requirement::NotExists(_) => value.is_none(),
            Requirement::In(_, vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(_, vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
        }
    }
}

/// Parses `k=v,k==v,k!=v,k,!k,k in (a,b),k notin (a,b)`; empty = everything.
pub(super) fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    split_terms(s).into_iter().filter(|t| !t.is_empty()).map(parse_term).collect()
}

/// Splits on commas that are not inside a `(...)` value set.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(s[start..].trim());
    terms
}

fn parse_term(t: &str) -> Result<Requirement, String> {
    let bad = || format!("unable to parse requirement: {t:?}");
    let key = |k: &str| {
        let k = k.trim();
        let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if ok {
            Ok(k.to_string())
        } else {
            Err(bad())
        }
    };
    if let Some((head, rest)) = t.split_once('(') {
        let values = rest.strip_suffix(')').ok_or_else(bad)?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        let words: Vec<&str> = head.split_whitespace().collect();
        return match words.as_slice() {
            [k, "in"] => Ok(Requirement::In(key(k)?, values)),
            [k, "notin"] => Ok(Requirement::NotIn(key(k)?, values)),
            _ => Err(bad()),
        };
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Requirement::NotEq(key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(Requirement::Eq(key(k)?, v.trim().to_string()));
    }
    match t.strip_prefix('!') {
        Some(k) => Ok(Requirement::NotExists(key(k)?)),
        None => Ok(Requirement::Exists(key(t)?)),
    }
}
