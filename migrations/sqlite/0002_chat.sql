-- Chat: conversations, their members, and messages with a per-conversation sequence.
-- Times are Unix milliseconds (INTEGER).

CREATE TABLE conversations (
    id         TEXT    PRIMARY KEY,
    title      TEXT,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    -- The seq of the newest message, incremented in the sending transaction (see the
    -- PostgreSQL migration).
    last_seq   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE conversation_members (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX conversation_members_user ON conversation_members (user_id);

CREATE TABLE messages (
    id                TEXT    PRIMARY KEY,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               INTEGER NOT NULL,
    sender_id         TEXT    NOT NULL,
    content           TEXT    NOT NULL,
    reply_to_id       TEXT,
    client_message_id TEXT,
    created_at        INTEGER NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_message_id)
);
