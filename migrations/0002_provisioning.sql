-- AWS accounts, networks and their sites, key epochs, and the durable
-- provisioning jobs that take a network from plan to running stacks.

CREATE TABLE aws_accounts (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    account_id   text NOT NULL CHECK (account_id ~ '^[0-9]{12}$'),
    role_arn     text NOT NULL,
    label        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- The last Verify: when it succeeded, or why it failed.
    verified_at  timestamptz,
    last_checked timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    UNIQUE (org_id, account_id)
);

CREATE TABLE networks (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name         text NOT NULL,
    topology     text NOT NULL CHECK (topology IN ('full_mesh', 'transit', 'mesh_with_leaves')),
    -- Instance types (several = spot mix), HA, spot, NAT-T.
    options      jsonb NOT NULL,
    kms_key_arn  text NOT NULL,
    status       text NOT NULL CHECK (status IN ('planned', 'provisioning', 'ready', 'failed', 'deleting', 'deleted')),
    status_note  text,
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
-- A name is taken while its network exists.
CREATE UNIQUE INDEX networks_live_name ON networks (org_id, lower(name)) WHERE status <> 'deleted';

CREATE TABLE sites (
    id              uuid PRIMARY KEY,
    network_id      uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    -- Kept after the network is deleted, for its history; the account may go then.
    account_ref     uuid REFERENCES aws_accounts (id) ON DELETE SET NULL,
    region          text NOT NULL,
    vpc_id          text NOT NULL,
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('edge', 'leaf')),
    -- For a leaf: the edge site it attaches to. For transit: whether this is the hub.
    edge_site_id    uuid REFERENCES sites (id),
    is_hub          boolean NOT NULL DEFAULT false,
    -- What discovery found: CIDRs, subnets per AZ, route tables.
    cidrs           cidr[] NOT NULL,
    discovered      jsonb NOT NULL,
    -- Stack outputs merged as steps complete (Elastic IP, groups, gateway).
    outputs         jsonb NOT NULL DEFAULT '{}',
    UNIQUE (network_id, vpc_id)
);

CREATE TABLE key_epochs (
    network_id   uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    epoch        integer NOT NULL CHECK (epoch > 0),
    kms_key_arn  text NOT NULL,
    -- KMS CiphertextBlob of the data key; the plaintext never exists here.
    ciphertext   bytea NOT NULL,
    state        text NOT NULL CHECK (state IN ('active', 'retired', 'invalidated')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (network_id, epoch)
);

-- Single-use, expiring tokens an appliance presents once to register. Only a
-- hash is kept; the token itself travels in the stack's user data.
CREATE TABLE site_bootstrap_tokens (
    token_hash   bytea PRIMARY KEY,
    site_id      uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id           uuid PRIMARY KEY,
    network_id   uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('apply', 'teardown')),
    -- The plan this job executes, exactly as previewed.
    plan         jsonb NOT NULL,
    state        text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
-- At most one unfinished job per network.
CREATE UNIQUE INDEX jobs_one_running ON jobs (network_id) WHERE state = 'running';

CREATE TABLE job_steps (
    id              uuid PRIMARY KEY,
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    site_id         uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    -- Steps of a phase start once every step of the earlier phases succeeded.
    phase           integer NOT NULL,
    action          text NOT NULL CHECK (action IN ('address_stack', 'appliance_stack', 'routes', 'delete_stack', 'remove_routes')),
    state           text NOT NULL CHECK (state IN ('pending', 'waiting', 'succeeded', 'failed')),
    stack_name      text NOT NULL,
    -- Stable across retries and restarts, so CloudFormation never runs a step twice.
    client_token    text NOT NULL,
    stack_id        text,
    outputs         jsonb,
    attempts        integer NOT NULL DEFAULT 0,
    -- Executions (with side effects) so far; a lease-holder increments it.
    executions      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    error           text,
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX job_steps_ready ON job_steps (next_attempt_at) WHERE state IN ('pending', 'waiting');

CREATE TABLE progress_events (
    id           bigserial PRIMARY KEY,
    network_id   uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    job_id       uuid REFERENCES jobs (id) ON DELETE CASCADE,
    site_id      uuid REFERENCES sites (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL CHECK (source IN ('step', 'stack')),
    -- For stack events, CloudFormation's EventId, so polling records each once.
    source_id    text,
    resource     text,
    status       text NOT NULL,
    message      text,
    UNIQUE (network_id, source_id)
);
