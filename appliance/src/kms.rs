//! Data keys, decrypted with the appliance's own credentials (its instance
//! role on AWS) under the encryption context of what they serve.

use crate::dataplane::DataKey;
use crate::protocol::{encryption_context, EpochKey, KeyScope};
use base64::Engine;
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

pub struct Kms {
    endpoint: Option<String>,
}

impl Kms {
    /// `endpoint` overrides AWS's (a local emulator in labs).
    pub fn new(endpoint: Option<String>) -> Self {
        Self { endpoint }
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
        let config = crate::aws::sdk_config(&key.region, self.endpoint.as_deref(), None).await;
        let client = aws_sdk_kms::Client::new(&config);
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
