"""deploy/redis-acl.conf and deploy/postgres-readonly.sql do what they say, against the real servers.

The gateway's users read (and subscribe to) everything the gateway serves and write nothing; the poller's Redis
user runs the real Lua scripts but cannot reach the rest of the server. The Redis users come from the file's own
`user` lines (test passwords substituted) and are deleted afterwards; the PostgreSQL role is dropped afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import psycopg
import psycopg.errors
import pytest
import redis as sync_redis
import redis.exceptions
from psycopg import sql
from psycopg.conninfo import make_conninfo
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from shared import keys
from shared.connections import redis_client
from shared.dev.embedded.redis import find_redis_binary
from shared.dev.embedded.server import EmbeddedServerError
from shared.dev.processes import free_port
from shared.ids import SessionId, TicketId
from shared.lua import Scripts, StateChange
from shared.models import as_text, dumps
from shared.sessions import read_live
from tests.helpers import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ACL_FILE = DEPLOY / "redis-acl.conf"
SQL_FILE = DEPLOY / "postgres-readonly.sql"
GATEWAY, POLLER = "opencode-gateway", "opencode-poller"
PASSWORDS = {GATEWAY: f"gw-{uuid.uuid4().hex}", POLLER: f"po-{uuid.uuid4().hex}"}
SESSION = SessionId("ses_1a2b3c4d5e6fABCDEFGHIJklmn")
ROLE = "opencode_gateway"
ROLE_PASSWORD = f"pg-{uuid.uuid4().hex}"


# --- Redis -------------------------------------------------------------------------------------------------------


def acl_users() -> dict[str, list[str]]:
    """The file's `user NAME RULES…` lines, as `ACL SETUSER NAME RULES…` would take them."""
    users: dict[str, list[str]] = {}
    for line in ACL_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("user "):
            name, *rules = line.split()[1:]
            users[name] = rules
    return users


def with_test_password(name: str, rules: list[str]) -> list[str]:
    return [f">{PASSWORDS[name]}" if rule.startswith(">CHANGE-ME") else rule for rule in rules]


