-- pyexec schema version 1: keys, the charges ledger, and batched admission.

CREATE TABLE pyexec_keys (
    -- The public key ID (`sk_test_AbCd1234`); the secret part is never stored.
    id                    text PRIMARY KEY,
    -- SHA-256 of the whole plaintext key.
    hash                  bytea NOT NULL CHECK (length(hash) = 32),
    name                  text NOT NULL,
    description           text NOT NULL,
    env                   text NOT NULL CHECK (env IN ('test', 'prod')),
    created_at            timestamptz NOT NULL,
    executions_limit      bigint NOT NULL CHECK (executions_limit >= 0),
    executions_used       bigint NOT NULL DEFAULT 0 CHECK (executions_used >= 0),
    rate_limit_per_minute integer NOT NULL CHECK (rate_limit_per_minute > 0),
    fuel_limit            bigint CHECK (fuel_limit > 0),
    revoked_at            timestamptz,
    -- GCRA theoretical arrival time in nanoseconds since the Unix epoch, on the database's
    -- clock; NULL until the key's first admission.
    rate_tat_ns           bigint
);

-- One row per admitted execution: what makes a retried charge idempotent and usage auditable.
CREATE TABLE pyexec_charges (
    execution_id text PRIMARY KEY,
    key_id       text NOT NULL REFERENCES pyexec_keys (id) ON DELETE CASCADE,
    charged_at   timestamptz NOT NULL
);
CREATE INDEX pyexec_charges_by_key_and_time ON pyexec_charges (key_id, charged_at);

-- Admits a batch of executions in one statement: slot i asks to charge key p_ids[i],
-- presented with hash p_hashes[i], as execution p_executions[i]. Every key of the batch is
-- locked in key order first (so batches of any number of nodes cannot deadlock), then each
-- key's admissions are decided in slot order exactly as the in-memory store decides them:
-- hash, revocation, GCRA rate limit (consumed before the quota is checked), quota. One row
-- per slot comes back; one UPDATE per key and one INSERT for the batch go in.
CREATE FUNCTION pyexec_admit(p_ids text[], p_hashes bytea[], p_executions text[])
RETURNS TABLE (
    o_slot bigint,
    -- admitted | invalid | revoked | rate_limited | exhausted
    o_outcome text,
    o_executions_left bigint,
    o_rate_limit integer,
    -- The key's GCRA state before this slot's decision, and the database clock, in ns.
    o_tat_ns bigint,
    o_now_ns bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    key_row pyexec_keys%ROWTYPE;
    item record;
    already_charged text[];
    clock_ns bigint;
    interval_ns bigint;
    window_ns bigint;
    tat bigint;
    used bigint;
    charged_executions text[] := '{}';
    charged_keys text[] := '{}';
BEGIN
    PERFORM 1 FROM pyexec_keys WHERE id = ANY (p_ids) ORDER BY id FOR UPDATE;
    clock_ns := (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint;
    SELECT coalesce(array_agg(execution_id), '{}') INTO already_charged
        FROM pyexec_charges WHERE execution_id = ANY (p_executions);

    FOR key_row IN SELECT * FROM pyexec_keys WHERE id = ANY (p_ids) ORDER BY id LOOP
        interval_ns := 60000000000 / key_row.rate_limit_per_minute;
        window_ns := interval_ns * key_row.rate_limit_per_minute;
        tat := key_row.rate_tat_ns;
        used := key_row.executions_used;
        FOR item IN
            SELECT b.slot, b.hash, b.execution
            FROM unnest(p_ids, p_hashes, p_executions) WITH ORDINALITY AS b (id, hash, execution, slot)
            WHERE b.id = key_row.id
            ORDER BY b.slot
        LOOP
            o_slot := item.slot;
            o_rate_limit := key_row.rate_limit_per_minute;
            o_now_ns := clock_ns;
            o_tat_ns := greatest(coalesce(tat, clock_ns), clock_ns);
            IF item.hash IS DISTINCT FROM key_row.hash THEN
                o_outcome := 'invalid';
            ELSIF key_row.revoked_at IS NOT NULL THEN
                o_outcome := 'revoked';
            ELSIF item.execution = ANY (already_charged) THEN
                -- A retried charge: it was counted once already.
                o_outcome := 'admitted';
            ELSIF o_tat_ns + interval_ns > clock_ns + window_ns THEN
                o_outcome := 'rate_limited';
            ELSE
                tat := o_tat_ns + interval_ns;
                IF used + 1 > key_row.executions_limit THEN
                    o_outcome := 'exhausted';
                ELSE
                    used := used + 1;
                    o_outcome := 'admitted';
                    charged_executions := charged_executions || item.execution;
                    charged_keys := charged_keys || key_row.id;
                END IF;
            END IF;
            o_executions_left := greatest(key_row.executions_limit - used, 0);
            RETURN NEXT;
        END LOOP;
        IF used <> key_row.executions_used OR tat IS DISTINCT FROM key_row.rate_tat_ns THEN
            UPDATE pyexec_keys SET executions_used = used, rate_tat_ns = tat
                WHERE id = key_row.id;
        END IF;
    END LOOP;

    INSERT INTO pyexec_charges (execution_id, key_id, charged_at)
        SELECT c.execution, c.key_id, clock_timestamp()
        FROM unnest(charged_executions, charged_keys) AS c (execution, key_id);

    RETURN QUERY
        SELECT b.slot, 'invalid'::text, 0::bigint, 0, clock_ns, clock_ns
        FROM unnest(p_ids) WITH ORDINALITY AS b (id, slot)
        WHERE NOT EXISTS (SELECT 1 FROM pyexec_keys k WHERE k.id = b.id);
END
$$;
