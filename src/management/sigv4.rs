//! Verifies AWS Signature Version 4 on management requests, so AWS SDK clients
//! (`ApiGatewayManagementApi`) work unchanged against the configured key pair:
//! canonical request, string to sign, the HMAC-SHA256 signing-key chain, and a
//! 5-minute clock-skew window (AWS's rule). As AWS, `host` and `x-amz-date` must be
//! signed, and an `x-amz-content-sha256` header must be the hash of the body received
//! (SPEC §8), so a signature cannot be replayed with another body.
//!
//! Everything here reads untrusted input: it works on bytes (the percent codec is
//! `crate::percent`) and never slices text at an offset that could split a character.

use std::borrow::Cow;

use super::Request;
use crate::percent;
use crate::sigv4 as core;

/// Most a request's `X-Amz-Date` may differ from our clock.
const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request was refused (for the log; the caller only sees 403).
pub type Refusal = Cow<'static, str>;

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(auth: &[u8]) -> Result<Authorization<'_>, Refusal> {
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
    let mut scope = credential.splitn(5, '/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request")) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err("malformed Credential scope".into());
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed_headers.ok_or("no SignedHeaders")?,
        signature: signature.ok_or("no Signature")?,
    })
}

/// Checks the request's signature; the error says why it was refused (for the log).
pub fn verify(
    req: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    now_unix: i64,
) -> Result<(), Refusal> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let a = parse_authorization(header("authorization").ok_or("no Authorization header")?)?;
    if a.access_key_id != access_key_id {
        return Err(format!("unknown access key {}", a.access_key_id).into());
    }
    let signed: Vec<&str> = a.signed_headers.split(';').collect();
    // AWS's canonical form: lower case, sorted, so each name once. A repeated name
    // would repeat its values in the canonical request (a 16 KiB head could make it
    // megabytes to hash before the signature is even compared).
    if signed.len() > req.headers.len()
        || signed
            .iter()
            .any(|n| n.bytes().any(|c| c.is_ascii_uppercase()))
        || signed.windows(2).any(|w| w[0] >= w[1])
    {
        return Err("SignedHeaders is not a sorted list of distinct lower-case names".into());
    }
    for required in ["host", "x-amz-date"] {
        if !signed.iter().any(|n| n.eq_ignore_ascii_case(required)) {
            return Err(format!("{required} is not among the signed headers").into());
        }
    }
    let amz_date = header("x-amz-date").ok_or("no X-Amz-Date header")?;
    let t = parse_amz_date(amz_date).ok_or("bad X-Amz-Date")?;
    // ASCII digits only, after `parse_amz_date`.
    let amz_date = std::str::from_utf8(amz_date).map_err(|_| "bad X-Amz-Date")?;
    if (t - now_unix).abs() > MAX_SKEW_SECS {
        return Err(format!("X-Amz-Date {amz_date} is more than 5 minutes from our clock").into());
    }
    if !amz_date.starts_with(a.date) || a.date.len() != 8 {
        return Err("credential date does not match X-Amz-Date".into());
    }
    let body_hash = core::sha256_hex(req.body);
    if let Some(claimed) = header("x-amz-content-sha256") {
        if !claimed.eq_ignore_ascii_case(&body_hash) {
            return Err("x-amz-content-sha256 is not the hash of the body".into());
        }
    }

    // The canonical request, string to sign and signature: the same code that signs
    // Lambda calls (`crate::sigv4`).
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let mut canonical = Vec::with_capacity(256 + req.target.len());
    core::begin_canonical(
        &mut canonical,
        req.method.as_bytes(),
        path.as_bytes(),
        canonical_query(query).as_bytes(),
    );
    for name in &signed {
        let mut values = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .peekable();
        if values.peek().is_none() {
            return Err(format!("signed header {name} is missing").into());
        }
        core::canonical_header(&mut canonical, name, values);
    }
    core::end_canonical(&mut canonical, a.signed_headers.as_bytes(), &body_hash);

    let scope = core::Scope {
        date: a.date,
        region: a.region,
        service: a.service,
    };
    let mut to_sign = Vec::with_capacity(160);
    core::string_to_sign(&mut to_sign, amz_date.as_bytes(), &scope, &canonical);
    let expected = core::signature(&core::signing_key(secret, &scope), &to_sign);
    if core::constant_time_eq(&expected, a.signature.as_bytes()) {
        Ok(())
    } else {
        Err("signature does not match".into())
    }
}

/// AWS's canonical query: each name and value decoded, then URI-encoded (`/`
/// included), sorted by name then value.
fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent::encode(&percent::decode(k.as_bytes()), false),
                percent::encode(&percent::decode(v.as_bytes()), false),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(q.len() * 2);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// `20261125T120000Z` → Unix seconds; `None` unless it is exactly that shape with
