-- Some alerts are about what one node sees: a channel's failure rate (each
-- node refreshes the shared figures on its own clock) and a rule refused at
-- a node's last reload (nodes reload on their own). A node that saw nothing
-- wrong resolved the alert another node had just raised, which raised it
-- again at its next check: a new alert, and a new page to ops, every few
-- seconds. Every node that sees the condition now confirms the alert, and
-- a node that does not only resolves it once no node has confirmed it for
-- a while.
ALTER TABLE alerts ADD COLUMN confirmed_at timestamptz NOT NULL DEFAULT now();
