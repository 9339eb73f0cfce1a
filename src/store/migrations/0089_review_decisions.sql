-- Ops' decisions on payments held for review: who released or rejected
-- which payment, why, when (before, only a log line named the operator).
-- Written once the engine has applied the decision.
CREATE TABLE review_decisions (
    payment_no text NOT NULL REFERENCES payments (payment_no),
    decision   text NOT NULL CHECK (decision IN ('RELEASE', 'REJECT')),
    who        text NOT NULL,
    why        text,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_decisions_payment ON review_decisions (payment_no);
