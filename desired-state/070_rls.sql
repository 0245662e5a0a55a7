-- Row level security on every table. A row is visible (or writable) if any policy for the command allows it.

-- users: yourself, public profiles, and everyone for admins.
alter table public.users enable row level security;

create policy users_select_self on public.users
    for select using (id = auth.get_user_id());

create policy users_select_public on public.users
    for select using (is_public);

create policy users_admin_all on public.users
    for all using (auth.is_admin()) with check (auth.is_admin());

-- submissions: owners see theirs and may add or edit them while pending; reviewers see and review all;
-- everyone sees public, approved ones.
alter table public.submissions enable row level security;

create policy submissions_select_own on public.submissions
    for select using (user_id = auth.get_user_id());

create policy submissions_insert_own on public.submissions
    for insert with check (user_id = auth.get_user_id() and status = 'pending');

create policy submissions_update_own_pending on public.submissions
    for update using (user_id = auth.get_user_id() and status = 'pending')
    with check (user_id = auth.get_user_id() and status = 'pending');

create policy submissions_select_reviewer on public.submissions
    for select using (auth.is_reviewer());

create policy submissions_update_reviewer on public.submissions
    for update using (auth.is_reviewer()) with check (auth.is_reviewer());

create policy submissions_select_public on public.submissions
    for select using (visibility = 'public' and status = 'approved');

-- points_ledger: your own rows; reviewers see all rows and award points. No UPDATE or DELETE policy.
alter table public.points_ledger enable row level security;

create policy points_ledger_select_own on public.points_ledger
    for select using (user_id = auth.get_user_id());

create policy points_ledger_select_reviewer on public.points_ledger
    for select using (auth.is_reviewer());

create policy points_ledger_insert_reviewer on public.points_ledger
    for insert with check (auth.is_reviewer());

-- audit_log: admins only. No UPDATE or DELETE policy.
alter table public.audit_log enable row level security;

create policy audit_log_select_admin on public.audit_log
    for select using (auth.is_admin());

create policy audit_log_insert_admin on public.audit_log
    for insert with check (auth.is_admin());
