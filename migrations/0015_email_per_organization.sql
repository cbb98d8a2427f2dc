-- An email is unique inside its organization, not across all of them: a
-- person may belong to several organizations, and an admin adding a user
-- must not learn that the address is taken somewhere else. Sign-in checks
-- the password against each organization's user with that email.

ALTER TABLE users DROP CONSTRAINT users_email_key;
ALTER TABLE users ADD CONSTRAINT users_org_email_key UNIQUE (org_id, email);
CREATE INDEX users_email ON users (email);
