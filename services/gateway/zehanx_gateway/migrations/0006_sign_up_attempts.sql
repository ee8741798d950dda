-- Sign-ups per client address over a sliding window (shared by every replica), to stop accounts being
-- created in bulk from one address. Old rows are deleted as new ones come.
create table zehanx.sign_up_attempts (
    id           bigint generated always as identity primary key,
    client       text not null,
    attempt_time timestamptz not null default now()
);
create index sign_up_attempts_client_idx on zehanx.sign_up_attempts (client, attempt_time);

-- Like every table: RLS on, no policies (only the gateway reads it).
alter table zehanx.sign_up_attempts enable row level security;
