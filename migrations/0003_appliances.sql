-- Appliances register with a single-use token per HA member, then hold a
-- credential (only its hash is stored) for config and status.

ALTER TABLE site_bootstrap_tokens
    ADD COLUMN member text CHECK (member IN ('a', 'b'));

CREATE TABLE appliances (
    id                uuid PRIMARY KEY,
    site_id           uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    member            text NOT NULL CHECK (member IN ('a', 'b')),
    instance_id       text NOT NULL,
    availability_zone text NOT NULL,
    private_ip        inet NOT NULL,
    public_ip         inet,
    credential_hash   bytea NOT NULL UNIQUE,
    agent_version     text NOT NULL,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer instance registered for the same member.
    retired_at        timestamptz,
    last_seen_at      timestamptz,
    applied_version   bigint,
    config_error      text,
    ha_role           text CHECK (ha_role IN ('active', 'passive')),
    tunnels           jsonb NOT NULL DEFAULT '[]'
);

CREATE UNIQUE INDEX appliances_one_live_per_member
    ON appliances (site_id, member) WHERE retired_at IS NULL;
