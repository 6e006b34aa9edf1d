//! Verifies AWS Signature Version 4 on management requests, so AWS SDK clients
//! (`ApiGatewayManagementApi`) work unchanged against the configured key pair:
//! canonical request, string to sign, the HMAC-SHA256 signing-key chain, and a
//! 5-minute clock-skew window (AWS's rule).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Most a request's `X-Amz-Date` may differ from our clock.
const MAX_SKEW_SECS: i64 = 5 * 60;

/// A request as the verifier needs it.
pub struct Signed<'a> {
    pub method: &'a str,
    /// Path and query exactly as received.
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// Checks the request's signature; the error says why it was refused (for the log).
pub fn verify(
    req: &Signed<'_>,
    access_key_id: &str,
    secret: &str,
    now_unix: i64,
) -> Result<(), String> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let auth = header("authorization").ok_or("no Authorization header")?;
    let auth = std::str::from_utf8(auth).map_err(|_| "Authorization is not text")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not an AWS4-HMAC-SHA256 signature")?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or("no Credential")?;
    let signed_headers = signed_headers.ok_or("no SignedHeaders")?;
    let signature = signature.ok_or("no Signature")?;
    let mut scope = credential.splitn(5, '/');
    let (akid, date, region, service, terminal) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    );
    let (Some(akid), Some(date), Some(region), Some(service), Some("aws4_request")) =
        (akid, date, region, service, terminal)
    else {
        return Err("malformed Credential scope".into());
    };
    if akid != access_key_id {
        return Err(format!("unknown access key {akid}"));
    }
    let amz_date = header("x-amz-date").ok_or("no X-Amz-Date header")?;
    let amz_date = std::str::from_utf8(amz_date).map_err(|_| "bad X-Amz-Date")?;
    let t = parse_amz_date(amz_date).ok_or("bad X-Amz-Date")?;
    if (t - now_unix).abs() > MAX_SKEW_SECS {
        return Err(format!(
            "X-Amz-Date {amz_date} is more than 5 minutes from our clock"
        ));
    }
    if !amz_date.starts_with(date) {
        return Err("credential date does not match X-Amz-Date".into());
    }

    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let mut canonical = String::new();
    canonical.push_str(req.method);
    canonical.push('\n');
    canonical.push_str(&uri_encode(path.as_bytes(), false));
    canonical.push('\n');
    canonical.push_str(&canonical_query(query));
    canonical.push('\n');
    for name in signed_headers.split(';') {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {name} is missing"));
        }
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(signed_headers);
    canonical.push('\n');
    match header("x-amz-content-sha256") {
        Some(h) => canonical.push_str(&String::from_utf8_lossy(h)),
        None => canonical.push_str(&hex(&Sha256::digest(req.body))),
    }

    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    if constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        Ok(())
    } else {
        Err("signature does not match".into())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AWS URI encoding: unreserved characters stay, everything else becomes `%XX`
/// (`/` stays in paths). Applied to the path as received, this is the double
/// encoding AWS specifies for every service but S3.
fn uri_encode(b: &[u8], encode_slash: bool) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b'~')
            || (c == b'/' && !encode_slash)
        {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `20261125T120000Z` → Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    if s.len() != 16 || &s[8..9] != "T" || !s.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from civil (Howard Hinnant), the inverse of `time::civil`.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (sigv4 test suite "get-vanilla"): the documented
    /// signature for the documented request and secret.
    #[test]
    fn aws_get_vanilla_example_verifies() {
        let auth = b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let headers: [(&str, &[u8]); 3] = [
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", b"20150830T123600Z"),
            ("Authorization", auth),
        ];
        let req = Signed {
            method: "GET",
            target: "/",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date("20150830T123600Z").unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(verify(&req, "AKIDEXAMPLE", secret, now), Ok(()));
        assert!(verify(&req, "AKIDEXAMPLE", "wrong", now)
            .unwrap_err()
            .contains("does not match"));
        assert!(verify(&req, "OTHER", secret, now).is_err());
        assert!(verify(&req, "AKIDEXAMPLE", secret, now + 301)
            .unwrap_err()
            .contains("5 minutes"));
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
        assert_eq!(parse_amz_date("2000-02-29"), None);
    }

    #[test]
    fn paths_are_encoded_again_and_queries_sorted() {
        assert_eq!(
            uri_encode(b"/prod/@connections/abc%3D", false),
            "/prod/%40connections/abc%253D"
        );
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
    }
}
