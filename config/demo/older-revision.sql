-- An older revision of the example schema in desired-state/: the demo environment starts here.
--
-- Compared with desired-state/, this revision
--   * lacks users.is_public, submissions.visibility (and its enum type), the review-queue index, the audit log,
--     auth.is_reviewer(), the leaderboard and the "public" policies: the desired state adds them (safe);
--   * inlines the reviewer check in its policies: the desired state replaces them with auth.is_reviewer() (safe);
--   * has users.legacy_score and the legacy_sessions table, which the desired state drops (destructive).

create schema auth;

-- Types
create type public.user_role as enum ('participant', 'reviewer', 'admin', 'superadmin');
create type public.review_status as enum ('pending', 'approved', 'rejected');

-- Users
create table public.users (
    id uuid primary key default gen_random_uuid(),
    handle text not null unique check (handle ~ '^[a-z0-9_]{3,30}$'),
    email text not null unique,
    display_name text not null,
    role public.user_role not null default 'participant',
    created_at timestamptz not null default now(),
    -- Score of the previous points system, superseded by the points ledger.
    legacy_score integer
);

-- Submissions
create table public.submissions (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references public.users (id) on delete cascade,
    title text not null check (length(title) between 1 and 200),
    payload jsonb not null default '{}',
    status public.review_status not null default 'pending',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index submissions_user_id_idx on public.submissions (user_id);

-- Points ledger (append-only)
create table public.points_ledger (
    id bigint generated always as identity primary key,
    user_id uuid not null references public.users (id),
    delta integer not null check (delta <> 0),
    reason text not null,
    created_at timestamptz not null default now()
);

create index points_ledger_user_id_idx on public.points_ledger (user_id);

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

-- Sessions of the previous login system; no longer used.
-- No keys on purpose: migra would drop them in separate statements that count as safe, so the keys would
-- go before an operator approves dropping the table.
create table public.legacy_sessions (
    token text not null,
    user_id uuid not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);

-- JWT helpers
create function auth.get_user_role() returns text
language sql stable
as $$
    select nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
$$;

create function auth.get_user_id() returns uuid
language sql stable
as $$
    select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
$$;

create function auth.is_admin() returns boolean
language sql stable
as $$
    select coalesce(auth.get_user_role() in ('admin', 'superadmin'), false)
$$;

-- Row level security
alter table public.users enable row level security;

create policy users_select_self on public.users
    for select using (id = auth.get_user_id());

create policy users_admin_all on public.users
    for all using (auth.is_admin()) with check (auth.is_admin());

alter table public.submissions enable row level security;

create policy submissions_select_own on public.submissions
    for select using (user_id = auth.get_user_id());

create policy submissions_insert_own on public.submissions
    for insert with check (user_id = auth.get_user_id() and status = 'pending');

create policy submissions_update_own_pending on public.submissions
    for update using (user_id = auth.get_user_id() and status = 'pending')
    with check (user_id = auth.get_user_id() and status = 'pending');

create policy submissions_select_reviewer on public.submissions
    for select using (auth.get_user_role() in ('reviewer', 'admin', 'superadmin'));

create policy submissions_update_reviewer on public.submissions
    for update using (auth.get_user_role() in ('reviewer', 'admin', 'superadmin'))
    with check (auth.get_user_role() in ('reviewer', 'admin', 'superadmin'));

alter table public.points_ledger enable row level security;

create policy points_ledger_select_own on public.points_ledger
    for select using (user_id = auth.get_user_id());

create policy points_ledger_select_reviewer on public.points_ledger
    for select using (auth.get_user_role() in ('reviewer', 'admin', 'superadmin'));

create policy points_ledger_insert_reviewer on public.points_ledger
    for insert with check (auth.get_user_role() in ('reviewer', 'admin', 'superadmin'));

-- legacy_sessions: RLS on, no policies (nobody but the owner reads it any more).
alter table public.legacy_sessions enable row level security;
