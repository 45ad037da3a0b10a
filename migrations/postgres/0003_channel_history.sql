-- Channel history kept in the database, for namespaces with `history_durable = true`: it
-- survives restarts of Redis and of every instance, so a channel's epoch changes only when its
-- position is unused for `--history-meta-ttl`.

CREATE TABLE channel_positions (
    channel    TEXT        PRIMARY KEY,
    -- The offset of the newest publication (0 before the first). Publishing increments it in
    -- the transaction that inserts the publication, so the row lock serializes publishers on
    -- every instance and committed offsets have no gaps.
    last_seq   BIGINT      NOT NULL,
    epoch      TEXT        NOT NULL,
    -- The last publication (or the position's creation): retention deletes positions unused
    -- for `--history-meta-ttl`.
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX channel_positions_updated ON channel_positions (updated_at);

CREATE TABLE channel_publications (
    channel    TEXT        NOT NULL,
    -- The publication's offset.
    seq        BIGINT      NOT NULL,
    -- The publication's JSON fields, as the server encoded them.
    data       BYTEA       NOT NULL,
    -- The namespace's `history_ttl` after the publication; reads skip expired rows and
    -- retention deletes them.
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel, seq)
);

CREATE INDEX channel_publications_expiry ON channel_publications (expires_at);
