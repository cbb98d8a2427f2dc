//! The site's Elastic IP and forwarding, as the active appliance sees them.
//! EC2 is the arbiter of who holds the address (`holder`); the appliance
//! that becomes active moves it to itself (`take_over`) and turns off the
//! source/destination check, without which EC2 drops every packet it
//! forwards for other hosts (`disable_source_dest_check`).
//!
//! Calls use the instance role (the default credential chain). Throttling,
//! 5xx and unreachable endpoints are retried here with backoff (the SDK's
//! own retries are off, so there is one retry policy); denials and missing
//! resources are returned at once.

use aws_credential_types::Credentials;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{AttributeBooleanValue, NetworkInterfaceAttribute};
use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// What went wrong calling EC2, classified for the caller: a denial is
/// permanent until the role changes, throttling and outages pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "the appliance role may not call {action} on {resource}: it needs the IAM permission {action} ({message})"
    )]
    Denied {
        action: &'static str,
        resource: String,
        message: String,
    },
    #[error("{action}: {resource} does not exist ({message})")]
    NotFound {
        action: &'static str,
        resource: String,
        message: String,
    },
    #[error("EC2 is throttling {action} ({message})")]
    Throttled {
        action: &'static str,
        message: String,
    },
    #[error("EC2 did not answer {action} ({message})")]
    Unavailable {
        action: &'static str,
        message: String,
    },
    #[error("EC2 rejected {action} on {resource} ({code}): {message}")]
    Rejected {
        action: &'static str,
        resource: String,
        code: String,
        message: String,
    },
    #[error("instance {0} has no network interface")]
    NoInterface(String),
}

impl AddressError {
    /// Worth trying again with backoff.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AddressError::Throttled { .. } | AddressError::Unavailable { .. }
        )
    }
}

/// What `take_over` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOver {
    /// The address already pointed here: nothing was changed.
    AlreadyOurs,
    /// The address was moved here from `from` (None: it was unassociated).
    Moved { from: Option<String> },
}

/// What `disable_source_dest_check` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDestCheck {
    AlreadyOff,
    TurnedOff,
}

/// How often and how patiently retryable failures are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 6,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// The pause after failed attempt `attempt` (1-based): doubling from
    /// `first_delay`, capped, plus up to half again of jitter so the two
    /// members of a pair do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let base = doubled.min(self.max_delay);
        let jitter_ms = (base.as_millis() / 2) as u64;
        base + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }
}

/// The site's address and forwarding switches, through EC2.
#[derive(Clone, Debug)]
pub struct SiteAddress {
    ec2: aws_sdk_ec2::Client,
    retry: Retry,
}

/// Who an address points at, as EC2 reports it.
struct Association {
    instance: Option<String>,
    interface: Option<String>,
}

const DESCRIBE_ADDRESSES: &str = "ec2:DescribeAddresses";
const ASSOCIATE_ADDRESS: &str = "ec2:AssociateAddress";
const DESCRIBE_INTERFACES: &str = "ec2:DescribeNetworkInterfaces";
const DESCRIBE_INTERFACE_ATTRIBUTE: &str = "ec2:DescribeNetworkInterfaceAttribute";
const MODIFY_INTERFACE_ATTRIBUTE: &str = "ec2:ModifyNetworkInterfaceAttribute";
const DESCRIBE_INSTANCES: &str = "ec2:DescribeInstances";

impl SiteAddress {
    /// EC2 in `region` with the instance role's credentials (the default
    /// chain: instance metadata on AWS, `AWS_ACCESS_KEY_ID`... in labs).
    /// `endpoint_override` replaces AWS's endpoint (a local emulator).
    pub async fn new(region: &str, endpoint_override: Option<&str>) -> Self {
        Self::build(region, endpoint_override, None).await
    }

    /// As `new`, with explicit credentials instead of the default chain.
    pub async fn with_credentials(
        region: &str,
        endpoint_override: Option<&str>,
        credentials: Credentials,
    ) -> Self {
        Self::build(region, endpoint_override, Some(credentials)).await
    }

