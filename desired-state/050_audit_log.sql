-- The audit log: append-only, readable and writable by admins only (see 070_rls.sql).
-- actor_id is deliberately not a foreign key: entries outlive the users who made them.
create table public.audit_log (
    id bigint generated always as identity primary key,
    actor_id uuid,
    action text not null,
    target text,
    detail jsonb not null default '{}',
    created_at timestamptz not null default now()
);

create index audit_log_created_at_idx on public.audit_log (created_at);

create trigger audit_log_append_only
    before update or delete on public.audit_log
    for each row execute function public.reject_append_only_change();

create trigger audit_log_no_truncate
    before truncate on public.audit_log
    for each statement execute function public.reject_append_only_change();
