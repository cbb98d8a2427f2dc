-- Appliance configs are compiled from networks, sites and key epochs. Any
-- change to those notifies every server replica (LISTEN vpcmesh_config), which
-- wakes the long-polls of that network's appliances.

CREATE FUNCTION vpcmesh_notify_config() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'networks' THEN
        PERFORM pg_notify('vpcmesh_config', NEW.id::text);
    ELSE
        PERFORM pg_notify('vpcmesh_config', NEW.network_id::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER networks_config_changed AFTER UPDATE ON networks
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_config();
CREATE TRIGGER sites_config_changed AFTER INSERT OR UPDATE ON sites
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_config();
CREATE TRIGGER key_epochs_config_changed AFTER INSERT OR UPDATE ON key_epochs
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_config();
