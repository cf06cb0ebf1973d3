-- A read-only PostgreSQL role for the gateway: it may connect and SELECT opencode_sessions, nothing else.
-- The gateway only ever reads the archive; the pollers (and `opencode-sessions migrate`) keep the owner's role.
--
-- Run it as a superuser (or a CREATEROLE role owning the table) after `opencode-sessions migrate`. It is idempotent:
-- re-run it whenever you want the role's privileges put back to exactly these.
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/postgres-readonly.sql
-- Plain SQL, no psql meta-commands: any client can run it.
--
-- Password (CHANGE-ME): the role is created WITHOUT one, so it cannot log in with password authentication until
-- you give it one. Either afterwards, in psql (it hashes client-side: only the hash reaches the server and its logs):
--     \password opencode_gateway
-- or ALTER ROLE opencode_gateway PASSWORD 'CHANGE-ME-gateway-db-password';
-- or in the same run, from a psql variable (set in the session first; this file reads and then clears it):
--     { echo "SET opencode.gateway_password = :'gateway_password';"; cat deploy/postgres-readonly.sql; } |
--         psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -v gateway_password="$GATEWAY_DB_PASSWORD"
-- Re-running without the setting keeps the current password.
-- Then: DATABASE_URL=postgresql://opencode_gateway:<password>@host:5432/<database> for the gateway.
--
-- The table is assumed in schema `public` (where migrate creates it with the default search_path).
-- PostgreSQL 14 and older let PUBLIC create objects in schema `public`: this file warns about it but does not
-- change it (other roles may rely on it). Fix it with REVOKE CREATE ON SCHEMA public FROM PUBLIC when they don't.

-- A placeholder password (the Kubernetes Secret's CHANGE-ME-gateway-db-password, as shipped) would be one everybody
-- knows: it is refused before anything changes. The pattern is shared/config.py's PLACEHOLDER_PATTERN, which
-- every process applies to its own credentials.
DO $$
BEGIN
    IF lower(coalesce(current_setting('opencode.gateway_password', true), ''))
           ~ '(^|[^a-z0-9])change-?me([^a-z0-9]|$)' THEN
        RAISE EXCEPTION 'GATEWAY_DB_PASSWORD (opencode.gateway_password) holds a placeholder of the deployment files '
            '(CHANGE-ME): set the gateway role''s real password';
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'opencode_gateway') THEN
        CREATE ROLE opencode_gateway LOGIN;
        IF coalesce(current_setting('opencode.gateway_password', true), '') = '' THEN
            RAISE NOTICE 'created role opencode_gateway without a password (CHANGE-ME): \password opencode_gateway';
        END IF;
    END IF;
    -- An existing role is brought back to a plain login (only a superuser can change these, so only when needed).
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'opencode_gateway'
               AND (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls)) THEN
        ALTER ROLE opencode_gateway NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
END
$$;
ALTER ROLE opencode_gateway LOGIN;
-- A second guard: sessions are read-only by default, so a stray write fails even if a GRANT is added by mistake.
ALTER ROLE opencode_gateway SET default_transaction_read_only = on;

DO $$
DECLARE
    new_password text := current_setting('opencode.gateway_password', true);
BEGIN
    IF coalesce(new_password, '') <> '' THEN
        EXECUTE format('ALTER ROLE opencode_gateway PASSWORD %L', new_password);
    END IF;
END
$$;
RESET opencode.gateway_password;

-- Start from nothing: no membership in other roles (pg_read_all_data, pg_write_all_data, an app role…), no
-- privilege held directly in this database or schema.
DO $$
DECLARE
    membership record;
BEGIN
    FOR membership IN
        SELECT m.roleid::regrole AS granted, m.grantor::regrole AS grantor
        FROM pg_auth_members m WHERE m.member = 'opencode_gateway'::regrole
    LOOP
        EXECUTE format('REVOKE %s FROM opencode_gateway GRANTED BY %s', membership.granted, membership.grantor);
    END LOOP;
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM opencode_gateway', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO opencode_gateway', current_database());
    IF EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
               WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE') THEN
        RAISE WARNING 'PUBLIC may create objects in schema public, so opencode_gateway can too: '
                      'REVOKE CREATE ON SCHEMA public FROM PUBLIC if no other role relies on it';
    END IF;
END
$$;
REVOKE ALL ON SCHEMA public FROM opencode_gateway;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM opencode_gateway;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM opencode_gateway;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM opencode_gateway;

-- Then grant the one thing it needs.
GRANT USAGE ON SCHEMA public TO opencode_gateway;
GRANT SELECT ON TABLE public.opencode_sessions TO opencode_gateway;
