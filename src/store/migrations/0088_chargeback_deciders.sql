-- Who started the judgement, judged or closed a case (the admin call's
-- X-Operator, "ops" without one), kept with the case as its entry is
-- (entered_by). Ops only: not in chargeback_json, which merchants get.
ALTER TABLE chargebacks ADD COLUMN judge_started_by text;
ALTER TABLE chargebacks ADD COLUMN decided_by text;
