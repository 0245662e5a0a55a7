-- The leaderboard: total points of every public profile, refreshed with
-- "refresh materialized view concurrently public.leaderboard" (which needs the unique index below).
--
-- The query lives in a function rather than in the view itself, so that the view depends on the function
-- only and not on the tables: migra drops and recreates every view that depends on a table it changes
-- incompatibly (a dropped column, say), and dropping a materialized view needs an operator's approval.
create function public.leaderboard_rows()
returns table (user_id uuid, handle text, total_points bigint)
language sql stable
as $$
    select u.id, u.handle, coalesce(sum(p.delta), 0)::bigint
    from public.users u
    left join public.points_ledger p on p.user_id = u.id
    where u.is_public
    group by u.id, u.handle
$$;

create materialized view public.leaderboard as
    select user_id, handle, total_points from public.leaderboard_rows();

create unique index leaderboard_user_id_idx on public.leaderboard (user_id);
