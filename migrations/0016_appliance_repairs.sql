-- What an appliance's drift check last put back in its kernel (objects of
-- the applied config someone deleted or changed behind the agent's back):
-- when by the server's clock, how many kernel objects (0: lost SAs, moved
-- to a fresh generation), and how many repairs its agent made since it
-- started. NULL: never repaired.
ALTER TABLE appliances
    ADD COLUMN last_repair_at timestamptz,
    ADD COLUMN last_repair_changes integer,
    ADD COLUMN repairs bigint;
