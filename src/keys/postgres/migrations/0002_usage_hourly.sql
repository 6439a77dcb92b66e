-- pyexec schema version 2: executions per key and UTC hour, for GET /usage's history.

-- Kept in step with pyexec_charges by the trigger below, in the admission's own transaction,
-- so a key's history is read from at most a few hundred rows however many executions it made
-- (counting the ledger instead would read every charge). Pruned with the charges, after
-- `serve --usage-retention-days`.
CREATE TABLE pyexec_usage_hourly (
    key_id     text NOT NULL REFERENCES pyexec_keys (id) ON DELETE CASCADE,
    -- The start of the hour, on a whole UTC hour.
    hour       timestamptz NOT NULL,
    executions bigint NOT NULL CHECK (executions >= 0),
    PRIMARY KEY (key_id, hour)
);

-- Once per INSERT statement (one per admission batch): adds the statement's new charges to
-- their keys' hours. Each key's row is already locked by pyexec_admit, so batches touching the
-- same hour wait on the key's lock, never on each other in another order.
CREATE FUNCTION pyexec_count_charges() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pyexec_usage_hourly AS counted (key_id, hour, executions)
        SELECT c.key_id, date_trunc('hour', c.charged_at, 'UTC'), count(*)
        FROM charged c
        GROUP BY 1, 2
        ORDER BY 1, 2
    ON CONFLICT (key_id, hour)
        DO UPDATE SET executions = counted.executions + excluded.executions;
    RETURN NULL;
END
$$;

CREATE TRIGGER pyexec_charges_counted
    AFTER INSERT ON pyexec_charges
    REFERENCING NEW TABLE AS charged
    FOR EACH STATEMENT EXECUTE FUNCTION pyexec_count_charges();

-- Charges made before this migration.
INSERT INTO pyexec_usage_hourly (key_id, hour, executions)
    SELECT key_id, date_trunc('hour', charged_at, 'UTC'), count(*)
    FROM pyexec_charges
    GROUP BY 1, 2;
