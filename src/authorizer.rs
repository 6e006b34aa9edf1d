//! REQUEST authorizers on `$connect` (SPEC §11): what an authorizer's answer means
//! (AWS's policy evaluation), the context a connection keeps from it, and the
//! per-worker cache of answers (`cache_ttl` [ext]).

use std::collections::VecDeque;

/// The largest authorizer result read (AWS: 8 KB); a bigger one is an error.
pub const MAX_RESULT_BYTES: usize = 8 * 1024;
/// Entries one worker's cache holds at most; the oldest goes first.
pub const CACHE_ENTRIES: usize = 1024;
/// What the client gets when the authorizer refuses without a policy.
pub const UNAUTHORIZED: &[u8] = b"{\"message\":\"Unauthorized\"}";
/// What the client gets when a policy denies.
pub const FORBIDDEN: &[u8] = b"{\"message\":\"Forbidden\"}";
/// What the client gets when the authorizer failed.
pub const FAILED: &[u8] = b"{\"message\":null}";

/// What a connection keeps from an Allow: `requestContext.authorizer` of every later
/// event, `context.authorizer.*` and `$context.authorizer.*`. Boxed in the session,
/// only when there is an authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub principal_id: String,
    /// The authorizer call's latency, ms (`integrationLatency`), and as text.
    pub latency_ms: u64,
    latency_text: String,
    /// `context`, values stringified as AWS does (`true`, `42`, `1.5`).
    pub values: Vec<(String, String)>,
}

impl Context {
    /// A value by name: `principalId`, `integrationLatency` or a context key.
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "principalId" => Some(&self.principal_id),
            "integrationLatency" => Some(&self.latency_text),
            _ => self
                .values
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// Sets `integrationLatency`.
    pub fn set_latency(&mut self, ms: u64) {
        self.latency_ms = ms;
        self.latency_text = ms.to_string();
    }

    /// Appends `"authorizer":{...}` (no leading comma) for an event's `requestContext`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"authorizer\":{\"principalId\":");
        crate::json::write_str(out, self.principal_id.as_bytes());
        out.extend_from_slice(b",\"integrationLatency\":");
        out.extend_from_slice(self.latency_text.as_bytes());
        for (k, v) in &self.values {
            out.push(b',');
            crate::json::write_str(out, k.as_bytes());
            out.push(b':');
            crate::json::write_str(out, v.as_bytes());
        }
        out.push(b'}');
    }
}

/// What an authorizer's answer decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `$connect` goes on with this context (latency not set yet).
    Allow(Context),
    /// 403.
    Deny,
    /// 401.
    Unauthorized,
    /// 500, with why (for the error log).
    Error(&'static str),
}

