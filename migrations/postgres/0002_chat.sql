-- Chat: conversations, their members, and messages with a per-conversation sequence.

CREATE TABLE conversations (
    -- UUIDs as TEXT (canonical lowercase form, normalized by the server) keep the two
    -- backends' schemas and bindings alike.
    id         TEXT        PRIMARY KEY,
    title      TEXT,
    created_by TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    -- The seq of the newest message. Sending increments it in the same transaction that
    -- inserts the message, so the row lock serializes concurrent senders on every instance
    -- and committed seqs have no gaps.
    last_seq   BIGINT      NOT NULL DEFAULT 0
);

CREATE TABLE conversation_members (
    conversation_id TEXT        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT        NOT NULL,
    role            TEXT        NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

-- "My conversations".
CREATE INDEX conversation_members_user ON conversation_members (user_id);

CREATE TABLE messages (
    id                TEXT        PRIMARY KEY,
    conversation_id   TEXT        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               BIGINT      NOT NULL,
    sender_id         TEXT        NOT NULL,
    content           TEXT        NOT NULL,
    reply_to_id       TEXT,
    -- The sender's idempotency key: a retried send returns the stored message.
    client_message_id TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    -- Also the index every page and recovery read uses.
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_message_id)
);
