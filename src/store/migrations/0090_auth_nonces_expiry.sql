-- The purge of expired nonces (pc_idem_purge) goes oldest first in batches:
-- after a Redis outage the table holds every nonce taken meanwhile, and one
-- unindexed DELETE of them all ran past the pool's statement deadline, was
-- cut off and rolled back, every minute on every node.
CREATE INDEX auth_nonces_expires ON auth_nonces (expires_at);