/// fields in range.
fn parse_amz_date(s: &[u8]) -> Option<i64> {
    if s.len() != 16 || s[8] != b'T' || s[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        s[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(crate::time::unix_from_civil(y, m, d, hh, mm, ss))
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
        let req = Request {
            method: "GET",
            target: "/",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date(b"20150830T123600Z").unwrap();
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

    /// AWS's "post-vanilla": the documented signature verifies (and so both ways:
    /// `crate::sigv4`'s tests sign the same requests to the same signatures).
    #[test]
    fn aws_post_vanilla_example_verifies() {
        let auth = b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
        let headers: [(&str, &[u8]); 3] = [
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", b"20150830T123600Z"),
            ("Authorization", auth),
        ];
        let req = Request {
            method: "POST",
            target: "/",
            headers: &headers,
            body: b"",
        };
        let now = parse_amz_date(b"20150830T123600Z").unwrap();
        assert_eq!(verify(&req, "AKIDEXAMPLE", VANILLA_SECRET, now), Ok(()));
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_amz_date(b"19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date(b"20000229T000000Z"), Some(951_782_400));
        assert_eq!(parse_amz_date(b"2000-02-29"), None);
    }

    #[test]
    fn paths_are_encoded_again_and_queries_sorted() {
        assert_eq!(
            percent::encode(b"/prod/@connections/abc%3D", true),
            "/prod/%40connections/abc%253D"
        );
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
    }

    const VANILLA_AUTH: &[u8] = b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    const VANILLA_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn vanilla(
        extra: &[(&'static str, &'static [u8])],
        target: &str,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", b"20150830T123600Z"),
            ("Authorization", VANILLA_AUTH),
        ];
        headers.extend_from_slice(extra);
        let req = Request {
            method: "GET",
            target,
            headers: &headers,
            body,
        };
        let now = parse_amz_date(b"20150830T123600Z").unwrap();
        verify(&req, "AKIDEXAMPLE", VANILLA_SECRET, now)
    }

    #[test]
    fn signed_headers_must_be_sorted_distinct_lower_case_names() {
        let now = parse_amz_date(b"20150830T123600Z").unwrap();
        let big = vec![b'v'; 8000];
        for list in [
            "host;x-amz-date;a;a".to_string(),
            format!("a;{}host;x-amz-date", "a;".repeat(4000)),
            "x-amz-date;host".to_string(),
            "Host;x-amz-date".to_string(),
        ] {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={list}, Signature=00"
            );
            let headers: [(&str, &[u8]); 4] = [
                ("Host", b"example.amazonaws.com"),
                ("X-Amz-Date", b"20150830T123600Z"),
                ("A", &big),
                ("Authorization", auth.as_bytes()),
            ];
            let req = Request {
                method: "GET",
                target: "/",
                headers: &headers,
                body: b"",
            };
            let e = verify(&req, "AKIDEXAMPLE", VANILLA_SECRET, now).unwrap_err();
            assert!(e.contains("SignedHeaders"), "{list:.40}: {e}");
        }
    }

    #[test]
    fn a_content_hash_header_must_match_the_body() {
        // SHA-256 of the empty body: the signature still verifies.
        let empty = b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            vanilla(&[("x-amz-content-sha256", empty)], "/", b""),
            Ok(())
        );
        // The same header with another body, or another hash with the empty body.
        let e = vanilla(&[("x-amz-content-sha256", empty)], "/", b"swapped").unwrap_err();
        assert!(e.contains("hash of the body"), "{e}");
        let e = vanilla(&[("x-amz-content-sha256", b"UNSIGNED-PAYLOAD")], "/", b"").unwrap_err();
        assert!(e.contains("hash of the body"), "{e}");
        // Without the header, the body is hashed into the signature: another body fails.
        assert!(vanilla(&[], "/", b"swapped").is_err());
    }

    #[test]
    fn host_and_date_must_be_signed() {
        for signed in ["host", "x-amz-date", "other;x-amz-date"] {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature=00"
            );
            let headers: [(&str, &[u8]); 3] = [
                ("Host", b"example.amazonaws.com"),
                ("X-Amz-Date", b"20150830T123600Z"),
                ("Authorization", auth.as_bytes()),
            ];
            let req = Request {
                method: "GET",
                target: "/",
                headers: &headers,
                body: b"",
            };
            let now = parse_amz_date(b"20150830T123600Z").unwrap();
            let e = verify(&req, "AKIDEXAMPLE", VANILLA_SECRET, now).unwrap_err();
            assert!(e.contains("signed headers"), "{signed}: {e}");
        }
    }

    #[test]
    fn non_ascii_query_and_date_are_refused_without_panicking() {
        // Both panicked when slicing text at byte offsets inside `é`.
        assert!(vanilla(&[], "/?a=%1\u{e9}", b"").is_err());
        assert!(vanilla(&[], "/?%\u{e9}=%\u{e9}\u{e9}", b"").is_err());
        assert_eq!(parse_amz_date("1234567\u{e9}000000Z".as_bytes()), None);
        assert_eq!(parse_amz_date("2015083\u{e9}123600Z".as_bytes()), None);
        assert_eq!(parse_amz_date(b"20151330T123600Z"), None);
        assert_eq!(parse_amz_date(b"2015+830T123600Z"), None);
    }
}
