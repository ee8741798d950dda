-- Row-level security, for when these tables are read through Supabase (PostgREST, Realtime, the
-- dashboard) with a user's JWT. The gateway itself connects as the tables' owner, which RLS does not
-- restrict, and scopes every query by user itself.
--
-- RLS is enabled on every table everywhere. The policies use Supabase's auth.uid() and its
-- `authenticated` role, so they are created only where both exist (a Supabase project); elsewhere
-- enabling RLS without policies simply denies every non-owner role.

alter table zehanx.users enable row level security;
alter table zehanx.api_keys enable row level security;
alter table zehanx.jobs enable row level security;
alter table zehanx.job_events enable row level security;
alter table zehanx.models enable row level security;

do $$
begin
    if to_regprocedure('auth.uid()') is null
       or not exists (select 1 from pg_roles where rolname = 'authenticated') then
        raise notice 'zehanx: no auth.uid() / authenticated role here; RLS policies not created';
        return;
    end if;

    -- Signed-in users read their own rows. Writes go through the gateway (idempotency, limits, the
    -- state machine), so no insert/update/delete is granted to them. API key hashes are never exposed.
    grant usage on schema zehanx to authenticated;
    grant select on zehanx.users, zehanx.jobs, zehanx.job_events, zehanx.models to authenticated;

    create policy users_select_own on zehanx.users
        for select to authenticated using ((select auth.uid()) = id);
    create policy jobs_select_own on zehanx.jobs
        for select to authenticated using ((select auth.uid()) = user_id);
    create policy job_events_select_own on zehanx.job_events
        for select to authenticated using ((select auth.uid()) = user_id);
    create policy models_select_own on zehanx.models
        for select to authenticated using ((select auth.uid()) = user_id);
end
$$;
