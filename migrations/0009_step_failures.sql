-- A step's failed attempts apart from its polls. `attempts` counted every
-- turn, so a healthy step that waited on a stack showed as tried twice and
-- waits used up the retry budget. Now:
--   failures       turns that ended in an error (retried with backoff, or
--                  final): the tries the console shows and the retry budget;
--   polls          turns that found AWS still working (a stack in progress,
--                  an instance not yet launched): healthy, never a try;
--   waiting_since  when the step first waited, for steps that bound a wait
--                  by time;
--   last_error     the latest failure, kept after the step recovers (`error`
--                  is the current one and clears on the next good turn).
-- `attempts` stays as it was: every turn (lease) so far.
ALTER TABLE job_steps
    ADD COLUMN failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    ADD COLUMN polls integer NOT NULL DEFAULT 0 CHECK (polls >= 0),
    ADD COLUMN waiting_since timestamptz,
    ADD COLUMN last_error text;

-- Existing steps: how their turns split is not recorded. An error on record
-- is at least one failed attempt; the other turns, except the one that
-- succeeded, were most likely polls.
UPDATE job_steps SET failures = 1, last_error = error WHERE error IS NOT NULL;
UPDATE job_steps
   SET polls = greatest(attempts - failures - CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END, 0);
UPDATE job_steps SET waiting_since = started_at
 WHERE state IN ('pending', 'waiting') AND polls > 0;

COMMENT ON COLUMN job_steps.attempts IS 'every turn (lease) so far: failed attempts, polls and the turn that finished the step';
COMMENT ON COLUMN job_steps.failures IS 'failed attempts: the retry budget and the tries shown';
COMMENT ON COLUMN job_steps.polls IS 'turns that found AWS still working; never a try';
