-- Connection and presence history.

CREATE TABLE socket_connections (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Unique: the writer retries batches, and a retried insert must not duplicate a row.
    socket_id         TEXT        NOT NULL UNIQUE,
    user_id           TEXT        NOT NULL,
    device_id         TEXT        NOT NULL,
    transport         TEXT        NOT NULL CHECK (transport IN ('websocket', 'webtransport')),
    -- TEXT rather than INET: the value is only displayed and matched exactly, and TEXT keeps
    -- the two backends' schemas alike.
    ip_address        TEXT        NOT NULL,
    user_agent        TEXT,
    server_instance   TEXT        NOT NULL,
    connected_at      TIMESTAMPTZ NOT NULL,
    disconnected_at   TIMESTAMPTZ,
    disconnect_reason TEXT,
    -- A row is either open (neither set) or closed with its reason (both set).
    CHECK ((disconnected_at IS NULL) = (disconnect_reason IS NULL))
);

-- The history API: one user's rows newest first, keyset-paged on (connected_at, id).
CREATE INDEX socket_connections_user_time ON socket_connections (user_id, connected_at DESC, id DESC);
-- Closing a crashed instance's rows touches only its open ones.
CREATE INDEX socket_connections_open_by_instance ON socket_connections (server_instance)
    WHERE disconnected_at IS NULL;
-- Retention deletes closed rows by end time.
CREATE INDEX socket_connections_disconnected_at ON socket_connections (disconnected_at)
    WHERE disconnected_at IS NOT NULL;

CREATE TABLE presence_logs (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id   TEXT        NOT NULL,
    device_id TEXT        NOT NULL,
    status    TEXT        NOT NULL CHECK (status IN ('online', 'offline')),
    at        TIMESTAMPTZ NOT NULL
);

-- The history API: one user's transitions newest first, keyset-paged on (at, id).
CREATE INDEX presence_logs_user_time ON presence_logs (user_id, at DESC, id DESC);
-- Retention deletes by age.
CREATE INDEX presence_logs_at ON presence_logs (at);
