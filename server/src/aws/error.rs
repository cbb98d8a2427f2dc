//! What went wrong talking to AWS, classified so callers can tell a denied
//! role from a missing VPC from a throttled call worth retrying.

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    #[error("AWS denied {action}: {message}")]
    Denied {
        action: &'static str,
        message: String,
    },
    #[error("{action} found nothing: {message}")]
    NotFound {
        action: &'static str,
        message: String,
    },
    #[error("AWS is throttling {action}; it will be retried")]
    Throttled { action: &'static str },
    #[error("AWS did not answer {action} ({message}); it will be retried")]
    Unavailable {
        action: &'static str,
        message: String,
    },
    #[error("AWS rejected {action} ({code}): {message}")]
    Rejected {
        action: &'static str,
        code: String,
        message: String,
    },
}

impl AwsError {
    /// Worth trying again later with backoff.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AwsError::Throttled { .. } | AwsError::Unavailable { .. }
        )
    }

    /// Classifies an SDK error from `action` (e.g. "sts:AssumeRole").
    pub fn from_sdk<E>(action: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match &err {
            SdkError::ServiceError(e) => {
                let raw = e.raw();
                let body = raw.body().bytes().map(String::from_utf8_lossy);
                let from_body = |tag: &str| body.as_deref().and_then(|b| xml_text(b, tag));
                // Some error bodies (e.g. `<Errors><Error>`) escape the SDK's
                // parser: fall back to reading the XML, then to the status.
                let code = match e.err().code() {
                    Some(c) if !c.is_empty() => c.to_string(),
                    _ => from_body("Code").unwrap_or_else(|| match raw.status().as_u16() {
                        401 | 403 => "AccessDenied".into(),
                        404 => "NotFoundException".into(),
                        429 => "Throttling".into(),
                        _ => String::new(),
                    }),
                };
                let message = match e.err().message() {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => from_body("Message").unwrap_or_default(),
                };
                let classified = classify(action, &code, message);
                // An unknown code with a 5xx status is AWS's trouble, not ours.
                match classified {
                    AwsError::Rejected { code, message, .. }
                        if e.raw().status().is_server_error() =>
                    {
                        AwsError::Unavailable {
                            action,
                            message: format!("{code} {message}"),
                        }
                    }
                    other => other,
                }
            }
            SdkError::TimeoutError(_) => AwsError::Unavailable {
                action,
                message: "timed out".into(),
            },
            SdkError::DispatchFailure(_) => AwsError::Unavailable {
                action,
                message: "could not connect".into(),
            },
            SdkError::ResponseError(_) => AwsError::Unavailable {
                action,
                message: "unreadable response".into(),
            },
            other => AwsError::Rejected {
                action,
                code: "ClientError".into(),
                message: other.to_string(),
            },
        }
    }
}

/// The text of the first `<tag>` element in an XML error body.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].trim().to_string()).filter(|t| !t.is_empty())
}

/// Maps an AWS error code to its class.
pub fn classify(action: &'static str, code: &str, message: String) -> AwsError {
    let message = if message.is_empty() {
        code.to_string()
    } else {
        message
    };
    match code {
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "UnrecognizedClientException"
        | "RegionDisabledException" => AwsError::Denied { action, message },
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "RequestThrottled"
        | "SlowDown" => AwsError::Throttled { action },
        "InternalError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "Unavailable"
        | "InternalServerError"
        | "KMSInternalException" => AwsError::Unavailable { action, message },
        c if c.ends_with(".NotFound") || c == "NotFoundException" || c == "NoSuchEntity" => {
            AwsError::NotFound { action, message }
        }
        c => AwsError::Rejected {
            action,
            code: c.to_string(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        assert!(matches!(
            classify("sts:AssumeRole", "AccessDenied", "no".into()),
            AwsError::Denied { .. }
        ));
        assert!(matches!(
            classify("ec2:DescribeVpcs", "InvalidVpcID.NotFound", "x".into()),
            AwsError::NotFound { .. }
        ));
        assert!(classify("cloudformation:CreateStack", "Throttling", "".into()).is_retryable());
        assert!(classify("kms:X", "KMSInternalException", "".into()).is_retryable());
        let other = classify(
            "cloudformation:CreateStack",
            "ValidationError",
            "bad".into(),
        );
        assert!(!other.is_retryable());
        assert_eq!(
            other.to_string(),
            "AWS rejected cloudformation:CreateStack (ValidationError): bad"
        );
    }
}
