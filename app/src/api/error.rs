use super::Role;
use leptos::server_fn::{
    codec::JsonEncoding,
    error::{FromServerFnError, ServerFnErrorErr},
};
use serde::{Deserialize, Serialize};

/// Every error a console user can meet, with a message that says what to do.
///
/// The same enum travels from server functions to the browser and backs the
/// JSON API's error bodies, so a given failure reads the same everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ConsoleError {
    #[error("Sign in to continue.")]
    Unauthenticated,
    /// The caller's role is below what the operation needs.
    #[error("{}", forbidden_message(*.needs))]
    Forbidden { needs: Role },
    #[error("Email or password is incorrect.")]
    InvalidCredentials,
    /// The email and password are right in more than one organization:
    /// sign in again naming one of them (only ones the password opened).
    #[error("This email and password open more than one organization: choose one.")]
    ChooseOrganization { organizations: Vec<OrgChoice> },
    #[error("Too many sign-in attempts. Try again in {retry_after_secs} seconds.")]
    RateLimited { retry_after_secs: u64 },
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("{what} was not found.")]
    NotFound { what: String },
    #[error("{message}")]
    Conflict { message: String },
    #[error(
        "Something went wrong on our side. Try again; if it keeps happening, contact support."
    )]
    Internal,
    #[error("The request body is too large: the limit is {limit_bytes} bytes.")]
    TooLarge { limit_bytes: usize },
    #[error("The request could not be completed: {message}")]
    Request { message: String },
    /// AWS refused a call vpcmesh made on the user's behalf (role, policy, resource).
    #[error("{message}")]
    AwsRefused { message: String },
    /// AWS did not answer; trying again later may work.
    #[error("{message} Try again in a minute.")]
    AwsUnavailable { message: String },
}

/// An organization a sign-in can open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgChoice {
    pub id: String,
    pub name: String,
}

fn forbidden_message(needs: Role) -> &'static str {
    match needs {
        Role::Admin => "Only organization admins can do this.",
        Role::Member => "Viewers can only look: this needs a member or admin role.",
        Role::Viewer => "Your role does not allow this.",
    }
}

impl ConsoleError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound {
            what: what.to_string(),
        }
    }

    /// Stable machine-readable code, the same as the serialized `code` tag.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::InvalidCredentials => "invalid_credentials",
            Self::ChooseOrganization { .. } => "choose_organization",
            Self::RateLimited { .. } => "rate_limited",
            Self::InvalidInput { .. } => "invalid_input",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Internal => "internal",
            Self::TooLarge { .. } => "too_large",
            Self::Request { .. } => "request",
            Self::AwsRefused { .. } => "aws_refused",
            Self::AwsUnavailable { .. } => "aws_unavailable",
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthenticated | Self::InvalidCredentials => 401,
            Self::Forbidden { .. } => 403,
            Self::RateLimited { .. } => 429,
            Self::InvalidInput { .. } | Self::Request { .. } => 400,
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } | Self::ChooseOrganization { .. } => 409,
            Self::Internal => 500,
            Self::TooLarge { .. } => 413,
            Self::AwsRefused { .. } => 422,
            Self::AwsUnavailable { .. } => 503,
        }
    }
}

impl FromServerFnError for ConsoleError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        let message = match value {
            ServerFnErrorErr::Args(m) | ServerFnErrorErr::MissingArg(m) => {
                format!("a form field is missing or malformed ({m})")
            }
            ServerFnErrorErr::Request(_) => "the server could not be reached".to_string(),
            other => other.to_string(),
        };
        Self::Request { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_matches_serialized_tag() {
        let errors = [
            ConsoleError::Unauthenticated,
            ConsoleError::Forbidden { needs: Role::Admin },
            ConsoleError::InvalidCredentials,
            ConsoleError::ChooseOrganization {
                organizations: vec![OrgChoice {
                    id: "o".into(),
                    name: "O".into(),
                }],
            },
            ConsoleError::RateLimited {
                retry_after_secs: 3,
            },
            ConsoleError::invalid("email", "x"),
            ConsoleError::not_found("User"),
            ConsoleError::Conflict {
                message: "x".into(),
            },
            ConsoleError::Internal,
            ConsoleError::TooLarge { limit_bytes: 1 },
            ConsoleError::Request {
                message: "x".into(),
            },
            ConsoleError::AwsRefused {
                message: "x".into(),
            },
            ConsoleError::AwsUnavailable {
                message: "x".into(),
            },
        ];
        for e in errors {
            let json = serde_json_value(&e);
            assert!(
                json.contains(&format!("\"code\":\"{}\"", e.code())),
                "{json}"
            );
        }
    }

    fn serde_json_value(e: &ConsoleError) -> String {
        String::from_utf8(e.ser().to_vec()).expect("utf8")
    }

    #[test]
    fn malformed_arguments_read_as_a_request_error() {
        let e = ConsoleError::from_server_fn_error(ServerFnErrorErr::Args("bad".into()));
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("malformed"));
    }
}
