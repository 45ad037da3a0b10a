-- Webhooks waiting for delivery, delivered, or given up on (dead letters). Rows are written by
-- the history writer in the batch that records the event, and claimed by the delivery workers
-- of every instance (`FOR UPDATE SKIP LOCKED`), so an instance that crashes loses nothing that
-- was recorded. Times are Unix milliseconds.

CREATE TABLE webhook_outbox (
    -- One row per event and endpoint.
    id              TEXT    PRIMARY KEY,
    -- The event's id, the same for every endpoint: receivers deduplicate by it.
    event_id        TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    -- The JSON body delivered, exactly as signed.
    body            TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    -- A worker's claim: nobody else takes the row before this time.
    claimed_until   BIGINT  NOT NULL DEFAULT 0,
    delivered_at    BIGINT,
    dead_at         BIGINT,
    last_error      TEXT
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_outbox_created ON webhook_outbox (created_at);
