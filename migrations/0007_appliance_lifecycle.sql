-- The life of an appliance. A member's bootstrap token now registers every
-- instance its Auto Scaling group launches (a replacement comes back by
-- itself); the token alone is not enough: the server checks with EC2, through
-- the customer's role, that the instance is a running member of that group
-- with the address it claims. A token stays valid while its site lives
-- (expires_at NULL).
ALTER TABLE site_bootstrap_tokens ALTER COLUMN expires_at DROP NOT NULL;

-- SA generations: every instance of a member gets a generation above all of
-- the member's earlier ones, and a kernel that lost its SAs (a reboot) asks
-- for the next. A flow's SPIs are made from the generations of its sender
-- and of the receiving site's members, so no (key, SPI) is installed twice.
ALTER TABLE appliances ADD COLUMN generation integer NOT NULL DEFAULT 0
    CHECK (generation >= 0);
-- Per tunnel (by peer site), the SPIs the appliance's kernel holds, as its
-- last status report said: {"<peer site>": {"out": spi, "in": [spi, ...]}}.
-- A sender moves to a new generation once every live receiver holds it.
ALTER TABLE appliances ADD COLUMN sa_state jsonb NOT NULL DEFAULT '{}';
-- Which protocol the appliance's agent speaks (from its config requests).
ALTER TABLE appliances ADD COLUMN protocol smallint;

CREATE INDEX appliances_live_instance ON appliances (instance_id) WHERE retired_at IS NULL;

-- New instances, retirements, generations and held SPIs all change the
-- configs of the network's appliances: wake their long-polls (0004, 0005).
CREATE TRIGGER appliances_registered AFTER INSERT ON appliances
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_appliance_epochs();
CREATE TRIGGER appliances_sas_changed AFTER UPDATE OF generation, sa_state, retired_at ON appliances
    FOR EACH ROW WHEN (OLD.generation IS DISTINCT FROM NEW.generation
                       OR OLD.sa_state IS DISTINCT FROM NEW.sa_state
                       OR OLD.retired_at IS DISTINCT FROM NEW.retired_at)
    EXECUTE FUNCTION vpcmesh_notify_appliance_epochs();
