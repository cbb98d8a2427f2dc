-- Tenancy and identity: organizations, their users, sign-in attempts, audit log.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- Per-organization external ID for cross-account AssumeRole; generated, never typed.
    external_id text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email         text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role          text NOT NULL CHECK (role IN ('admin', 'member')),
    -- Argon2id PHC string; never the password.
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (email)
);
CREATE INDEX users_org ON users (org_id);

-- Every sign-in attempt, for rate limiting across server replicas.
CREATE TABLE sign_in_attempts (
    id        bigserial PRIMARY KEY,
    email     text NOT NULL,
    client_ip inet NOT NULL,
    succeeded boolean NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_attempts_email_at ON sign_in_attempts (email, at);
CREATE INDEX sign_in_attempts_ip_at ON sign_in_attempts (client_ip, at);

CREATE TABLE audit_events (
    id         bigserial PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    actor_id   uuid REFERENCES users (id) ON DELETE SET NULL,
    action     text NOT NULL,
    target     text,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_org_at ON audit_events (org_id, at DESC);

-- Console sessions, in the layout tower-sessions' Postgres store reads.
CREATE SCHEMA tower_sessions;
CREATE TABLE tower_sessions.session (
    id          text PRIMARY KEY NOT NULL,
    data        bytea NOT NULL,
    expiry_date timestamptz NOT NULL
);
