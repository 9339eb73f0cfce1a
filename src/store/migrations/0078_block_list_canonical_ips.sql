-- Block-list IP entries in canonical text. Pay compares a payment's client
-- address in canonical text (http/forwarded.c pc_ip_canonical: IPv6 lower
-- case and compressed, an IPv4 address written as IPv6 as the IPv4 one), and
-- POST /admin/block-list stores new entries so; an entry stored before as
-- typed ("2001:DB8::1", "::ffff:10.1.2.3") would no longer match. Text that
-- is no single address is left as it was (it never matched anything).
CREATE FUNCTION pc_tmp_canonical_ip(v text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    i inet;
BEGIN
    BEGIN
        i := v::inet;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
    IF masklen(i) <> (CASE family(i) WHEN 4 THEN 32 ELSE 128 END) THEN
        RETURN NULL;
    END IF;
    IF family(i) = 6 AND i << '::ffff:0.0.0.0/96'::inet THEN
        RETURN substr(host(i), 8);
    END IF;
    RETURN host(i);
END
$$;

WITH canon AS (
    SELECT value, pc_tmp_canonical_ip(value) AS c, reason, created_at
    FROM block_list
    WHERE kind = 'IP' AND pc_tmp_canonical_ip(value) IS DISTINCT FROM value
      AND pc_tmp_canonical_ip(value) IS NOT NULL
), gone AS (
    DELETE FROM block_list b USING canon WHERE b.kind = 'IP' AND b.value = canon.value
)
INSERT INTO block_list (kind, value, reason, created_at)
SELECT DISTINCT ON (c) 'IP', c, reason, created_at FROM canon ORDER BY c, created_at
ON CONFLICT (kind, value) DO NOTHING;

DROP FUNCTION pc_tmp_canonical_ip(text);