    async fn build(region: &str, endpoint: Option<&str>, creds: Option<Credentials>) -> Self {
        let shared = crate::aws::sdk_config(region, endpoint, creds).await;
        let config = aws_sdk_ec2::config::Builder::from(&shared)
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
            // A hung call becomes a retryable failure instead of a stuck takeover.
            .timeout_config(
                aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .build();
        SiteAddress {
            ec2: aws_sdk_ec2::Client::from_conf(config),
            retry: Retry::default(),
        }
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn retrying(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Points the site's address (`allocation_id`) at this appliance: its
    /// network interface when known (the precise target on a multi-interface
    /// instance), else the instance. Does nothing when it already points here.
    pub async fn take_over(
        &self,
        allocation_id: &str,
        instance_id: &str,
        interface_id: Option<&str>,
    ) -> Result<TakeOver, AddressError> {
        self.move_here(allocation_id, instance_id, interface_id, true)
            .await
    }

    /// `take_over`, but only while the address is on nothing: EC2 refuses
    /// (`Rejected`, `Resource.AlreadyAssociated`) when another instance got
    /// it first, so two members claiming a free address at once cannot
    /// both win.
    pub async fn claim(
        &self,
        allocation_id: &str,
        instance_id: &str,
        interface_id: Option<&str>,
    ) -> Result<TakeOver, AddressError> {
        self.move_here(allocation_id, instance_id, interface_id, false)
            .await
    }

    async fn move_here(
        &self,
        allocation_id: &str,
        instance_id: &str,
        interface_id: Option<&str>,
        reassociate: bool,
    ) -> Result<TakeOver, AddressError> {
        let current = self.association(allocation_id).await?;
        let ours = match interface_id {
            Some(eni) => current.interface.as_deref() == Some(eni),
            None => current.instance.as_deref() == Some(instance_id),
        };
        if ours {
            tracing::debug!(
                allocation_id,
                instance_id,
                "the site address is already ours"
            );
            return Ok(TakeOver::AlreadyOurs);
        }
        let ec2 = &self.ec2;
        let target = interface_id.unwrap_or(instance_id);
        self.with_retries(ASSOCIATE_ADDRESS, || async move {
            let req = ec2
                .associate_address()
                .allocation_id(allocation_id)
                .allow_reassociation(reassociate);
            let req = match interface_id {
                Some(eni) => req.network_interface_id(eni),
                None => req.instance_id(instance_id),
            };
            req.send().await.map_err(|e| {
                from_sdk(
                    ASSOCIATE_ADDRESS,
                    &format!("{allocation_id} -> {target}"),
                    e,
                )
            })
        })
        .await?;
        tracing::info!(
            allocation_id,
            instance_id,
            interface_id,
            from = current.instance.as_deref(),
            "took over the site address"
        );
        Ok(TakeOver::Moved {
            from: current.instance,
        })
    }

    /// The instance the site's address points at now, if any.
    pub async fn holder(&self, allocation_id: &str) -> Result<Option<String>, AddressError> {
        Ok(self.association(allocation_id).await?.instance)
    }

    /// Lets the appliance forward: turns off the source/destination check
    /// of `interface_id`, or of the instance's primary interface when no
    /// interface is known. Reads the attribute first, so a repeat is a no-op.
    pub async fn disable_source_dest_check(
        &self,
        instance_id: &str,
        interface_id: Option<&str>,
    ) -> Result<SourceDestCheck, AddressError> {
        let eni = match interface_id {
            Some(eni) => eni.to_string(),
            None => self.primary_interface(instance_id).await?,
        };
        let ec2 = &self.ec2;
        let eni = eni.as_str();
        let current = self
            .with_retries(DESCRIBE_INTERFACE_ATTRIBUTE, || async move {
                ec2.describe_network_interface_attribute()
                    .network_interface_id(eni)
                    .attribute(NetworkInterfaceAttribute::SourceDestCheck)
                    .send()
                    .await
                    .map_err(|e| from_sdk(DESCRIBE_INTERFACE_ATTRIBUTE, eni, e))
            })
            .await?;
        if current.source_dest_check().and_then(|v| v.value()) == Some(false) {
            return Ok(SourceDestCheck::AlreadyOff);
        }
        self.with_retries(MODIFY_INTERFACE_ATTRIBUTE, || async move {
            ec2.modify_network_interface_attribute()
                .network_interface_id(eni)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send()
                .await
                .map_err(|e| from_sdk(MODIFY_INTERFACE_ATTRIBUTE, eni, e))
        })
        .await?;
        tracing::info!(
            instance_id,
            interface_id = eni,
            "source/destination check off"
        );
        Ok(SourceDestCheck::TurnedOff)
    }

    /// The instance's primary network interface (device index 0).
    pub async fn primary_interface(&self, instance_id: &str) -> Result<String, AddressError> {
        let ec2 = &self.ec2;
        let out = self
            .with_retries(DESCRIBE_INSTANCES, || async move {
                ec2.describe_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(|e| from_sdk(DESCRIBE_INSTANCES, instance_id, e))
            })
            .await?;
        let interfaces: Vec<_> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.instance_id() == Some(instance_id))
            .flat_map(|i| i.network_interfaces())
            .collect();
        let primary = interfaces
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .or_else(|| interfaces.first());
        primary
            .and_then(|n| n.network_interface_id())
            .map(str::to_string)
            .ok_or_else(|| AddressError::NoInterface(instance_id.to_string()))
    }

    /// Where the address points. EC2 names the instance for an interface
    /// attached to one; when it names only the interface (an emulator may),
    /// the interface's attachment says which instance.
    async fn association(&self, allocation_id: &str) -> Result<Association, AddressError> {
        let ec2 = &self.ec2;
        let out = self
            .with_retries(DESCRIBE_ADDRESSES, || async move {
                ec2.describe_addresses()
                    .allocation_ids(allocation_id)
                    .send()
                    .await
                    .map_err(|e| from_sdk(DESCRIBE_ADDRESSES, allocation_id, e))
            })
            .await?;
        let address = out
            .addresses()
            .iter()
            .find(|a| a.allocation_id() == Some(allocation_id))
            .ok_or_else(|| AddressError::NotFound {
                action: DESCRIBE_ADDRESSES,
                resource: allocation_id.to_string(),
                message: "no such address".into(),
            })?;
        let present = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        let interface = present(address.network_interface_id());
        let mut instance = present(address.instance_id());
        if let (None, Some(eni)) = (&instance, interface.as_deref()) {
            instance = self.attached_instance(eni).await?;
        }
        Ok(Association {
            instance,
            interface,
        })
    }

    async fn attached_instance(&self, eni: &str) -> Result<Option<String>, AddressError> {
        let ec2 = &self.ec2;
        let out = self
            .with_retries(DESCRIBE_INTERFACES, || async move {
                ec2.describe_network_interfaces()
                    .network_interface_ids(eni)
                    .send()
                    .await
                    .map_err(|e| from_sdk(DESCRIBE_INTERFACES, eni, e))
            })
            .await?;
        Ok(out
            .network_interfaces()
            .iter()
            .find(|n| n.network_interface_id() == Some(eni))
            .and_then(|n| n.attachment())
            .and_then(|a| a.instance_id())
            .filter(|i| !i.is_empty())
            .map(str::to_string))
    }

    /// The EC2 client, for the other things an appliance owns
    /// (`crate::vpc_routes`), under the same retry policy.
    pub(crate) fn client(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// Runs `call` until it succeeds, fails for good, or runs out of attempts.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        action: &'static str,
        mut call: F,
    ) -> Result<T, AddressError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AddressError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < self.retry.attempts => {
                    let delay = self.retry.delay(attempt);
                    tracing::warn!(
                        action,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %e,
                        "EC2 call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Classifies an SDK failure of `action` on `resource`.
pub(crate) fn from_sdk<E>(action: &'static str, resource: &str, err: SdkError<E>) -> AddressError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(e) => {
            let raw = e.raw();
            // Some error bodies escape the SDK's EC2 parser (a proxy's or an
            // emulator's `<ErrorResponse>`): read the XML, then the status.
            let body = raw.body().bytes().map(String::from_utf8_lossy);
            let from_body = |tag: &str| body.as_deref().and_then(|b| xml_text(b, tag));
            let code = e
                .err()
                .code()
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .or_else(|| from_body("Code"))
                .unwrap_or_default();
            let message = e
                .err()
                .message()
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .or_else(|| from_body("Message"))
                .unwrap_or_default();
            classify(action, resource, &code, raw.status().as_u16(), message)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AddressError::Unavailable {
                action,
                message: DisplayErrorContext(&err).to_string(),
            }
        }
        _ => AddressError::Rejected {
            action,
            resource: resource.to_string(),
            code: "ClientError".into(),
            message: DisplayErrorContext(&err).to_string(),
        },
    }
}

/// Maps an EC2 error code (and the HTTP status, for bodies without one).
fn classify(
    action: &'static str,
    resource: &str,
    code: &str,
    status: u16,
    message: String,
) -> AddressError {
    let message = if message.is_empty() {
        code.to_string()
    } else {
        message
    };
    let resource = resource.to_string();
    match code {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "AuthFailure" => {
            AddressError::Denied {
                action,
                resource,
                message,
            }
        }
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException" => AddressError::Throttled { action, message },
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            AddressError::Unavailable { action, message }
        }
        c if c.ends_with(".NotFound") => AddressError::NotFound {
            action,
            resource,
            message,
        },
        "" => match status {
            401 | 403 => AddressError::Denied {
                action,
                resource,
                message,
            },
            429 => AddressError::Throttled { action, message },
            s if s >= 500 => AddressError::Unavailable { action, message },
            s => AddressError::Rejected {
                action,
                resource,
                code: format!("HTTP {s}"),
                message,
            },
        },
        // An unknown code on a 5xx is EC2's trouble, not ours.
        c if status >= 500 => AddressError::Unavailable {
            action,
            message: format!("{c}: {message}"),
        },
        c => AddressError::Rejected {
            action,
            resource,
            code: c.to_string(),
            message,
        },
    }
}

/// The text of the first `<tag>` element in an XML error body.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_the_missing_permission_and_is_not_retried() {
        for code in ["UnauthorizedOperation", "AccessDenied"] {
            let e = classify(
                ASSOCIATE_ADDRESS,
                "eipalloc-1 -> eni-1",
                code,
                403,
                "You are not authorized to perform this operation.".into(),
            );
            assert!(matches!(e, AddressError::Denied { .. }), "{code}: {e:?}");
            assert!(!e.is_retryable());
            let text = e.to_string();
            assert!(
                text.contains("needs the IAM permission ec2:AssociateAddress"),
                "{text}"
            );
            assert!(text.contains("eipalloc-1 -> eni-1"), "{text}");
        }
    }

