//! AWS Signature Version 4, the one implementation both directions use: the
//! management API verifies SDK requests with it (`management::sigv4`), and Lambda
//! integrations sign their Invoke API calls with it (`aws::sigv4`). Canonical
//! request, string to sign, the HMAC-SHA256 signing-key chain and the signature are
//! written here once, so a request we sign verifies with the code that verifies AWS
//! SDKs, and both are checked against AWS's published test vectors.
//!
//! Everything writes into caller-owned buffers and fixed arrays: a worker signs a
//! call without allocating once its buffers have grown.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Writes the canonical request's first three lines: method, canonical URI (the path
/// as sent, URI-encoded once more, `/` kept, as AWS does for every service but S3)
/// and the canonical query (the caller's, already in canonical form).
pub fn begin_canonical(out: &mut Vec<u8>, method: &[u8], path: &[u8], canonical_query: &[u8]) {
    out.extend_from_slice(method);
    out.push(b'\n');
    crate::percent::encode_into(out, path, true);
    out.push(b'\n');
    out.extend_from_slice(canonical_query);
    out.push(b'\n');
}

/// Writes one canonical header line, `name:v1,v2\n`: `name` lower case, each value
/// trimmed with inner runs of whitespace folded to one space.
pub fn canonical_header<'v>(
    out: &mut Vec<u8>,
    name: &str,
    values: impl IntoIterator<Item = &'v [u8]>,
) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        for (j, word) in v
            .split(|c| c.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            if j > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(word);
        }
    }
    out.push(b'\n');
}

/// Ends the canonical request: a blank line, the signed-header list and the
/// payload's hex SHA-256.
pub fn end_canonical(out: &mut Vec<u8>, signed_headers: &[u8], payload_hash: &[u8]) {
    out.push(b'\n');
    out.extend_from_slice(signed_headers);
    out.push(b'\n');
    out.extend_from_slice(payload_hash);
}

/// The credential scope's parts: `date/region/service/aws4_request`.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `YYYYMMDD`.
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl Scope<'_> {
    /// Writes `date/region/service/aws4_request`.
    pub fn write(&self, out: &mut Vec<u8>) {
        for part in [self.date, self.region, self.service] {
            out.extend_from_slice(part.as_bytes());
            out.push(b'/');
        }
        out.extend_from_slice(b"aws4_request");
    }
}

/// Writes the string to sign for `canonical` (the whole canonical request).
pub fn string_to_sign(out: &mut Vec<u8>, amz_date: &[u8], scope: &Scope<'_>, canonical: &[u8]) {
    out.extend_from_slice(b"AWS4-HMAC-SHA256\n");
    out.extend_from_slice(amz_date);
    out.push(b'\n');
    scope.write(out);
    out.push(b'\n');
    out.extend_from_slice(&sha256_hex(canonical));
}

/// The signing key: HMAC chain of `AWS4{secret}` over date, region, service and
/// `aws4_request`.
pub fn signing_key(secret: &str, scope: &Scope<'_>) -> [u8; 32] {
    // `AWS4{secret}` is the key; built on the stack when it fits (secrets are 40
    // characters), so a signer that refreshes its key daily never allocates.
    let mut stack = [0u8; 128];
    let key_len = 4 + secret.len();
    let first = if key_len <= stack.len() {
        stack[..4].copy_from_slice(b"AWS4");
        stack[4..key_len].copy_from_slice(secret.as_bytes());
        hmac(&stack[..key_len], scope.date.as_bytes())
    } else {
        hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes())
    };
    chain(first, scope)
}

fn chain(mut key: [u8; 32], scope: &Scope<'_>) -> [u8; 32] {
    for part in [scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    key
}

/// The hex signature of `to_sign` with `key`.
pub fn signature(key: &[u8; 32], to_sign: &[u8]) -> [u8; 64] {
    hex(&hmac(key, to_sign))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> [u8; 64] {
    hex(&Sha256::digest(data).into())
}

/// Lower-case hex of 32 bytes.
pub fn hex(b: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, &x) in b.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(x >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(x & 15)];
    }
    out
}

/// Compares without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `YYYYMMDDTHHMMSSZ` for Unix milliseconds (the `X-Amz-Date` form).
pub fn amz_date(now_ms: u64) -> [u8; 16] {
    let (y, mo, d, h, mi, s) = crate::time::civil(now_ms / 1000);
    let mut out = *b"00000000T000000Z";
    let mut put = |at: usize, width: usize, v: u32| {
        let mut v = v as i64;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u32);
    put(4, 2, mo);
    put(6, 2, d);
    put(9, 2, h);
    put(11, 2, mi);
    put(13, 2, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SCOPE: Scope<'static> = Scope {
        date: "20150830",
        region: "us-east-1",
        service: "service",
    };

    /// Signs one of AWS's sigv4 test-suite requests with the shared pieces.
    fn sign(method: &str, headers: &[(&str, &[u8])], body: &[u8]) -> ([u8; 64], Vec<u8>) {
        let mut c = Vec::new();
        begin_canonical(&mut c, method.as_bytes(), b"/", b"");
        let mut signed = Vec::new();
        for (i, (n, v)) in headers.iter().enumerate() {
            canonical_header(&mut c, n, [*v]);
            if i > 0 {
                signed.push(b';');
            }
            signed.extend_from_slice(n.as_bytes());
        }
        end_canonical(&mut c, &signed, &sha256_hex(body));
        let mut sts = Vec::new();
        string_to_sign(&mut sts, b"20150830T123600Z", &SCOPE, &c);
        (signature(&signing_key(SECRET, &SCOPE), &sts), c)
    }

    /// AWS sigv4 test suite, "get-vanilla": the canonical request and the documented
    /// signature.
    #[test]
    fn get_vanilla_signs_as_aws_documents() {
        let (sig, c) = sign(
            "GET",
            &[
                ("host", b"example.amazonaws.com"),
                ("x-amz-date", b"20150830T123600Z"),
            ],
            b"",
        );
        assert_eq!(
            String::from_utf8(c).unwrap(),
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            &sig,
            b"5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// AWS sigv4 test suite, "post-vanilla".
    #[test]
    fn post_vanilla_signs_as_aws_documents() {
        let (sig, _) = sign(
            "POST",
            &[
                ("host", b"example.amazonaws.com"),
                ("x-amz-date", b"20150830T123600Z"),
            ],
            b"",
        );
        assert_eq!(
            &sig,
            b"5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    /// AWS sigv4 test suite, "get-header-value-trim": values trimmed, inner spaces
    /// folded.
    #[test]
    fn header_values_are_trimmed_and_folded() {
        let mut c = Vec::new();
        canonical_header(&mut c, "my-header1", [&b" value1"[..]]);
        canonical_header(&mut c, "my-header2", [&b" \"a   b   c\""[..]]);
        canonical_header(&mut c, "x", [&b"a"[..], b" b "]);
        assert_eq!(c, b"my-header1:value1\nmy-header2:\"a b c\"\nx:a,b\n");
    }

    #[test]
    fn amz_dates_are_formatted() {
        assert_eq!(&amz_date(0), b"19700101T000000Z");
        assert_eq!(&amz_date(1_440_938_160_999), b"20150830T123600Z");
    }

    #[test]
    fn long_secrets_sign_like_short_ones_would() {
        let long = "k".repeat(200);
        let a = signing_key(&long, &SCOPE);
        let mut k = hmac(format!("AWS4{long}").as_bytes(), b"20150830");
        for p in ["us-east-1", "service", "aws4_request"] {
            k = hmac(&k, p.as_bytes());
        }
        assert_eq!(a, k);
    }
}
