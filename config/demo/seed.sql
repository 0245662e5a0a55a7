-- Rows for the demo environment at the older revision (config/demo/older-revision.sql).
-- users.legacy_score and legacy_sessions hold data, so dropping them loses it: the reconciler must wait for
-- an operator's approval before it does.

insert into public.users (id, handle, email, display_name, role, legacy_score) values
    ('00000000-0000-4000-8000-000000000001', 'ada', 'ada@example.org', 'Ada', 'superadmin', 120),
    ('00000000-0000-4000-8000-000000000002', 'grace', 'grace@example.org', 'Grace', 'reviewer', 85),
    ('00000000-0000-4000-8000-000000000003', 'linus', 'linus@example.org', 'Linus', 'participant', 40),
    ('00000000-0000-4000-8000-000000000004', 'margaret', 'margaret@example.org', 'Margaret', 'participant', null);

insert into public.submissions (user_id, title, payload, status) values
    ('00000000-0000-4000-8000-000000000003', 'Faster sort', '{"language": "c", "lines": 120}', 'approved'),
    ('00000000-0000-4000-8000-000000000003', 'Kernel patch', '{"language": "c", "lines": 4}', 'pending'),
    ('00000000-0000-4000-8000-000000000004', 'Guidance computer', '{"language": "agc", "lines": 9000}', 'approved'),
    ('00000000-0000-4000-8000-000000000004', 'Draft', '{}', 'rejected');

insert into public.points_ledger (user_id, delta, reason) values
    ('00000000-0000-4000-8000-000000000003', 50, 'submission approved: Faster sort'),
    ('00000000-0000-4000-8000-000000000004', 100, 'submission approved: Guidance computer'),
    ('00000000-0000-4000-8000-000000000004', -10, 'correction: duplicate award'),
    ('00000000-0000-4000-8000-000000000002', 5, 'first review');

insert into public.legacy_sessions (token, user_id, expires_at) values
    ('tok-ada-1', '00000000-0000-4000-8000-000000000001', now() + interval '1 day'),
    ('tok-linus-1', '00000000-0000-4000-8000-000000000003', now() - interval '3 days'),
    ('tok-linus-2', '00000000-0000-4000-8000-000000000003', now() + interval '2 hours');