    #[test]
    fn throttling_and_outages_are_retried() {
        for (code, status) in [
            ("RequestLimitExceeded", 503),
            ("Throttling", 400),
            ("InternalError", 500),
            ("Unavailable", 503),
            ("", 503),
            ("", 429),
            ("SomethingNew", 502),
        ] {
            let e = classify(
                DESCRIBE_ADDRESSES,
                "eipalloc-1",
                code,
                status,
                String::new(),
            );
            assert!(e.is_retryable(), "{code} {status}: {e:?}");
        }
    }

    #[test]
    fn missing_resources_are_not_found_and_not_retried() {
        for code in [
            "InvalidAllocationID.NotFound",
            "InvalidNetworkInterfaceID.NotFound",
            "InvalidInstanceID.NotFound",
        ] {
            let e = classify(DESCRIBE_ADDRESSES, "x", code, 400, "gone".into());
            assert!(matches!(e, AddressError::NotFound { .. }), "{code}: {e:?}");
            assert!(!e.is_retryable());
        }
        let other = classify(
            ASSOCIATE_ADDRESS,
            "x",
            "InvalidParameterCombination",
            400,
            "no".into(),
        );
        assert!(matches!(other, AddressError::Rejected { .. }));
        assert!(!other.is_retryable());
    }

    #[test]
    fn an_error_body_the_sdk_could_not_parse_still_yields_its_code() {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(body, "Code").as_deref(), Some("Throttling"));
        assert_eq!(xml_text(body, "Message").as_deref(), Some("Rate exceeded"));
        assert_eq!(xml_text(body, "RequestId"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let r = Retry {
            attempts: 10,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for (attempt, base) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            for _ in 0..20 {
                let d = r.delay(attempt).as_millis() as u64;
                assert!(
                    (base..=base + base / 2).contains(&d),
                    "attempt {attempt}: {d} ms not in {base}..={}",
                    base + base / 2
                );
            }
        }
    }
}