/// Reads an authorizer result (an HTTP reply body or a Lambda function's result) and
/// evaluates its policy against `method_arn`: allowed when an Allow statement matches
/// `execute-api:Invoke` on it and no Deny statement does.
pub fn evaluate(result: &[u8], method_arn: &str) -> Decision {
    use simd_json::prelude::*;
    if result.len() > MAX_RESULT_BYTES {
        return Decision::Error("the authorizer's result is over 8 KB");
    }
    let mut copy = result.to_vec();
    let Ok(v) = simd_json::to_borrowed_value(&mut copy) else {
        return Decision::Error("the authorizer's result is not JSON");
    };
    if v.as_str() == Some("Unauthorized") {
        return Decision::Unauthorized;
    }
    let Some(obj) = v.as_object() else {
        return Decision::Error("the authorizer's result is not an object");
    };
    let principal_id = match obj.get("principalId") {
        None => String::new(),
        Some(p) => match p.as_str() {
            Some(s) => s.to_string(),
            None if p.is_null() => String::new(),
            None => return Decision::Error("principalId is not a string"),
        },
    };
    let Some(statements) = obj
        .get("policyDocument")
        .and_then(|d| d.as_object())
        .and_then(|d| d.get("Statement"))
    else {
        return Decision::Error("the authorizer's result has no policyDocument.Statement");
    };
    // A single statement may be written as an object instead of a list.
    let list: Vec<_> = match statements.as_array() {
        Some(a) => a.iter().collect(),
        None => vec![statements],
    };
    let (mut allowed, mut denied) = (false, false);
    for s in list {
        let Some(s) = s.as_object() else {
            return Decision::Error("a policy statement is not an object");
        };
        let effect = s.get("Effect").and_then(|e| e.as_str());
        let hit = |field: &str, text: &str| -> Option<bool> {
            match s.get(field) {
                Some(x) if x.as_str().is_some() => Some(matches(x.as_str()?, text)),
                Some(x) if x.as_array().is_some() => {
                    let items = x.as_array()?;
                    let mut any = false;
                    for i in items {
                        any |= matches(i.as_str()?, text);
                    }
                    Some(any)
                }
                _ => None,
            }
        };
        let (Some(action), Some(resource)) = (
            hit("Action", "execute-api:Invoke"),
            hit("Resource", method_arn),
        ) else {
            return Decision::Error("a policy statement's Action or Resource is malformed");
        };
        let applies = action && resource;
        match effect {
            Some(e) if e.eq_ignore_ascii_case("allow") => allowed |= applies,
            Some(e) if e.eq_ignore_ascii_case("deny") => denied |= applies,
            _ => return Decision::Error("a policy statement's Effect is not Allow or Deny"),
        }
    }
    if denied || !allowed {
        return Decision::Deny;
    }
    let mut values = Vec::new();
    if let Some(c) = obj.get("context") {
        let Some(c) = c.as_object() else {
            if c.is_null() {
                return Decision::Allow(Context {
                    principal_id,
                    latency_ms: 0,
                    latency_text: "0".into(),
                    values,
                });
            }
            return Decision::Error("the authorizer's context is not an object");
        };
        for (k, v) in c.iter() {
            let text = if let Some(s) = v.as_str() {
                s.to_string()
            } else if let Some(b) = v.as_bool() {
                b.to_string()
            } else if v.is_number() {
                v.to_string()
            } else {
                return Decision::Error("a context value is not a string, number or boolean");
            };
            values.push((k.to_string(), text));
        }
    }
    Decision::Allow(Context {
        principal_id,
        latency_ms: 0,
        latency_text: "0".into(),
        values,
    })
}

/// Whether a Lambda function error's payload says `Unauthorized` (the authorizer
/// threw `new Error("Unauthorized")`, or returned the callback error).
pub fn is_unauthorized_error(payload: &[u8]) -> bool {
    use simd_json::prelude::*;
    let mut copy = payload.to_vec();
    let Ok(v) = simd_json::to_borrowed_value(&mut copy) else {
        return false;
    };
    v.as_str() == Some("Unauthorized")
        || v.as_object()
            .and_then(|o| o.get("errorMessage"))
            .and_then(|m| m.as_str())
            == Some("Unauthorized")
}

/// IAM-style wildcard match (`*`: any run, `?`: one character, case-sensitive). The
/// greedy two-pointer walk resumes only from the latest `*` (an earlier star never
/// needs revisiting), so it does at most `pattern.len() × text.len()` steps whatever
/// the pattern: no exponential backtracking on `*a*a*a…`. The text is the
/// `methodArn` or `execute-api:Invoke` (bounded by the config), so the work is linear
/// in the authorizer's result.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
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

/// One worker's cache of authorizer answers (`cache_ttl` [ext]), keyed by the
/// authorizer and its identity-source values; bounded to [`CACHE_ENTRIES`], oldest
/// first out, entries expire after the authorizer's TTL.
#[derive(Debug, Default)]
pub struct Cache {
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    authorizer: usize,
    key: Vec<u8>,
    expires_ms: u64,
    decision: Decision,
}

impl Cache {
    /// The cached decision for `key`, unless it expired.
    pub fn get(&mut self, authorizer: usize, key: &[u8], now_ms: u64) -> Option<&Decision> {
        while self.entries.front().is_some_and(|e| e.expires_ms <= now_ms) {
            self.entries.pop_front();
        }
        self.entries
            .iter()
            .find(|e| e.authorizer == authorizer && e.key == key && e.expires_ms > now_ms)
            .map(|e| &e.decision)
    }

