-- Enumerated types.

-- What a user may do; admins and superadmins manage everything.
create type public.user_role as enum ('participant', 'reviewer', 'admin', 'superadmin');

-- Where a submission is in its review.
create type public.review_status as enum ('pending', 'approved', 'rejected');

-- Who may see a submission once it is approved.
create type public.submission_visibility as enum ('private', 'public');
