-- FediFlow-like schema and data for the lab (named args: accounts, statuses, follows,
-- media). Deterministic (no random()), all in one transaction: a half-seeded database
-- never exists. No modulo operator: psycopg2 reserves the percent sign for its named parameters.
BEGIN;

-- amcheck (contrib): the integrity validation checks the B-tree indexes with bt_index_check.
CREATE EXTENSION IF NOT EXISTS amcheck;

CREATE TABLE accounts (
    id           bigserial PRIMARY KEY,
    username     text NOT NULL,
    domain       text,
    display_name text NOT NULL DEFAULT '',
    note         text NOT NULL DEFAULT '',
    locked       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (username, domain)
);

CREATE TABLE statuses (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    in_reply_to_id bigint REFERENCES statuses (id) ON DELETE SET NULL,
    uri         text NOT NULL UNIQUE,
    text        text NOT NULL,
    visibility  smallint NOT NULL DEFAULT 0,
    sensitive   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX statuses_account_created_idx ON statuses (account_id, created_at DESC);

CREATE TABLE follows (
    id                bigserial PRIMARY KEY,
    account_id        bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    target_account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, target_account_id)
);

CREATE TABLE media_attachments (
    id          bigserial PRIMARY KEY,
    status_id   bigint REFERENCES statuses (id) ON DELETE SET NULL,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    file_path   text NOT NULL,
    file_size   bigint NOT NULL,
    content_type text NOT NULL,
    sha256      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX media_attachments_status_idx ON media_attachments (status_id);

INSERT INTO accounts (username, domain, display_name, note, locked, created_at)
SELECT 'user' || g,
       CASE WHEN mod(g, 4) = 0 THEN NULL ELSE 'peer' || mod(g, 7) || '.example' END,
       'User ' || g,
       md5(g::text),
       mod(g, 10) = 0,
       now() - make_interval(days => mod(g, 900))
FROM generate_series(1, %(accounts)s::int) AS g;

INSERT INTO statuses (account_id, uri, text, visibility, sensitive, created_at)
SELECT 1 + mod(g * 7919, %(accounts)s::int),
       'https://fediflow.example/statuses/' || g,
       repeat(md5(g::text), 1 + mod(g, 4)),
       mod(g, 4),
       mod(g, 13) = 0,
       now() - make_interval(mins => g)
FROM generate_series(1, %(statuses)s::int) AS g;

UPDATE statuses SET in_reply_to_id = id - 1 WHERE mod(id, 5) = 0 AND id > 1;

INSERT INTO follows (account_id, target_account_id, created_at)
SELECT DISTINCT ON (a, b) a, b, now() - make_interval(hours => g)
FROM (
    SELECT g, 1 + mod(g, %(accounts)s::int) AS a, 1 + mod(g * 31 + g / %(accounts)s::int, %(accounts)s::int) AS b
    FROM generate_series(1, %(follows)s::int) AS g
) AS pairs
WHERE a <> b;

INSERT INTO media_attachments (status_id, account_id, file_path, file_size, content_type, sha256)
SELECT s.id, s.account_id,
       'media/' || substr(md5(s.id::text), 1, 2) || '/' || s.id || '.jpg',
       1024 + mod(s.id * 104729, 500000),
       'image/jpeg',
       encode(sha256(s.id::text::bytea), 'hex')
FROM statuses AS s
WHERE s.id <= %(media)s::int;

COMMIT;
