-- Keys per tunnel: an epoch made since holds one data key per site pair
-- (a tunnel) and one per site (its HA heartbeat), each generated under an
-- encryption context naming the sites it serves, instead of one key for the
-- whole network. Only KMS ciphertexts are stored, as before.
ALTER TABLE key_epochs ADD COLUMN per_tunnel boolean NOT NULL DEFAULT false;
ALTER TABLE key_epochs ALTER COLUMN ciphertext DROP NOT NULL;
ALTER TABLE key_epochs ADD CONSTRAINT key_epochs_material_check
    CHECK (per_tunnel OR ciphertext IS NOT NULL);

CREATE TABLE epoch_keys (
    network_id uuid NOT NULL,
    epoch integer NOT NULL,
    -- The two sites in ascending order; a site's own key names it twice.
    low_site uuid NOT NULL,
    high_site uuid NOT NULL,
    ciphertext bytea NOT NULL CHECK (length(ciphertext) > 0),
    PRIMARY KEY (network_id, epoch, low_site, high_site),
    FOREIGN KEY (network_id, epoch) REFERENCES key_epochs (network_id, epoch) ON DELETE CASCADE,
    CHECK (low_site <= high_site)
);
