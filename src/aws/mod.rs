//! Lambda functions as integrations (SPEC §12): which `uri`s name a function, and
//! the Invoke API call a route makes for one (path, SigV4 signature for `lambda`).

pub mod credentials;
pub mod sigv4;

use std::sync::Arc;

pub use credentials::Credentials;

/// What a Lambda integration needs to sign its calls; the URI it posts to is the
/// integration's `uri` (the Lambda endpoint and the Invoke path).
#[derive(Debug, Clone)]
pub struct Invoke {
    /// The function as the `uri` names it (a name or an ARN, with any qualifier), for
    /// log lines.
    pub function: String,
    /// The signing region (`[aws] region`).
    pub region: String,
    pub credentials: Arc<Credentials>,
}

/// The function a Lambda `uri` names: a function ARN
/// (`arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`) or an API Gateway
/// Lambda integration URI
/// (`arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations`).
/// `None`: not a Lambda URI; `Some(Err)`: one, but malformed.
pub fn function_of(uri: &str) -> Option<Result<&str, String>> {
    if !uri.starts_with("arn:") {
        return None;
    }
    let mut parts = uri.splitn(6, ':');
    let (_arn, _partition, service) = (parts.next(), parts.next(), parts.next());
    let arn = match service {
        Some("lambda") => uri,
        Some("apigateway") => {
            let resource = uri.splitn(6, ':').nth(5).unwrap_or("");
            match resource
                .strip_prefix("path/2015-03-31/functions/")
                .and_then(|r| r.strip_suffix("/invocations"))
            {
                Some(arn) => arn,
                None => {
                    return Some(Err(format!(
                        "\"{uri}\" is not an API Gateway Lambda integration URI \
                         (arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations)"
                    )))
                }
            }
        }
        _ => {
            return Some(Err(format!(
                "\"{uri}\" is neither an http(s):// URI nor a Lambda function ARN"
            )))
        }
    };
    // arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    let p: Vec<&str> = arn.split(':').collect();
    let ok = p.len() >= 7
        && p.len() <= 8
        && p[0] == "arn"
        && p[2] == "lambda"
        && p[5] == "function"
        && p[6..].iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'$'))
        });
    Some(if ok {
        Ok(arn)
    } else {
        Err(format!(
            "\"{arn}\" is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])"
        ))
    })
}

/// The Invoke API path for `function`: `/2015-03-31/functions/{function}/invocations`,
/// the function percent-encoded (`:` as `%3A`, as the AWS SDKs send it).
pub fn invoke_path(function: &str) -> String {
    let mut out = b"/2015-03-31/functions/".to_vec();
    crate::percent::encode_into(&mut out, function.as_bytes(), false);
    out.extend_from_slice(b"/invocations");
    String::from_utf8(out).expect("percent-encoding writes ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_uris_name_their_function() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:chat";
        assert_eq!(function_of(arn), Some(Ok(arn)));
        let q = "arn:aws:lambda:us-east-1:123456789012:function:chat:$LATEST";
        assert_eq!(function_of(q), Some(Ok(q)));
        let apigw = format!(
            "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{arn}/invocations"
        );
        assert_eq!(function_of(&apigw), Some(Ok(arn)));
        assert_eq!(function_of("http://127.0.0.1/ws"), None);
        for bad in [
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:us-east-1:1:layer:x",
            "arn:aws:lambda:us-east-1:1:function:",
            "arn:aws:lambda:us-east-1:1:function:a/b",
            "arn:aws:apigateway:us-east-1:lambda:path/other",
        ] {
            assert!(matches!(function_of(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn invoke_paths_encode_the_function() {
        assert_eq!(
            invoke_path("arn:aws:lambda:us-east-1:1:function:chat"),
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Achat/invocations"
        );
    }
}
