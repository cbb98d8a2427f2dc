//! One owner for AWS access: the server's own credentials, the endpoint
//! override for the local emulator, and per-customer-role sessions cached
//! until shortly before they expire.

use super::{AccountId, AwsError, RoleArn};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::{provider::SharedCredentialsProvider, Credentials};
use aws_smithy_http_client::{tls, Builder};
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::{Mutex, OnceCell};

/// How long an assumed-role session lasts, and how early it is renewed.
const SESSION_SECS: i32 = 3600;
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// A customer account as vpcmesh reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountAccess {
    pub role_arn: RoleArn,
    pub external_id: String,
}

impl AccountAccess {
    pub fn account(&self) -> &AccountId {
        &self.role_arn.account
    }
}

/// Cheap to clone; shared by every request and the provisioning engine.
#[derive(Clone)]
pub struct Aws {
    inner: Arc<Inner>,
}

struct Inner {
    base: SdkConfig,
    sessions: Mutex<HashMap<AccountAccess, Credentials>>,
    own_account: OnceCell<AccountId>,
}

impl Aws {
    /// Real AWS: the server's credentials from the usual chain (environment,
    /// profile, instance role).
    pub async fn from_environment() -> Self {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .region(Region::new("us-east-1"))
            .load()
            .await;
        Self::with_base(base)
    }

    /// A local emulator at `endpoint` (moto); it accepts any static keys.
    pub fn local(endpoint: &str) -> Self {
        Self::at_endpoint(
            endpoint,
            Credentials::new(
                "AKIAVPCMESHLOCAL0000",
                "vpcmesh-local-emulator",
                None,
                None,
                "vpcmesh-local",
            ),
        )
    }

    /// An endpoint override with the server's own static credentials.
    pub fn at_endpoint(endpoint: &str, own: Credentials) -> Self {
        let base = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client())
            .endpoint_url(endpoint.trim_end_matches('/'))
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(own))
            .build();
        Self::with_base(base)
    }

    fn with_base(base: SdkConfig) -> Self {
        Aws {
            inner: Arc::new(Inner {
                base,
                sessions: Mutex::new(HashMap::new()),
                own_account: OnceCell::new(),
            }),
        }
    }

    /// The account the server's own credentials belong to: the principal a
    /// customer role must trust.
    pub async fn own_account(&self) -> Result<AccountId, AwsError> {
        self.inner
            .own_account
            .get_or_try_init(|| async {
                let sts = aws_sdk_sts::Client::new(&self.inner.base);
                let out = sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
                out.account()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|_| AwsError::Rejected {
                        action: "sts:GetCallerIdentity",
                        code: "NoAccount".into(),
                        message: "the answer named no account".into(),
                    })
            })
            .await
            .cloned()
    }

    /// Assumes the customer's role now, ignoring the cache, and caches the
    /// result. Returns the account the session actually landed in.
    #[tracing::instrument(skip_all, fields(role = %access.role_arn))]
    pub async fn verify(&self, access: &AccountAccess) -> Result<AccountId, AwsError> {
        let creds = self.assume(access).await?;
        let sts = aws_sdk_sts::Client::new(&self.config(&creds, "us-east-1"));
        let who = sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
        let landed = who.account().unwrap_or_default().to_string();
        self.inner
            .sessions
            .lock()
            .await
            .insert(access.clone(), creds);
        landed.parse().map_err(|_| AwsError::Rejected {
            action: "sts:GetCallerIdentity",
            code: "NoAccount".into(),
            message: "the assumed session named no account".into(),
        })
    }

    async fn assume(&self, access: &AccountAccess) -> Result<Credentials, AwsError> {
        let sts = aws_sdk_sts::Client::new(&self.inner.base);
        let out = sts
            .assume_role()
            .role_arn(access.role_arn.to_string())
            .role_session_name(format!("vpcmesh-{}", access.account()))
            .external_id(&access.external_id)
            .duration_seconds(SESSION_SECS)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:AssumeRole", e))?;
        let c = out.credentials().ok_or(AwsError::Rejected {
            action: "sts:AssumeRole",
            code: "NoCredentials".into(),
            message: "the answer carried no credentials".into(),
        })?;
        let expiry = SystemTime::try_from(*c.expiration())
            .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(SESSION_SECS as u64));
        tracing::info!(account = %access.account(), "assumed customer role");
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            Some(expiry),
            "vpcmesh-assume-role",
        ))
    }

    /// Credentials for `access`, from the cache while they have more than a
    /// few minutes left.
    pub async fn session(&self, access: &AccountAccess) -> Result<Credentials, AwsError> {
        {
            let sessions = self.inner.sessions.lock().await;
            if let Some(creds) = sessions.get(access) {
                if !needs_renewal(creds.expiry(), SystemTime::now()) {
                    return Ok(creds.clone());
                }
            }
        }
        let creds = self.assume(access).await?;
        self.inner
            .sessions
            .lock()
            .await
            .insert(access.clone(), creds.clone());
        Ok(creds)
    }

    /// Drops a cached session (after AWS rejected its credentials).
    pub async fn forget(&self, access: &AccountAccess) {
        self.inner.sessions.lock().await.remove(access);
    }

    /// SDK configuration for calls into a customer account in `region`.
    pub fn config(&self, creds: &Credentials, region: &str) -> SdkConfig {
        self.inner
            .base
            .to_builder()
            .region(Region::new(region.to_string()))
            .credentials_provider(SharedCredentialsProvider::new(creds.clone()))
            .build()
    }

    pub async fn ec2(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<aws_sdk_ec2::Client, AwsError> {
        let creds = self.session(access).await?;
        Ok(aws_sdk_ec2::Client::new(&self.config(&creds, region)))
    }

    pub async fn cloudformation(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<aws_sdk_cloudformation::Client, AwsError> {
        let creds = self.session(access).await?;
        Ok(aws_sdk_cloudformation::Client::new(
            &self.config(&creds, region),
        ))
    }

    pub async fn kms(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<aws_sdk_kms::Client, AwsError> {
        let creds = self.session(access).await?;
        Ok(aws_sdk_kms::Client::new(&self.config(&creds, region)))
    }
}

/// A cached session is renewed once it has less than [`RENEW_BEFORE`] left.
fn needs_renewal(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_some_and(|exp| exp <= now + RENEW_BEFORE)
}

/// The HTTPS client every AWS SDK client uses: rustls on ring.
pub fn http_client() -> aws_sdk_sts::config::SharedHttpClient {
    Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_renewed_five_minutes_before_they_expire() {
        let now = SystemTime::now();
        assert!(!needs_renewal(Some(now + Duration::from_secs(3600)), now));
        assert!(!needs_renewal(Some(now + Duration::from_secs(301)), now));
        assert!(needs_renewal(Some(now + Duration::from_secs(300)), now));
        assert!(needs_renewal(Some(now - Duration::from_secs(1)), now));
        assert!(!needs_renewal(None, now), "static credentials never expire");
    }
}
