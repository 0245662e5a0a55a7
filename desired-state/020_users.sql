-- Users. The id is the "sub" claim of the user's JWT.
create table public.users (
    id uuid primary key default gen_random_uuid(),
    handle text not null unique check (handle ~ '^[a-z0-9_]{3,30}$'),
    email text not null unique,
    display_name text not null,
    role public.user_role not null default 'participant',
    created_at timestamptz not null default now(),
    -- Whether other users may see this profile (and whether it is on the leaderboard).
    is_public boolean not null default false
);
