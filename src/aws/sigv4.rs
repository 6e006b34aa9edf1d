//! Signs Lambda Invoke API calls with SigV4 (service `lambda`), through the same
//! canonical-request code that verifies management requests (`crate::sigv4`). As
//! botocore's `SigV4Auth`: `content-type`, `host` and `x-amz-date` are signed (and
//! `x-amz-security-token` with a session token), the payload hash is computed but not
//! sent. A worker owns one [`Signer`]: the signing key is cached for its day and
//! region, and the buffers are reused, so signing allocates nothing after warm-up.

use super::Invoke;
use crate::sigv4::{self as core, Scope};

/// A worker's signing state.
#[derive(Default)]
pub struct Signer {
    /// The day (`YYYYMMDD`) and region the cached key is for.
    key_date: [u8; 8],
    key_region: String,
    key_access_key_id: String,
    key: [u8; 32],
    canonical: Vec<u8>,
    to_sign: Vec<u8>,
    /// The header lines of the last [`Signer::sign`].
    headers: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    /// Signs `POST {path}` to `host` with a JSON `body` at `now_ms`; returns the
    /// header lines to add (`X-Amz-Date`, `X-Amz-Security-Token`, `Authorization`,
    /// each ending in CRLF). `content_type` must be the request's `Content-Type`.
    pub fn sign(
        &mut self,
        invoke: &Invoke,
        host: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
        now_ms: u64,
    ) -> &[u8] {
        let creds = &*invoke.credentials;
        let amz_date = core::amz_date(now_ms);
        let date = std::str::from_utf8(&amz_date[..8]).expect("amz_date writes digits");
        let scope = Scope {
            date,
            region: &invoke.region,
            service: "lambda",
        };
        if self.key_date != amz_date[..8]
            || self.key_region != invoke.region
            || self.key_access_key_id != creds.access_key_id
        {
            self.key = core::signing_key(&creds.secret_access_key, &scope);
            self.key_date.copy_from_slice(&amz_date[..8]);
            self.key_region.clear();
            self.key_region.push_str(&invoke.region);
            self.key_access_key_id.clear();
            self.key_access_key_id.push_str(&creds.access_key_id);
        }
        let token = creds.session_token.as_deref();
        let signed: &[u8] = if token.is_some() {
            b"content-type;host;x-amz-date;x-amz-security-token"
        } else {
            b"content-type;host;x-amz-date"
        };
        let c = &mut self.canonical;
        c.clear();
        core::begin_canonical(c, b"POST", path.as_bytes(), b"");
        core::canonical_header(c, "content-type", [content_type.as_bytes()]);
        core::canonical_header(c, "host", [host.as_bytes()]);
        core::canonical_header(c, "x-amz-date", [&amz_date[..]]);
        if let Some(t) = token {
            core::canonical_header(c, "x-amz-security-token", [t.as_bytes()]);
        }
        core::end_canonical(c, signed, &core::sha256_hex(body));
        self.to_sign.clear();
        core::string_to_sign(&mut self.to_sign, &amz_date, &scope, c);
        let sig = core::signature(&self.key, &self.to_sign);

        let h = &mut self.headers;
        h.clear();
        h.extend_from_slice(b"X-Amz-Date: ");
        h.extend_from_slice(&amz_date);
        h.extend_from_slice(b"\r\n");
        if let Some(t) = token {
            h.extend_from_slice(b"X-Amz-Security-Token: ");
            h.extend_from_slice(t.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"Authorization: AWS4-HMAC-SHA256 Credential=");
        h.extend_from_slice(creds.access_key_id.as_bytes());
        h.push(b'/');
        scope.write(h);
        h.extend_from_slice(b", SignedHeaders=");
        h.extend_from_slice(signed);
        h.extend_from_slice(b", Signature=");
        h.extend_from_slice(&sig);
        h.extend_from_slice(b"\r\n");
        &self.headers
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aws::Credentials;
    use crate::management::{sigv4::verify, Request};

    fn invoke(token: Option<&str>) -> Invoke {
        Invoke {
            function: "chat".into(),
            region: "us-east-1".into(),
            credentials: Arc::new(Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: token.map(String::from),
            }),
        }
    }

    /// What we sign, the verifier (checked against AWS's vectors) accepts, with
    /// service `lambda` and any body; another body or path does not verify.
    fn round_trip(token: Option<&str>) {
        let inv = invoke(token);
        let mut s = Signer::default();
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Achat/invocations";
        let body = br#"{"requestContext":{"routeKey":"$default"}}"#;
        let now_ms = 1_440_938_160_000;
        let lines = String::from_utf8(
            s.sign(&inv, "127.0.0.1:9", path, "application/json", body, now_ms)
                .to_vec(),
        )
        .unwrap();
        assert!(lines.contains("/us-east-1/lambda/aws4_request"), "{lines}");
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"127.0.0.1:9"),
            ("Content-Type", b"application/json"),
        ];
        for l in lines.split("\r\n").filter(|l| !l.is_empty()) {
            let (n, v) = l.split_once(": ").unwrap();
            headers.push((n, v.as_bytes()));
        }
        let req = |path, body| Request {
            method: "POST",
            target: path,
            headers: &headers,
            body,
        };
        let now = (now_ms / 1000) as i64;
        let secret = &inv.credentials.secret_access_key;
        assert_eq!(verify(&req(path, body), "AKIDEXAMPLE", secret, now), Ok(()));
        assert!(verify(&req(path, b"{}"), "AKIDEXAMPLE", secret, now).is_err());
        assert!(verify(&req("/other", body), "AKIDEXAMPLE", secret, now).is_err());
        // The cached key serves the next call the same day.
        let again = s
            .sign(&inv, "127.0.0.1:9", path, "application/json", body, now_ms)
            .to_vec();
        assert_eq!(again, lines.as_bytes());
    }

    #[test]
    fn signed_calls_verify() {
        round_trip(None);
    }

    #[test]
    fn session_tokens_are_sent_and_signed() {
        round_trip(Some("FwoGZXIvYXdzEBY"));
        let mut s = Signer::default();
        let lines = s.sign(&invoke(Some("tok")), "h", "/", "application/json", b"", 0);
        let lines = std::str::from_utf8(lines).unwrap();
        assert!(lines.contains("X-Amz-Security-Token: tok\r\n"), "{lines}");
        assert!(lines.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"));
        assert!(!lines.contains("wJalr"), "{lines}");
    }
}
