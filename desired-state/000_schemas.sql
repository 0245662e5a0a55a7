-- Schemas. Everything the app owns lives in "public"; the JWT helper functions live in "auth".
-- No extensions: gen_random_uuid() is built into PostgreSQL since version 13.
create schema auth;
