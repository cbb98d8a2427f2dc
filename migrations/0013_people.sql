-- People: a read-only viewer role, sessions that can be revoked, and an
-- audit log that keeps who acted after that person is removed.

ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'member', 'viewer'));

-- Every session remembers the epoch it was signed in under; raising it ends
-- all of the user's sessions at their next request (revoke, password change).
ALTER TABLE users ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;

ALTER TABLE audit_events ADD COLUMN actor_email text;
UPDATE audit_events a SET actor_email = u.email FROM users u WHERE u.id = a.actor_id;
