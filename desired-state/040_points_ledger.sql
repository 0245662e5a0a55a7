-- The points ledger: append-only. A correction is a new row with a negative delta, never an edit.
create table public.points_ledger (
    id bigint generated always as identity primary key,
    user_id uuid not null references public.users (id),
    delta integer not null check (delta <> 0),
    reason text not null,
    created_at timestamptz not null default now()
);

create index points_ledger_user_id_idx on public.points_ledger (user_id);

-- Append-only tables reject UPDATE, DELETE and TRUNCATE, even from their owner. (Nobody is granted UPDATE or
-- DELETE and the row level security policies allow only SELECT and INSERT; this also stops the owner.)
create function public.reject_append_only_change() returns trigger
language plpgsql
as $$
begin
    raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger points_ledger_append_only
    before update or delete on public.points_ledger
    for each row execute function public.reject_append_only_change();

create trigger points_ledger_no_truncate
    before truncate on public.points_ledger
    for each statement execute function public.reject_append_only_change();
