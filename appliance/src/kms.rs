//! Data keys, decrypted with the appliance's own credentials (its instance
//! role on AWS) under the encryption context of what they serve.

use crate::dataplane::DataKey;
use crate::protocol::{encryption_context, EpochKey, KeyScope};
use base64::Engine;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("the key ciphertext is not base64")]
    Ciphertext,
    #[error("KMS refused to decrypt epoch {epoch}: {message}")]
    Decrypt { epoch: u32, message: String },
    #[error("KMS returned no plaintext for epoch {0}")]
    Empty(u32),
}

/// One KMS client per region, made once: its credentials (the instance
/// role's, from IMDS) are cached and refreshed by the SDK, and its
/// connections reused, where a client per decrypt fetched credentials and
/// opened a TLS connection for every key of every tunnel.
pub struct Kms {
    endpoint: Option<String>,
    clients: tokio::sync::Mutex<HashMap<String, aws_sdk_kms::Client>>,
    built: AtomicUsize,
}

impl Kms {
    /// `endpoint` overrides AWS's (a local emulator in labs).
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            endpoint,
            clients: Default::default(),
            built: AtomicUsize::new(0),
        }
    }

    /// The client for `region`, made on first use.
    async fn client(&self, region: &str) -> aws_sdk_kms::Client {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(region) {
            return c.clone();
        }
        let config = crate::aws::sdk_config(region, self.endpoint.as_deref(), None).await;
        let client = aws_sdk_kms::Client::new(&config);
        self.built.fetch_add(1, Ordering::Relaxed);
        clients.insert(region.to_string(), client.clone());
        client
    }

    /// Clients made so far (one per region used).
    pub fn clients_built(&self) -> usize {
        self.built.load(Ordering::Relaxed)
    }

    /// Decrypts one data key of `network` in `key`'s epoch: `scope` says
    /// what it serves (the encryption context names it), `ciphertext` is the
    /// base64 blob (the epoch's own, or one of its tunnels').
    pub async fn data_key(
        &self,
        network: &Uuid,
        key: &EpochKey,
        scope: KeyScope,
        ciphertext: &str,
    ) -> Result<DataKey, KmsError> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(ciphertext)
            .map_err(|_| KmsError::Ciphertext)?;
        let client = self.client(&key.region).await;
        let mut req = client
            .decrypt()
            .key_id(&key.kms_key_arn)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob));
        for (k, v) in encryption_context(network, key.epoch, scope) {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(|e| KmsError::Decrypt {
            epoch: key.epoch,
            message: aws_sdk_kms::error::DisplayErrorContext(&e).to_string(),
        })?;
        let plain = out
            .plaintext()
            .map(|b| b.as_ref().to_vec())
            .filter(|b| !b.is_empty())
            .ok_or(KmsError::Empty(key.epoch))?;
        Ok(DataKey::new(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_client_per_region_serves_every_decrypt() {
        // Nothing is sent: a client is made without a network call.
        let kms = Kms::new(Some("http://127.0.0.1:9".into()));
        for region in [
            "us-east-1",
            "us-east-1",
            "eu-west-1",
            "us-east-1",
            "eu-west-1",
        ] {
            let _ = kms.client(region).await;
        }
        assert_eq!(kms.clients_built(), 2);
    }
}
