-- The W3C trace context of the CreateJob call that made each job: the worker that runs the job (maybe
-- another gateway, maybe after a restart) continues that trace, so one trace covers the job's every
-- stage and every service it calls. Empty for jobs created before this migration.
alter table zehanx.jobs add column trace_parent text not null default ''
    check (length(trace_parent) <= 128);
