-- A VPC is in one live network at a time, across organizations: two
-- networks in one VPC would fight over its route tables and both put
-- appliances in it. A claim is taken with the network (same transaction)
-- and let go when the network is deleted (status 'deleted', after its
-- teardown) or its row goes. Keyed by the AWS account number, not the
-- organization's account record: two organizations may register one AWS
-- account.
CREATE TABLE vpc_claims (
    aws_account_id text NOT NULL CHECK (aws_account_id ~ '^[0-9]{12}$'),
    region         text NOT NULL,
    vpc_id         text NOT NULL,
    network_id     uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    site_id        uuid NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aws_account_id, region, vpc_id)
);
CREATE INDEX vpc_claims_network ON vpc_claims (network_id);

-- Networks that exist already claim their VPCs; where two of them share a
-- VPC (allowed before), the older one keeps it.
INSERT INTO vpc_claims (aws_account_id, region, vpc_id, network_id, site_id, claimed_at)
SELECT DISTINCT ON (a.account_id, s.region, s.vpc_id)
       a.account_id, s.region, s.vpc_id, s.network_id, s.id, n.created_at
  FROM sites s
  JOIN networks n ON n.id = s.network_id
  JOIN aws_accounts a ON a.id = s.account_ref
 WHERE n.status <> 'deleted'
 ORDER BY a.account_id, s.region, s.vpc_id, n.created_at;

CREATE FUNCTION release_vpc_claims() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM vpc_claims WHERE network_id = NEW.id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER networks_release_vpc_claims
    AFTER UPDATE OF status ON networks
    FOR EACH ROW
    WHEN (NEW.status = 'deleted' AND OLD.status IS DISTINCT FROM 'deleted')
    EXECUTE FUNCTION release_vpc_claims();
