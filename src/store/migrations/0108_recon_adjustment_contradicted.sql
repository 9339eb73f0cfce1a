-- A difference ops resolved with an adjustment that wrote off money the
-- channel did not list (MISSING_CHANNEL, or a STATUS_MISMATCH whose line
-- was not a success) is contradicted when a later statement lists the
-- transaction paid: the loss booked to suspense never happened. The run of
-- that later day records an ADJUSTMENT_CONTRADICTED difference that names
-- the adjusted one (contradicts), once (src/recon/recon_match.c,
-- SQL_CONTRADICTED); resolving it with an adjustment books the earlier one
-- back (src/recon/recon.c). Before, the later line was matched as carried
-- in silence, and the books kept the loss.
ALTER TABLE recon_diffs DROP CONSTRAINT recon_diffs_kind_check,
    ADD CONSTRAINT recon_diffs_kind_check CHECK (kind IN ('MISSING_LOCAL', 'MISSING_CHANNEL',
                                                          'AMOUNT_MISMATCH', 'STATUS_MISMATCH',
                                                          'FEE_MISMATCH', 'CURRENCY_MISMATCH',
                                                          'DUPLICATE_LINE',
                                                          'ADJUSTMENT_CONTRADICTED')),
    ADD COLUMN contradicts bigint REFERENCES recon_diffs (diff_id),
    ADD CONSTRAINT recon_diffs_contradicts CHECK ((kind = 'ADJUSTMENT_CONTRADICTED')
                                                  = (contradicts IS NOT NULL));
-- Whether an adjusted difference was reported contradicted already (by
-- another day's run: each is reported once).
CREATE INDEX recon_diffs_contradicts ON recon_diffs (contradicts) WHERE contradicts IS NOT NULL;

CREATE OR REPLACE FUNCTION recon_diff_json(d recon_diffs) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'diff_id', d.diff_id, 'run_id', d.run_id, 'channel_id', d.channel_id,
        'date', to_char(d.business_date, 'YYYY-MM-DD'), 'kind', d.kind, 'type', d.obj,
        'status', d.status,
        'line', CASE WHEN d.line_no IS NULL THEN NULL ELSE json_build_object(
            'row', d.line_no, 'channel_ref', d.channel_ref, 'paycore_ref', d.paycore_ref,
            'amount', d.line_amount, 'currency', d.line_currency, 'fee', d.line_fee,
            'status', d.line_status, 'time', recon_time(d.line_time)) END,
        'local', CASE WHEN d.local_ref IS NULL THEN NULL ELSE json_build_object(
            'table', d.local_table, 'ref', d.local_ref, 'status', d.local_status,
            'amount', d.local_amount, 'currency', d.local_currency,
            'expected_fee', d.expected_fee) END,
        'repair', d.repair, 'repair_attempts', d.repair_attempts,
        'contradicts', d.contradicts,
        'resolution', CASE WHEN d.status = 'OPEN' THEN NULL ELSE json_build_object(
            'reason', d.reason, 'by', d.resolved_by, 'at', recon_time(d.resolved_at),
            'ledger_txn_id', d.ledger_txn_id) END,
        'created_at', recon_time(d.created_at), 'updated_at', recon_time(d.updated_at))
$$;
