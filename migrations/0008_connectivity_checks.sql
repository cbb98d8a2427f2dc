-- Connectivity checks: a user asks, the network's appliances ping each other
-- through the tunnels (the server pings nothing) and report loss and
-- round-trip times per peer site. A check runs until every site it asked has
-- reported or its deadline passes; sites that did not report by then show
-- as "no report".

CREATE TABLE connectivity_checks (
    id           uuid PRIMARY KEY,
    network_id   uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    requested_by uuid REFERENCES users (id) ON DELETE SET NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- What each appliance is asked to send: echoes per peer, and their spacing.
    count        smallint NOT NULL CHECK (count BETWEEN 1 AND 20),
    interval_ms  integer NOT NULL CHECK (interval_ms BETWEEN 100 AND 1000),
    -- The edge sites with appliances when it was asked: every unordered
    -- pair of them is checked, in both directions.
    sites        uuid[] NOT NULL,
    -- Reports are expected by then (the echoes' time plus a grace).
    deadline_at  timestamptz NOT NULL,
    -- Set once every site reported.
    finished_at  timestamptz
);
CREATE INDEX connectivity_checks_latest ON connectivity_checks (network_id, requested_at DESC);

CREATE TABLE connectivity_results (
    check_id    uuid NOT NULL REFERENCES connectivity_checks (id) ON DELETE CASCADE,
    from_site   uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    to_site     uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    sent        smallint NOT NULL CHECK (sent >= 0),
    received    smallint NOT NULL CHECK (received BETWEEN 0 AND sent),
    -- Microseconds; NULL when nothing came back.
    rtt_min_us  integer CHECK (rtt_min_us >= 0),
    rtt_avg_us  integer CHECK (rtt_avg_us >= 0),
    rtt_max_us  integer CHECK (rtt_max_us >= 0),
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (check_id, from_site, to_site)
);

-- A new check puts a probe into the configs of the network's appliances, and
-- its end takes it out again: wake their long-polls as for the other config
-- inputs (0004).
CREATE TRIGGER connectivity_checks_config_changed AFTER INSERT OR UPDATE ON connectivity_checks
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_config();
