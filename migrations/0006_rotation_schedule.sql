-- Automatic key rotation: a network's key is rotated (make-before-break, as
-- "Rotate now") once its active epoch is this many days old. NULL: off.
ALTER TABLE networks ADD COLUMN rotate_every_days integer
    CHECK (rotate_every_days BETWEEN 1 AND 365);