def user_url(redis_url: str, name: str) -> str:
    parts = urlsplit(redis_url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{quote(name, safe='')}:{quote(PASSWORDS[name], safe='')}@{host}").geturl()


async def run_command(client: Redis, *args: str) -> Any:
    """execute_command, typed: redis-py leaves it unannotated."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


async def close(pubsub: PubSub) -> None:
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def acl_denials(admin: Redis) -> list[dict[Any, Any]]:
    return [
        entry
        for entry in await run_command(admin, "ACL", "LOG")
        if entry[b"username"] in (b"opencode-gateway", b"opencode-poller")
    ]


@pytest.fixture
async def acl(redis: Redis) -> AsyncIterator[Redis]:
    """The file's users applied to the (emptied) test Redis; yields the admin client. ACL DELUSER afterwards."""
    users = acl_users()
    try:
        for name, rules in users.items():
            await run_command(redis, "ACL", "SETUSER", name, *with_test_password(name, rules))
        await run_command(redis, "ACL", "LOG", "RESET")
        await redis.set("opencode:x", "original")
        await redis.set("other:secret", "not yours")
        yield redis
    finally:
        await run_command(redis, "ACL", "DELUSER", *users)


@pytest.fixture
async def gateway(acl: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """Configured exactly like the processes' clients (shared.connections), so their handshake is what runs."""
    client = redis_client(user_url(redis_url, GATEWAY))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def poller(acl: Redis, redis_url: str) -> AsyncIterator[Redis]:
    client = redis_client(user_url(redis_url, POLLER))
    try:
        yield client
    finally:
        await client.aclose()


def test_acl_file_defines_both_users_with_placeholder_passwords() -> None:
    users = acl_users()
    assert set(users) == {GATEWAY, POLLER}
    for name, rules in users.items():
        assert rules[0] == "reset", f"{name}: re-applying must converge, so the rules start with reset"
        assert "on" in rules
        assert "nopass" not in rules
        passwords = [rule for rule in rules if rule.startswith((">", "#"))]
        assert passwords and all(rule.startswith(">CHANGE-ME-") for rule in passwords), passwords
        assert "+@all" not in rules and "allkeys" not in rules and "~*" not in rules and "&*" not in rules


@pytest.mark.anyio
async def test_gateway_reads_everything_it_serves(acl: Redis, gateway: Redis) -> None:
    await acl.hset(keys.session(SESSION), mapping={"sessionId": SESSION, "status": "running", "seq": "3"})
    await acl.hset(keys.session_messages(SESSION), "msg_1", dumps({"id": "msg_1", "role": "user"}))
    await acl.hset(keys.session_parts(SESSION), "msg_1/prt_1", dumps({"id": "prt_1", "messageID": "msg_1"}))
    await acl.zadd(keys.LIVE_INDEX, {SESSION: 1})
    await acl.rpush(keys.prompts(SESSION), "p1")

    assert await gateway.ping()
    seconds, _ = await gateway.time()  # the clock queue scores are compared with (`opencode-sessions status`)
    assert abs(seconds - time.time()) < 60
    assert await gateway.get("opencode:x") == b"original"
    assert (await gateway.hgetall(keys.session(SESSION)))[b"status"] == b"running"
    assert await gateway.hmget(keys.session(SESSION), ["seq"]) == [b"3"]
    assert await gateway.zrange(keys.LIVE_INDEX, 0, -1) == [SESSION.encode()]
    assert await gateway.lrange(keys.prompts(SESSION), 0, -1) == [b"p1"]
    assert await gateway.exists(keys.session(SESSION)) == 1
    async with gateway.pipeline(transaction=True) as pipe:  # MULTI … EXEC of reads
        pipe.hgetall(keys.session(SESSION))
        pipe.zscore(keys.LIVE_INDEX, SESSION)
        fields, score = await pipe.execute()
    assert fields[b"seq"] == b"3" and score == 1
    state = await read_live(gateway, SESSION)  # the gateway's own read path
    assert state is not None and state["status"] == "running" and len(state["messages"]) == 1
    # Nothing was refused along the way, not even what redis-py sends on connect and then ignores (CLIENT SETINFO).
    assert await acl_denials(acl) == []


@pytest.mark.anyio
async def test_gateway_subscribes_to_our_channels(acl: Redis, gateway: Redis) -> None:
    pubsub = gateway.pubsub()
    try:
        await pubsub.subscribe(keys.updates(SESSION), keys.LIVE_UPDATES)
        await pubsub.psubscribe("opencode:updates:*", "opencode:*")
        got: list[tuple[str, bytes]] = []

        async def collect(count: int) -> bool:
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                got.append((message["type"], message["channel"]))
            return len(got) >= count

        await wait_for(lambda: collect(4), timeout=10, what="the four subscriptions confirmed")
        assert sorted(kind for kind, _ in got) == ["psubscribe", "psubscribe", "subscribe", "subscribe"]
        got.clear()
        assert await acl.publish(keys.updates(SESSION), "one") == 3  # the channel and both patterns
        assert await acl.publish(keys.LIVE_UPDATES, "two") == 2  # the channel and `opencode:*`
        await wait_for(lambda: collect(5), timeout=10, what="both messages on every subscription")
        updates, live = keys.updates(SESSION).encode(), keys.LIVE_UPDATES.encode()
        expected = [("message", updates), ("pmessage", updates), ("pmessage", updates)]
        expected += [("message", live), ("pmessage", live)]
        assert sorted(got) == sorted(expected)
        assert await acl_denials(acl) == []
    finally:
        await close(pubsub)


GATEWAY_REFUSED: list[tuple[str, ...]] = [
    ("SET", "opencode:x", "1"),
    ("HSET", "opencode:session:ses_1a2b3c4d5e6fABCDEFGHIJklmn", "status", "error"),
    ("DEL", "opencode:x"),
    ("UNLINK", "opencode:x"),
    ("EXPIRE", "opencode:x", "1"),
    ("GETDEL", "opencode:x"),
    ("COPY", "opencode:x", "opencode:y"),
    ("RENAME", "opencode:x", "opencode:y"),
    ("ZADD", "opencode:queue", "0", "ses_1a2b3c4d5e6fABCDEFGHIJklmn"),
    ("RPUSH", "opencode:queue:prompts:x", "p"),
    ("PUBLISH", "opencode:sessions:updates", "forged"),
    ("EVAL", "return 1", "0"),
    ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "opencode:x"),
    ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("RANDOMKEY",),
    ("SORT_RO", "opencode:queue", "BY", "nosort", "GET", "other:*"),
    ("GET", "other:secret"),
    ("SWAPDB", "0", "1"),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "999999"),
    ("FUNCTION", "FLUSH"),
    ("ACL", "LIST"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("command", GATEWAY_REFUSED, ids=lambda c: " ".join(c[:2]))
async def test_gateway_writes_nothing(acl: Redis, gateway: Redis, command: tuple[str, ...]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        await run_command(gateway, *command)
    assert await acl.get("opencode:x") == b"original"
    assert await acl.get("other:secret") == b"not yours"
    assert await acl.exists("opencode:y") == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "channel"),
    [("subscribe", "other:channel"), ("psubscribe", "opencode:session:*"), ("psubscribe", "*")],
)
async def test_gateway_subscribes_to_nothing_else(gateway: Redis, kind: str, channel: str) -> None:
    """PSUBSCRIBE patterns must appear literally in the user's channel list, so only the listed ones work."""
    pubsub = gateway.pubsub()
    try:
        await getattr(pubsub, kind)(channel)
        with pytest.raises(redis.exceptions.NoPermissionError):
            with anyio.fail_after(10):
                while True:
                    await pubsub.get_message(timeout=0.1)
    finally:
        await close(pubsub)


@pytest.mark.anyio
async def test_poller_runs_the_real_scripts(acl: Redis, poller: Redis, gateway: Redis) -> None:
    """Every command the Lua scripts call (TIME, HSET, ZADD, PUBLISH, PEXPIRE…) is within the poller's rules."""
    await acl.script_flush()  # redis-py must go through NOSCRIPT -> SCRIPT LOAD -> EVALSHA, as after a restart
    scripts = Scripts(poller)
    pubsub = gateway.pubsub()
    try:
        await pubsub.subscribe(keys.updates(SESSION))
        await wait_for(lambda: acl.pubsub_numsub(keys.updates(SESSION)), timeout=10)
        state = {"sessionId": SESSION, "status": "pending", "sessionType": "ask", "ticketId": "T-1", "startedAt": "1"}
        created = await scripts.enqueue(
            SESSION,
            TicketId("T-1"),
            job={"sessionType": "ask", "epoch": "0"},
            state=state,
            prompts=[dumps({"messageID": "msg_1", "text": "hi"})],
            index_event=dumps({"type": "appeared", "sessionId": SESSION}),
        )
        assert created == 1
        claimed = await scripts.claim("replica-1", 5000, 10)
        assert [c.session_id for c in claimed] == [SESSION]
        assert await scripts.renew(5000, claimed) == [True]
        change = StateChange(
            fields={"status": "running"},
            messages={"msg_1": dumps({"id": "msg_1", "role": "user"})},
            parts={},
            removed_messages=[],
            removed_parts=[],
            event_state=dumps({"status": "running"}),
            index_event=dumps({"type": "status", "sessionId": SESSION, "status": "running"}),
        )
        assert await scripts.apply(claimed[0], change) == 2
        live = await read_live(gateway, SESSION)
        assert live is not None and live["status"] == "running"
        assert await scripts.pop_prompt(claimed[0], dumps({"messageID": "msg_1", "text": "hi"})) == 1
        rev = as_text((await poller.hget(keys.job(SESSION), "promptsRev")) or b"0")
        final = await scripts.finish(
            claimed[0],
            TicketId("T-1"),
            prompts_rev=rev,
            event=dumps({"type": "complete", "status": "completed"}),
            index_event=dumps({"type": "ended", "sessionId": SESSION}),
        )
        assert final == 3
        assert await read_live(gateway, SESSION) is None
        assert await scripts.release(claimed) == 0

        seqs: list[bytes] = []

        async def all_events() -> bool:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                seqs.append(message["data"])
            return len(seqs) >= 3

        await wait_for(all_events, timeout=10, what="the scripts' events, as the gateway sees them")
        assert [s.split(b",", 1)[0] for s in seqs] == [b'{"seq":1', b'{"seq":2', b'{"seq":3']
        assert await acl_denials(acl) == []
    finally:
        await close(pubsub)


@pytest.mark.anyio
async def test_poller_eval_writes_our_keys(acl: Redis, poller: Redis) -> None:
    assert await poller.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "opencode:x", "new") == b"OK"
    sha = await poller.script_load("return redis.call('HSET', KEYS[1], 'f', ARGV[1])")
    assert await poller.evalsha(sha, 1, "opencode:h", "v") == 1
    assert await poller.eval_ro("return redis.call('GET', KEYS[1])", 1, "opencode:x") == b"new"
    assert await poller.publish(keys.LIVE_UPDATES, "{}") == 0
    async with poller.pipeline(transaction=True) as pipe:
        pipe.set("opencode:y", "1")
        pipe.delete("opencode:y")
        assert await pipe.execute() == [True, 1]
    assert await acl.get("opencode:x") == b"new"
    assert await acl_denials(acl) == []


