-- Zehanx gateway registry: users, API keys, jobs, job events, models.
--
-- Everything lives in its own schema so that it can share a database (a Supabase project's included)
-- with other tables without clashing. The job state machine, the first event of a job, the event row of
-- every transition, the per-job sequence numbers and the change notifications are enforced here, in the
-- database, so that every writer (any gateway replica, any worker, a person with psql) obeys them.

create schema if not exists zehanx;

-- A user owns jobs, models and API keys. Supabase users keep their auth.users id (the JWT `sub`).
create table zehanx.users (
    id          uuid primary key,
    name        text unique check (name is null or length(name) between 1 and 200),
    create_time timestamptz not null default now()
);

-- API keys: the secret is never stored, only its SHA-256 (the secret is 256 random bits, so a fast hash
-- is enough). `id` is the public part of the key and is what `zx keys list|revoke` show.
create table zehanx.api_keys (
    id            text primary key check (id ~ '^[a-z0-9]{16}$'),
    user_id       uuid not null references zehanx.users (id) on delete cascade,
    secret_sha256 bytea not null check (length(secret_sha256) = 32),
    label         text not null default '' check (length(label) <= 200),
    create_time   timestamptz not null default now(),
    revoke_time   timestamptz
);
create index api_keys_user_idx on zehanx.api_keys (user_id);

-- Jobs. States and their transitions (zehanx.gateway.v1.JobState draws the same graph):
--
--   QUEUED     -> RUNNING | CANCELLED | FAILED
--   RUNNING    -> QUEUED (lease expired; another worker resumes) | SUCCEEDED | FAILED | CANCELLING
--   CANCELLING -> CANCELLED | SUCCEEDED (the model was already published)
--
-- SUCCEEDED, FAILED and CANCELLED are terminal. FAILED and CANCELLED carry a reason.
create table zehanx.jobs (
    id                uuid primary key default gen_random_uuid(),
    user_id           uuid not null references zehanx.users (id) on delete cascade,
    request_id        uuid,
    request_sha256    bytea not null,
    prompt            text not null check (length(prompt) between 1 and 100000),
    spec              jsonb not null default '{}'::jsonb,
    state             text not null default 'QUEUED'
                      check (state in ('QUEUED', 'RUNNING', 'CANCELLING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    stage             text
                      check (stage in ('CRAWLING', 'GENERATING', 'TRAINING', 'EVALUATING', 'PUBLISHING')),
    error_code        text,
    error_message     text,
    error_reason      text,
    model_id          uuid,
    dataset_id        text check (dataset_id is null or length(dataset_id) <= 200),
    repair_count      integer not null default 0 check (repair_count >= 0),
    last_sequence     bigint not null default 0,
    version           bigint not null default 0,
    attempt           integer not null default 0,
    lease_owner       text,
    lease_expire_time timestamptz,
    create_time       timestamptz not null default now(),
    update_time       timestamptz not null default now(),
    start_time        timestamptz,
    end_time          timestamptz,
    unique (user_id, request_id),
    check (state not in ('FAILED', 'CANCELLED') or (error_message is not null and error_message <> ''))
);
create index jobs_user_list_idx on zehanx.jobs (user_id, create_time desc, id desc);
create index jobs_queued_idx on zehanx.jobs (create_time) where state = 'QUEUED';
create index jobs_leased_idx on zehanx.jobs (lease_expire_time) where state in ('RUNNING', 'CANCELLING');

-- Every event of a job, numbered 1, 2, 3 ... without gaps. `user_id` is copied from the job so that
-- row-level security can filter events without a join.
create table zehanx.job_events (
    job_id     uuid not null references zehanx.jobs (id) on delete cascade,
    sequence   bigint not null check (sequence >= 1),
    user_id    uuid not null,
    event_time timestamptz not null default now(),
    stage      text,
    kind       text not null check (length(kind) between 1 and 64),
    payload    jsonb not null default '{}'::jsonb,
    primary key (job_id, sequence)
);

-- Published models. The archive (weights, program, model card) is content-addressed by its SHA-256.
-- `details` holds the rest of the record (plan, class labels, metrics, baseline, provenance, ...)
-- as the JSON form of zehanx.gateway.v1.Model.
create table zehanx.models (
    id             uuid primary key default gen_random_uuid(),
    user_id        uuid not null references zehanx.users (id) on delete cascade,
    job_id         uuid references zehanx.jobs (id) on delete set null,
    title          text not null default '' check (length(title) <= 500),
    prompt         text not null default '',
    task_family    text not null default '',
    metric_name    text not null default '',
    details        jsonb not null default '{}'::jsonb,
    model_card     text not null default '',
    archive_sha256 text not null check (archive_sha256 ~ '^[0-9a-f]{64}$'),
    archive_size   bigint not null check (archive_size >= 0),
    media_type     text not null default 'application/zip',
    create_time    timestamptz not null default now()
);
create index models_user_list_idx on zehanx.models (user_id, create_time desc, id desc);
create index models_archive_idx on zehanx.models (archive_sha256);

-- The state machine. Illegal transitions raise SQLSTATE ZX001 (the gateway maps it to
-- FAILED_PRECONDITION); a job is always created QUEUED with its first event.
create function zehanx.legal_transition(from_state text, to_state text) returns boolean
language sql immutable as $$
    select case from_state
        when 'QUEUED'     then to_state in ('RUNNING', 'CANCELLED', 'FAILED')
        when 'RUNNING'    then to_state in ('QUEUED', 'SUCCEEDED', 'FAILED', 'CANCELLING')
        when 'CANCELLING' then to_state in ('CANCELLED', 'SUCCEEDED')
        else false
    end
$$;

create function zehanx.jobs_before_insert() returns trigger
language plpgsql as $$
begin
    if new.state <> 'QUEUED' or new.stage is not null then
        raise exception 'a job is created QUEUED, not %', new.state using errcode = 'ZX001';
    end if;
    new.last_sequence := 1;
    new.version := 0;
    new.create_time := now();
    new.update_time := new.create_time;
    return new;
end
$$;

create function zehanx.jobs_before_update() returns trigger
language plpgsql as $$
begin
    if new.id <> old.id or new.user_id <> old.user_id or new.create_time <> old.create_time then
        raise exception 'a job''s id, owner and create time never change' using errcode = 'ZX001';
    end if;
    if new.state is distinct from old.state then
        if not zehanx.legal_transition(old.state, new.state) then
            raise exception 'illegal transition % -> % for job %', old.state, new.state, old.id
                using errcode = 'ZX001';
        end if;
    elsif new.stage is distinct from old.stage then
        if old.state in ('SUCCEEDED', 'FAILED', 'CANCELLED') then
            raise exception 'job % is % and has no stage', old.id, old.state using errcode = 'ZX001';
        end if;
    end if;
    if new.state is distinct from old.state or new.stage is distinct from old.stage then
        -- This change becomes the next event (written by jobs_after_update in this transaction).
        new.last_sequence := old.last_sequence + 1;
        new.version := old.version + 1;
        -- A CANCELLING job keeps the cancellation's reason for the CANCELLED that follows.
        if new.state not in ('FAILED', 'CANCELLED', 'CANCELLING') then
            new.error_code := null;
            new.error_message := null;
            new.error_reason := null;
        end if;
        if new.state in ('SUCCEEDED', 'FAILED', 'CANCELLED') then
            new.end_time := now();
            new.lease_owner := null;
            new.lease_expire_time := null;
        elsif new.state = 'QUEUED' then
            new.stage := null;
            new.lease_owner := null;
            new.lease_expire_time := null;
        end if;
        if new.state = 'RUNNING' and new.start_time is null then
            new.start_time := now();
        end if;
    elsif new.last_sequence < old.last_sequence then
        raise exception 'sequence numbers only grow' using errcode = 'ZX001';
    end if;
    new.update_time := now();
    return new;
end
$$;

create function zehanx.jobs_after_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into zehanx.job_events (job_id, sequence, user_id, event_time, stage, kind, payload)
        values (new.id, new.last_sequence, new.user_id, new.create_time, null, 'state_change',
                jsonb_build_object('to_state', new.state, 'reason', 'created'));
    elsif new.state is distinct from old.state or new.stage is distinct from old.stage then
        -- The reason, for the user, comes from the transaction that made the change
        -- (set_config('zehanx.reason', ..., true)); the error from the row when the job failed.
        insert into zehanx.job_events (job_id, sequence, user_id, event_time, stage, kind, payload)
        values (new.id, new.last_sequence, new.user_id, new.update_time, new.stage, 'state_change',
                jsonb_strip_nulls(jsonb_build_object(
                    'from_state', old.state, 'to_state', new.state,
                    'from_stage', old.stage, 'to_stage', new.stage,
                    'reason', nullif(current_setting('zehanx.reason', true), ''),
                    'error_code', case when new.state in ('FAILED', 'CANCELLED') then new.error_code end,
                    'error_message', case when new.state in ('FAILED', 'CANCELLED') then new.error_message end,
                    'error_reason', case when new.state in ('FAILED', 'CANCELLED') then new.error_reason end,
                    'attempt', new.attempt)));
    end if;
    return null;
end
$$;

create trigger jobs_before_insert before insert on zehanx.jobs
    for each row execute function zehanx.jobs_before_insert();
create trigger jobs_before_update before update on zehanx.jobs
    for each row execute function zehanx.jobs_before_update();
create trigger jobs_after_change after insert or update on zehanx.jobs
    for each row execute function zehanx.jobs_after_change();

-- One notification per job and statement, delivered at commit to every replica that LISTENs:
-- payload "<job id>:<highest sequence written>".
create function zehanx.notify_job_events() returns trigger
language plpgsql as $$
declare
    r record;
begin
    for r in select job_id, max(sequence) as top from inserted group by job_id loop
        perform pg_notify('zehanx_job_events', r.job_id::text || ':' || r.top::text);
    end loop;
    return null;
end
$$;

create trigger job_events_notify after insert on zehanx.job_events
    referencing new table as inserted
    for each statement execute function zehanx.notify_job_events();
