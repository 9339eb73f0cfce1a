-- A node that cannot reach Redis records the nonces it takes in auth_nonces
-- (0002) only; a node whose Redis answers checks Redis only. With one node
-- cut off from Redis and another not (a partial outage), a request taken on
-- one could be replayed to the other within its timestamp window. The
-- node recording nonces in PostgreSQL only says so here, until a nonce's
-- lifetime after its last such nonce; while it says so, every node also
-- records in auth_nonces the nonces it takes through Redis, and a nonce is
-- single-use across both kinds of node (src/auth/auth.c).
CREATE TABLE auth_nonce_fallback (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    until timestamptz NOT NULL
);