POLLER_REFUSED: list[tuple[str, ...]] = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("KEYS", "*"),
    ("SORT", "opencode:queue", "BY", "nosort", "GET", "other:*"),
    ("SWAPDB", "0", "1"),
    ("SET", "other:x", "1"),
    ("GET", "other:secret"),
    ("DEL", "other:secret"),
    ("PUBLISH", "other:channel", "x"),
    ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "other:x"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "DELETE", "anything"),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "999999"),
    ("ACL", "SETUSER", "opencode-poller", "+@all"),
    ("MIGRATE", "127.0.0.1", "1", "opencode:x", "0", "10"),
    ("RESTORE", "opencode:z", "0", "x"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("command", POLLER_REFUSED, ids=lambda c: " ".join(c[:2]))
async def test_poller_cannot_touch_the_rest(acl: Redis, poller: Redis, command: tuple[str, ...]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        await run_command(poller, *command)
    assert await acl.get("opencode:x") == b"original"
    assert await acl.get("other:secret") == b"not yours"
    assert await acl.exists("other:x") == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "script",
    [
        "return redis.call('SET', 'other:x', '1')",
        "return redis.call('FLUSHALL')",
        "return redis.call('DEL', 'other:secret')",
        "return redis.call('PUBLISH', 'other:channel', 'x')",
    ],
)
async def test_poller_scripts_are_held_to_the_same_rules(acl: Redis, poller: Redis, script: str) -> None:
    """A script runs with its caller's rights: EVAL is no way around the ACL."""
    with pytest.raises(redis.exceptions.ResponseError, match="ACL failure in script"):
        await poller.eval(script, 0)
    assert await acl.get("opencode:x") == b"original"
    assert await acl.get("other:secret") == b"not yours"
    assert await acl.exists("other:x") == 0


@pytest.fixture
def redis_binary() -> Path:
    try:
        return find_redis_binary()
    except EmbeddedServerError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("mode", ["include", "aclfile"])
def test_file_loads_as_documented(redis_binary: Path, tmp_path: Path, mode: str) -> None:
    """Both ways the header describes: the file itself (comments and all) as config, or its `user` lines as aclfile."""
    port = free_port()
    argv = [str(redis_binary)]
    if mode == "include":
        config = tmp_path / "redis.conf"
        config.write_text(f"include {ACL_FILE}\n", encoding="utf-8")
        argv.append(str(config))
    else:
        users = tmp_path / "users.acl"
        lines = [line for line in ACL_FILE.read_text(encoding="utf-8").splitlines() if line.startswith("user ")]
        users.write_text("\n".join(lines) + "\n", encoding="utf-8")
        argv += ["--aclfile", str(users)]
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", "--appendonly", "no"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    client = sync_redis.Redis(port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"the server refused the file:\n{log.read_text(errors='replace')}"
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.05)

        def dry_run(user: str, *command: str) -> bytes:
            return bytes(client.execute_command("ACL", "DRYRUN", user, *command))  # type: ignore[no-untyped-call]

        users = client.execute_command("ACL", "USERS")  # type: ignore[no-untyped-call]
        assert {u.decode() for u in users} >= {GATEWAY, POLLER}
        assert dry_run(GATEWAY, "HGETALL", "opencode:session:x") == b"OK"
        assert dry_run(GATEWAY, "SUBSCRIBE", "opencode:updates:x") == b"OK"
        assert dry_run(GATEWAY, "HSET", "opencode:session:x", "a", "b") != b"OK"
        assert dry_run(GATEWAY, "GET", "other:x") != b"OK"
        assert dry_run(POLLER, "EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "opencode:x") == b"OK"
        assert dry_run(POLLER, "HSET", "opencode:session:x", "a", "b") == b"OK"
        assert dry_run(POLLER, "FLUSHALL") != b"OK"
        assert dry_run(POLLER, "SET", "other:x", "1") != b"OK"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def drop_role(conn: psycopg.Connection[Any]) -> None:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
        conn.execute(f"DROP OWNED BY {ROLE}")  # its grants, here and on the database
        conn.execute(f"DROP ROLE {ROLE}")


def apply_sql(conn: psycopg.Connection[Any], password: str | None = None) -> None:
    if password is not None:
        conn.execute(sql.SQL("SET opencode.gateway_password = {}").format(sql.Literal(password)))
    conn.execute(SQL_FILE.read_text(encoding="utf-8").encode())


@pytest.fixture
def pg_admin(schema: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection with no opencode_gateway role around, before or after; one archived row to read."""
    with psycopg.connect(schema, autocommit=True) as conn:
        drop_role(conn)
        row_id = f"ses_{uuid.uuid4().hex[:26]}"
        conn.execute(
            "INSERT INTO opencode_sessions (id, ticket_id, session_type, status)"
            " VALUES (%s, 'T-1', 'ask', 'completed')",
            (row_id,),
        )
        try:
            yield conn
        finally:
            conn.execute("DELETE FROM opencode_sessions WHERE id = %s", (row_id,))
            drop_role(conn)


@pytest.fixture
def gateway_db(pg_admin: psycopg.Connection[Any], schema: str) -> Iterator[psycopg.Connection[Any]]:
    apply_sql(pg_admin)
    apply_sql(pg_admin, ROLE_PASSWORD)  # twice: idempotent, and the second run sets the password
    with psycopg.connect(make_conninfo(schema, user=ROLE, password=ROLE_PASSWORD), autocommit=True) as conn:
        yield conn


def public_may_create_in_public(conn: psycopg.Connection[Any]) -> bool:
    """True on PostgreSQL 14 and older (unless fixed): then anyone, the gateway included, may CREATE there."""
    row = conn.execute("SELECT has_schema_privilege('public', 'public', 'CREATE')").fetchone()
    return bool(row and row[0])


def test_gateway_role_reads_the_archive(gateway_db: psycopg.Connection[Any]) -> None:
    assert gateway_db.execute("SELECT current_user").fetchone() == (ROLE,)
    rows = gateway_db.execute("SELECT id, status FROM opencode_sessions WHERE ticket_id = 'T-1'").fetchall()
    assert rows and all(status == "completed" for _, status in rows)
    assert gateway_db.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


def test_privileges_are_exactly_select(pg_admin: psycopg.Connection[Any], gateway_db: psycopg.Connection[Any]) -> None:
    def has(check: str, *args: str) -> bool:
        row = pg_admin.execute(f"SELECT {check}(%s, {', '.join(['%s'] * len(args))})", (ROLE, *args)).fetchone()
        return bool(row and row[0])

    assert has("has_table_privilege", "opencode_sessions", "SELECT")
    for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
        assert not has("has_table_privilege", "opencode_sessions", privilege), privilege
    assert not has("has_table_privilege", "opencode_schema_migrations", "SELECT")
    assert has("has_schema_privilege", "public", "USAGE")
    dbname = pg_admin.info.dbname
    assert has("has_database_privilege", dbname, "CONNECT")
    assert not has("has_database_privilege", dbname, "CREATE")
    attrs = pg_admin.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = %s",
        (ROLE,),
    ).fetchone()
    assert attrs == (True, False, False, False, False, False)


WRITES = [
    "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('ses_x', 'ask', 'pending')",
    "UPDATE opencode_sessions SET status = 'error'",
    "DELETE FROM opencode_sessions",
    "TRUNCATE opencode_sessions",
    "ALTER TABLE opencode_sessions ADD COLUMN x int",
    "DROP TABLE opencode_sessions",
    "CREATE INDEX gateway_idx ON opencode_sessions (status)",
    "CREATE TABLE gateway_table (x int)",
    "CREATE TABLE public.gateway_table (x int)",
    "CREATE SCHEMA gateway_schema",
    "CREATE ROLE gateway_friend",
    "SELECT * FROM opencode_schema_migrations",
    "COPY opencode_sessions (id, session_type, status) FROM STDIN",
]


@pytest.mark.parametrize("statement", WRITES, ids=lambda s: " ".join(s.split()[:3]))
def test_gateway_role_cannot_write(
    pg_admin: psycopg.Connection[Any], gateway_db: psycopg.Connection[Any], statement: str
) -> None:
    """Privileges alone refuse it: the read-only default is turned off first, as a careless client could."""
    if "CREATE TABLE" in statement and public_may_create_in_public(pg_admin):
        pytest.skip("PUBLIC may create in schema public on this server (PostgreSQL 14 or older); the SQL warns")
    gateway_db.execute("SET default_transaction_read_only = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        gateway_db.execute(statement)
    assert pg_admin.execute("SELECT count(*) FROM opencode_sessions WHERE status = 'error'").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('ses_x', 'ask', 'p')",
        "CREATE TEMP TABLE t (x int)",
    ],
)
def test_gateway_sessions_are_read_only_by_default(gateway_db: psycopg.Connection[Any], statement: str) -> None:
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        gateway_db.execute(statement)


def test_rerun_takes_back_what_was_added(pg_admin: psycopg.Connection[Any], schema: str) -> None:
    apply_sql(pg_admin)
    pg_admin.execute(f"GRANT INSERT, DELETE ON opencode_sessions TO {ROLE}")
    pg_admin.execute(f"GRANT UPDATE (status) ON opencode_sessions TO {ROLE}")
    pg_admin.execute(f"GRANT SELECT ON opencode_schema_migrations TO {ROLE}")
    pg_admin.execute(f"GRANT CREATE ON SCHEMA public TO {ROLE}")
    pg_admin.execute(f"GRANT pg_write_all_data TO {ROLE}")
    pg_admin.execute(f"ALTER ROLE {ROLE} CREATEDB NOLOGIN")
    apply_sql(pg_admin)
    with psycopg.connect(make_conninfo(schema, user=ROLE, password=ROLE_PASSWORD), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO opencode_sessions (id, session_type, status) VALUES ('ses_x', 'ask', 'pending')",
            "UPDATE opencode_sessions SET status = 'error'",
            "DELETE FROM opencode_sessions",
            "SELECT * FROM opencode_schema_migrations",
            "CREATE TABLE public.gateway_table (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) >= 1 FROM opencode_sessions").fetchone() == (True,)
    members = pg_admin.execute(
        "SELECT count(*) FROM pg_auth_members WHERE member = (SELECT oid FROM pg_roles WHERE rolname = %s)", (ROLE,)
    ).fetchone()
    assert members == (0,)
    assert pg_admin.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() == (False,)


def test_password_comes_from_the_setting_and_stays(pg_admin: psycopg.Connection[Any]) -> None:
    def password() -> str | None:
        row = pg_admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
        assert row is not None
        return None if row[0] is None else str(row[0])

    apply_sql(pg_admin)
    assert password() is None  # created without one: no password login until someone sets it
    apply_sql(pg_admin, ROLE_PASSWORD)
    first = password()
    assert first is not None and ROLE_PASSWORD not in first  # stored hashed
    assert pg_admin.execute("SELECT current_setting('opencode.gateway_password', true)").fetchone() in (("",), (None,))
    apply_sql(pg_admin)
    assert password() == first  # a re-run without the setting keeps it


def test_psql_variable_route(pg_admin: psycopg.Connection[Any], schema: str) -> None:
    """The header's one-liner: the password from a psql variable, the file unchanged, psql's ON_ERROR_STOP on."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("no psql on PATH")
    script = "SET opencode.gateway_password = :'gateway_password';\n" + SQL_FILE.read_text(encoding="utf-8")
    for _ in range(2):
        result = subprocess.run(
            [psql, schema, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"gateway_password={ROLE_PASSWORD}"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "ERROR" not in result.stderr, result.stderr
    row = pg_admin.execute("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
    assert row == (True,)
