-- What the web dashboard adds to a user's account: uploaded data files, the user's own provider keys
-- (Groq, Firecrawl, E2B; encrypted), and the user's settings. Datasets are not copied anywhere: they are
-- read from the jobs' `dataset_built` events, which the index below finds quickly.

-- Files uploaded as job sources. The bytes live in the gateway's upload folder
-- (<upload dir>/<user id>/<upload id>/<filename>); this row says whose they are.
create table zehanx.uploads (
    id          uuid primary key,
    user_id     uuid not null references zehanx.users (id) on delete cascade,
    filename    text not null check (length(filename) between 1 and 255 and filename !~ '[/\\]'
                                     and filename not in ('.', '..')),
    size_bytes  bigint not null check (size_bytes > 0),
    sha256      text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    create_time timestamptz not null default now()
);
create index uploads_user_idx on zehanx.uploads (user_id, create_time desc, id desc);

-- A user's own keys for the cloud services, one per provider, sealed with AES-256-GCM under the
-- gateway's key-encryption key (ZX_GATEWAY_SECRETS_KEY); the additional data binds each sealed key to its
-- user and provider, so a row copied to another user or provider does not open. `hint` shows a few
-- characters to recognise it; the whole key is never returned.
create table zehanx.provider_keys (
    user_id     uuid not null references zehanx.users (id) on delete cascade,
    provider    text not null check (provider in ('GROQ', 'FIRECRAWL', 'E2B')),
    nonce       bytea not null check (length(nonce) = 12),
    sealed      bytea not null check (length(sealed) > 16),
    hint        text not null check (length(hint) <= 32),
    update_time timestamptz not null default now(),
    primary key (user_id, provider)
);

-- A user's settings (the JSON form of zehanx.gateway.v1.UserSettings, proto field names).
create table zehanx.user_settings (
    user_id     uuid primary key references zehanx.users (id) on delete cascade,
    settings    jsonb not null default '{}'::jsonb,
    update_time timestamptz not null default now()
);

-- ListDatasets: a user's dataset_built events, newest first.
create index job_events_datasets_idx on zehanx.job_events (user_id, event_time desc, job_id desc)
    where kind = 'dataset_built';

alter table zehanx.uploads enable row level security;
alter table zehanx.provider_keys enable row level security;
alter table zehanx.user_settings enable row level security;

do $$
begin
    if to_regprocedure('auth.uid()') is null
       or not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    -- Signed-in users read their own uploads and settings through Supabase; provider keys (sealed or
    -- not) are never exposed to them.
    grant select on zehanx.uploads, zehanx.user_settings to authenticated;
    create policy uploads_select_own on zehanx.uploads
        for select to authenticated using ((select auth.uid()) = user_id);
    create policy user_settings_select_own on zehanx.user_settings
        for select to authenticated using ((select auth.uid()) = user_id);
end
$$;
