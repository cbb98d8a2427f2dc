-- Failover between the two members of a site. The members decide between
-- themselves (heartbeats; EC2, who holds the Elastic IP, is the arbiter);
-- the server records what they report, asks a member to take over when an
-- admin says "Fail over now" or its health monitor sees an active that
-- stopped reporting while its partner is alive, and keeps the history.

-- Why an appliance has the role it last reported (protocol's HaReason), and
-- since when by the server's clock (now - role_for_ms at the report). NULL
-- for agents from before failover existed.
ALTER TABLE appliances
    ADD COLUMN ha_reason text CHECK (ha_reason IN (
        'starting', 'holds_address', 'claimed', 'partner_silent', 'requested',
        'handed_over', 'partner_active', 'address_taken', 'handing_over')),
    ADD COLUMN ha_role_since timestamptz;

-- Takeovers the server asks of a member, per site numbered 1, 2, ... (the
-- number travels in the member's config as `ha.take_over`; the agent carries
-- out each number once and reports it back). Only a site's latest request
-- can be pending; it is done once the member it names reports
-- `take_over_done >= number`. Addressed to one appliance, not to a member
-- slot: a replacement instance of that member joins as passive and never
-- inherits a request.
CREATE TABLE takeover_requests (
    site_id      uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    number       bigint NOT NULL CHECK (number > 0),
    member       text NOT NULL CHECK (member IN ('a', 'b')),
    appliance_id uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- Who asked: a user ("Fail over now"), or the health monitor.
    source       text NOT NULL CHECK (source IN ('user', 'health_monitor')),
    requested_by uuid REFERENCES users (id) ON DELETE SET NULL,
    -- For the health monitor: the silent active it acted on and its last
    -- report (one silence is one event, asked about at most `attempt` 2 times).
    silent_appliance_id uuid REFERENCES appliances (id) ON DELETE SET NULL,
    silent_seen_at      timestamptz,
    attempt      smallint NOT NULL DEFAULT 1 CHECK (attempt BETWEEN 1 AND 10),
    done_at      timestamptz,
    PRIMARY KEY (site_id, number),
    CHECK (source = 'user' OR requested_by IS NULL),
    CHECK (source = 'health_monitor' OR (silent_appliance_id IS NULL AND silent_seen_at IS NULL))
);

-- A request (and its completion) changes the addressed member's config:
-- wake the network's long-polls, as for the other config inputs (0005).
CREATE TRIGGER takeover_requests_config_changed AFTER INSERT OR UPDATE ON takeover_requests
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_appliance_epochs();

-- Every time a site's active role moved to another appliance for a failover
-- reason (the partner fell silent, the server asked, a spot handover),
-- recorded once, when the new active first reported it.
CREATE TABLE failovers (
    id                bigserial PRIMARY KEY,
    network_id        uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    site_id           uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    -- The member that was active before (NULL: none had registered).
    from_appliance_id uuid REFERENCES appliances (id) ON DELETE SET NULL,
    to_appliance_id   uuid NOT NULL REFERENCES appliances (id) ON DELETE CASCADE,
    reason            text NOT NULL CHECK (reason IN ('partner_silent', 'requested', 'handed_over')),
    -- For `requested`: the request it carried out and who asked.
    request_number    bigint,
    request_source    text CHECK (request_source IN ('user', 'health_monitor')),
    requested_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    -- When the new active took the role (its report's role_for_ms, by the
    -- server's clock), and when the server learnt of it.
    took_role_at      timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failovers_network_latest ON failovers (network_id, took_role_at DESC);
