-- Accounts of the gateway's own sign-in (email and password), the embedded default of what Supabase
-- Auth does in the cloud: with Supabase these tables stay empty and Supabase issues the JWTs. Both kinds
-- of session are JWTs with the same claims (sub, aud, role, exp), checked by the same code.

-- One account per user. Only an argon2id hash of the password is stored; emails are kept lower-case.
create table zehanx.accounts (
    user_id       uuid primary key references zehanx.users (id) on delete cascade,
    email         text not null check (email = lower(email) and length(email) between 3 and 320),
    password_hash text not null check (password_hash like '$argon2id$%'),
    create_time   timestamptz not null default now()
);
create unique index accounts_email_idx on zehanx.accounts (email);

-- Sessions: one per sign-in. The access JWT is short-lived and not stored; the refresh token that
-- renews it is stored as its SHA-256 only (256 random bits), rotated on every use, and sign-out
-- revokes the session so it cannot be renewed.
create table zehanx.sessions (
    id             uuid primary key,
    user_id        uuid not null references zehanx.users (id) on delete cascade,
    refresh_sha256 bytea not null unique check (length(refresh_sha256) = 32),
    create_time    timestamptz not null default now(),
    refresh_time   timestamptz not null default now(),
    revoke_time    timestamptz
);
create index sessions_user_idx on zehanx.sessions (user_id);

-- Failed sign-ins, counted per email and per client address over a sliding window (shared by every
-- replica) to rate-limit password guessing. Old rows are deleted as new ones come.
create table zehanx.sign_in_failures (
    id           bigint generated always as identity primary key,
    email        text not null,
    client       text not null default '',
    attempt_time timestamptz not null default now()
);
create index sign_in_failures_email_idx on zehanx.sign_in_failures (email, attempt_time);
create index sign_in_failures_client_idx on zehanx.sign_in_failures (client, attempt_time);

-- Like every table: RLS on, no policies (password hashes and sessions are never exposed to users).
alter table zehanx.accounts enable row level security;
alter table zehanx.sessions enable row level security;
alter table zehanx.sign_in_failures enable row level security;
