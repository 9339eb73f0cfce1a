-- Without notify.platform_key_file every node generated a platform key of its
-- own at start: an RSA2 merchant fetched one node's public key and received
-- notifications signed by another's (and a new key after every restart), so
-- its verification failed and the events ran out of retries. The first node
-- now stores the key it generates here; every node (and every restart) signs
-- with the stored one. A key file, where configured, still wins.
CREATE TABLE platform_keys (
    id          integer PRIMARY KEY CHECK (id = 1),
    private_pem text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
