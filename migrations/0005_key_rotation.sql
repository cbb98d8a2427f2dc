-- Make-before-break key rotation. A rotation turns the active epoch into the
-- retiring one: appliances accept both, senders move to the new epoch once
-- every live appliance of the receiving site accepts it, and the retiring
-- epoch is retired after every live appliance sends with the new one and a
-- grace period has passed.

ALTER TABLE key_epochs DROP CONSTRAINT key_epochs_state_check;
ALTER TABLE key_epochs ADD CONSTRAINT key_epochs_state_check
    CHECK (state IN ('active', 'retiring', 'retired', 'invalidated'));
-- When every live appliance was first seen sending with the new epoch.
ALTER TABLE key_epochs ADD COLUMN switched_at timestamptz;
ALTER TABLE key_epochs ADD COLUMN retired_at timestamptz;
CREATE UNIQUE INDEX key_epochs_one_retiring ON key_epochs (network_id) WHERE state = 'retiring';
CREATE UNIQUE INDEX key_epochs_one_active ON key_epochs (network_id) WHERE state = 'active';

-- The epochs whose inbound SAs an appliance's applied config installed.
ALTER TABLE appliances ADD COLUMN epochs integer[] NOT NULL DEFAULT '{}';

-- A change in what an appliance accepts can move its peers' outbound SAs:
-- wake the network's long-polls, as for the other config inputs (0004).
CREATE FUNCTION vpcmesh_notify_appliance_epochs() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vpcmesh_config', s.network_id::text)
       FROM sites s WHERE s.id = NEW.site_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER appliances_epochs_changed AFTER UPDATE OF epochs ON appliances
    FOR EACH ROW WHEN (OLD.epochs IS DISTINCT FROM NEW.epochs)
    EXECUTE FUNCTION vpcmesh_notify_appliance_epochs();
