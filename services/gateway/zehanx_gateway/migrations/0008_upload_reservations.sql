-- Uploads reserve their bytes before the file is written (security review M7): the row is inserted
-- first, `pending_since` set, in the transaction that checks the user's quota and the number of
-- their uploads in progress under a per-user advisory lock; it is marked complete (`pending_since`
-- null) once the file is stored, or deleted when storing fails. So N uploads at once cannot pass the
-- quota together. Pending rows count toward the quota and the in-progress limit; only complete rows
-- can be named as a job's source. A pending row a crashed gateway left behind is deleted by the
-- user's next upload once it is an hour old.
alter table zehanx.uploads add column pending_since timestamptz;
create index uploads_pending_idx on zehanx.uploads (user_id, pending_since) where pending_since is not null;
