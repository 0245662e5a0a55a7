-- Helpers that read the caller's identity from the JWT claims, which the API layer stores in the setting
-- request.jwt.claims (as JSON) for each request. Without claims every helper returns null or false.
-- nullif: a setting that was set and then reset reads as '' rather than null.

-- The caller's role: 'participant', 'reviewer', 'admin' or 'superadmin' (text, as in the token).
create function auth.get_user_role() returns text
language sql stable
as $$
    select nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
$$;

-- The caller's user id (users.id).
create function auth.get_user_id() returns uuid
language sql stable
as $$
    select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
$$;

-- Admins and superadmins.
create function auth.is_admin() returns boolean
language sql stable
as $$
    select coalesce(auth.get_user_role() in ('admin', 'superadmin'), false)
$$;

-- Reviewers, admins and superadmins.
create function auth.is_reviewer() returns boolean
language sql stable
as $$
    select coalesce(auth.get_user_role() in ('reviewer', 'admin', 'superadmin'), false)
$$;