    /// Remembers a decision until `expires_ms`.
    pub fn put(&mut self, authorizer: usize, key: Vec<u8>, expires_ms: u64, decision: Decision) {
        self.entries
            .retain(|e| !(e.authorizer == authorizer && e.key == key));
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            authorizer,
            key,
            expires_ms,
            decision,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:execute-api:local:000000000000:chat/dev/$connect";

    fn policy(statements: &str) -> Vec<u8> {
        format!(
            r#"{{"principalId":"u1","policyDocument":{{"Version":"2012-10-17","Statement":{statements}}},"context":{{"s":"x","n":42,"f":1.5,"b":true}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn wildcards() {
        assert!(matches("*", ARN));
        assert!(matches("arn:aws:execute-api:*:*:chat/*/$connect", ARN));
        assert!(matches(
            "arn:aws:execute-api:local:00000000000?:chat/dev/*",
            ARN
        ));
        assert!(!matches(
            "arn:aws:execute-api:local:0000000000??:chat/dev",
            ARN
        ));
        assert!(!matches("arn:aws:execute-api:*:*:other/*", ARN));
        assert!(matches("execute-api:*", "execute-api:Invoke"));
        assert!(!matches("", "a"));
        assert!(matches("", ""));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn wildcard_is_not_exponential() {
        let text = "a".repeat(4000);
        let pattern = "*a".repeat(2000) + "b";
        let start = std::time::Instant::now();
        assert!(!matches(&pattern, &text));
        // Counted work, not time: a backtracking matcher would never finish.
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn allow_deny_and_errors() {
        let allow = r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:*:*:chat/dev/*"}]"#;
        match evaluate(&policy(allow), ARN) {
            Decision::Allow(c) => {
                assert_eq!(c.principal_id, "u1");
                assert_eq!(c.get("n"), Some("42"));
                assert_eq!(c.get("f"), Some("1.5"));
                assert_eq!(c.get("b"), Some("true"));
                assert_eq!(c.get("s"), Some("x"));
            }
            d => panic!("{d:?}"),
        }
        // Action as a list, a single statement as an object.
        let list = r#"{"Action":["x:y","execute-api:*"],"Effect":"Allow","Resource":["*"]}"#;
        assert!(matches!(evaluate(&policy(list), ARN), Decision::Allow(_)));
        // Deny wins.
        let both = r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"*"},{"Action":"*","Effect":"Deny","Resource":"arn:*"}]"#;
        assert_eq!(evaluate(&policy(both), ARN), Decision::Deny);
        // An Allow on another resource is no Allow.
        let other = r#"[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:*:*:other/*"}]"#;
        assert_eq!(evaluate(&policy(other), ARN), Decision::Deny);
        assert_eq!(evaluate(b"\"Unauthorized\"", ARN), Decision::Unauthorized);
        assert!(matches!(evaluate(b"{", ARN), Decision::Error(_)));
        assert!(matches!(evaluate(b"{}", ARN), Decision::Error(_)));
        assert!(matches!(evaluate(b"\"other\"", ARN), Decision::Error(_)));
        let nested = format!(
            r#"{{"principalId":"u","policyDocument":{{"Statement":{allow}}},"context":{{"o":{{}}}}}}"#
        );
        assert!(matches!(
            evaluate(nested.as_bytes(), ARN),
            Decision::Error(_)
        ));
        let big = vec![b' '; MAX_RESULT_BYTES + 1];
        assert!(matches!(evaluate(&big, ARN), Decision::Error(_)));
    }

    #[test]
    fn context_json() {
        let mut c = Context {
            principal_id: "u\"1".into(),
            latency_ms: 0,
            latency_text: String::new(),
            values: vec![("k".into(), "v".into())],
        };
        c.set_latency(7);
        assert_eq!(c.get("integrationLatency"), Some("7"));
        let mut out = b"{".to_vec();
        c.write_json(&mut out);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["authorizer"],
            serde_json::json!({"principalId":"u\"1","integrationLatency":7,"k":"v"})
        );
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let mut c = Cache::default();
        c.put(0, b"k".to_vec(), 100, Decision::Deny);
        assert_eq!(c.get(0, b"k", 50), Some(&Decision::Deny));
        assert_eq!(c.get(1, b"k", 50), None);
        assert_eq!(c.get(0, b"k", 100), None);
        for i in 0..(CACHE_ENTRIES + 10) {
            c.put(0, i.to_string().into_bytes(), 1000, Decision::Unauthorized);
        }
        assert_eq!(c.entries.len(), CACHE_ENTRIES);
        assert_eq!(c.get(0, b"0", 10), None);
        assert!(c
            .get(0, (CACHE_ENTRIES + 9).to_string().as_bytes(), 10)
            .is_some());
    }
}
