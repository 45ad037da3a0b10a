-- Channel history kept in the database, for namespaces with `history_durable = true` (see the
-- PostgreSQL migration). Times are Unix milliseconds (INTEGER).

CREATE TABLE channel_positions (
    channel    TEXT    PRIMARY KEY,
    last_seq   INTEGER NOT NULL,
    epoch      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX channel_positions_updated ON channel_positions (updated_at);

CREATE TABLE channel_publications (
    channel    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    data       BLOB    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
);

CREATE INDEX channel_publications_expiry ON channel_publications (expires_at);
