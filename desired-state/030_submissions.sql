-- Submissions: a user's entry, reviewed by a reviewer, optionally shown to everyone once approved.
create table public.submissions (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references public.users (id) on delete cascade,
    title text not null check (length(title) between 1 and 200),
    payload jsonb not null default '{}',
    status public.review_status not null default 'pending',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    visibility public.submission_visibility not null default 'private'
);

-- "My submissions".
create index submissions_user_id_idx on public.submissions (user_id);

-- The review queue: submissions by status, oldest first.
create index submissions_status_created_at_idx on public.submissions (status, created_at);
