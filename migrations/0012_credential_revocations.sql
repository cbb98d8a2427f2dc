-- Server replicas cache appliance credentials they have looked up. A
-- credential stops working when its appliance is retired or its row goes:
-- tell every replica at once (LISTEN vpcmesh_credentials).

CREATE FUNCTION vpcmesh_notify_credential() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('vpcmesh_credentials', OLD.id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER appliances_credential_revoked AFTER UPDATE OF retired_at, credential_hash ON appliances
    FOR EACH ROW WHEN (OLD.retired_at IS DISTINCT FROM NEW.retired_at
                       OR OLD.credential_hash IS DISTINCT FROM NEW.credential_hash)
    EXECUTE FUNCTION vpcmesh_notify_credential();
CREATE TRIGGER appliances_credential_deleted AFTER DELETE ON appliances
    FOR EACH ROW EXECUTE FUNCTION vpcmesh_notify_credential();
