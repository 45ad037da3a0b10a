-- Webhooks waiting for delivery, delivered, or dead (see the PostgreSQL migration). Times are
-- Unix milliseconds.

CREATE TABLE webhook_outbox (
    id              TEXT    PRIMARY KEY,
    event_id        TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER NOT NULL DEFAULT 0,
    delivered_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_outbox_created ON webhook_outbox (created_at);
