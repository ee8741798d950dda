-- Security of the gateway's own accounts (issue 15: H5, M1, M2).

-- The key that signs this gateway's own sessions. The first replica to start generates it (256 random
-- bits) and every replica reads it: sessions are never signed with a secret configured from outside
-- (such as Supabase's JWT secret), so a local session is never another issuer's token.
create table zehanx.session_keys (
    id          smallint primary key default 1 check (id = 1),
    secret      text not null check (length(secret) >= 43),
    create_time timestamptz not null default now()
);

-- Refresh tokens a session has rotated away. One presented again was copied (the holder and the copy
-- both renew): the whole session is revoked, the copy's newer tokens with it. Deleted with the session.
create table zehanx.session_retired_tokens (
    refresh_sha256 bytea primary key check (length(refresh_sha256) = 32),
    session_id     uuid not null references zehanx.sessions (id) on delete cascade,
    retire_time    timestamptz not null default now()
);
create index session_retired_tokens_session_idx on zehanx.session_retired_tokens (session_id);

-- Why a session ended (signed_out, refresh_token_reused, idle, lifetime); sessions past their
-- lifetime are deleted by their sign-in time.
alter table zehanx.sessions add column revoke_reason text;
create index sessions_create_time_idx on zehanx.sessions (create_time);

-- sign_in_failures rows are now taken before the password is checked (a pending attempt counts) and
-- deleted when it was right; they are also counted per email and client together.
create index sign_in_failures_pair_idx on zehanx.sign_in_failures (email, client, attempt_time);

-- Where each account has signed in from (a client: an IPv4 address or an IPv6 /64): the limit on
-- failed sign-ins per email from every client together does not lock its owner out from these.
create table zehanx.sign_in_known_clients (
    email     text not null,
    client    text not null,
    last_time timestamptz not null default now(),
    primary key (email, client)
);

-- Like every table: RLS on, no policies (only the gateway reads them).
alter table zehanx.session_keys enable row level security;
alter table zehanx.session_retired_tokens enable row level security;
alter table zehanx.sign_in_known_clients enable row level security;
