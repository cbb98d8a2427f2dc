//! How the agent reaches AWS: one SDK configuration for every client
//! (rustls on ring, no aws-lc), the instance role's credentials from the
//! default chain unless given, and an endpoint override for local emulators.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_http_client::{tls, Builder};

/// The SDK configuration for `region`. `endpoint` overrides AWS's (a local
/// emulator in labs); `credentials` replaces the default chain (tests).
pub async fn sdk_config(
    region: &str,
    endpoint: Option<&str>,
    credentials: Option<Credentials>,
) -> SdkConfig {
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(region.to_string()));
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint.trim_end_matches('/'));
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}
