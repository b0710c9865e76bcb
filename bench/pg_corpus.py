"""A labelled grouping corpus from a real PostgreSQL server, for rules that have never seen it.

LogHub-2k is no longer unseen: the template rules were written against it. This script makes
a second corpus whose truth comes from the software itself. A PostgreSQL 15 server (Debian's
``postgresql-15``) runs a shop-like workload with verbose logging: constraint violations,
syntax errors, missing relations and columns, bad input, permission errors, deadlocks, lock
waits and timeouts, serialization failures, failed logins, dropped connections, terminated
backends, checkpoints, autovacuum, temporary files, connections and disconnections. Its
``jsonlog`` gives each report's message, detail and hint apart; each becomes one line, labelled
by the format string it was printed from. The format strings are the ``msgid`` s of the
server's message catalogs (``/usr/share/locale/*/LC_MESSAGES/postgres-15.mo``, the English
originals the translations key on): a line's label is the catalog format string that matches
it whole and has the most literal text; a message built from several catalog strings, one per
line (autovacuum's report), is labelled by the sequence of them. Lines no catalog string
explains with at least a few literal characters (``%s`` alone) are dropped and counted.
Statements the server echoes (``STATEMENT``, ``CONTEXT``) are the client's SQL, not formats,
and are left out.

Values are drawn the way an application's are: a few tables, users and constraints, one of
them most of the time (Zipf weights), a long tail of typos and scanner user names. The run is
seeded; pids, times and transaction ids differ between runs, the labels and their shapes do
not.

    apt-get install postgresql-15    # the server and its catalogs
    python -m bench.pg_corpus --out bench/data/PostgreSQL_corpus.log_structured.csv

The CSV has LogHub's structured columns (LineId, Level, Content, EventId, EventTemplate), so
``python -m bench.grouping --corpus bench/data`` reads it like a LogHub system. It was kept
out of rule writing: the rules were decided on LogHub-2k, this corpus only measured.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CATALOGS = "/usr/share/locale/*/LC_MESSAGES/postgres-15.mo"
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "PostgreSQL_corpus.log_structured.csv"
MIN_LITERAL = 4  # a format string explains a line only with this much text of its own

# --- the message catalogs -----------------------------------------------------------------


def read_mo(path: Path) -> list[str]:
    """The msgids (and msgid_plurals) of a GNU .mo file."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    _, count, ids_at = struct.unpack(order + "3I", data[4:16])
    out = []
    for i in range(count):
        length, offset = struct.unpack(order + "2I", data[ids_at + 8 * i : ids_at + 8 * i + 8])
        for msgid in data[offset : offset + length].split(b"\0"):
            if msgid:
                out.append(msgid.decode("utf-8", "replace"))
    return out


_CONVERSION = re.compile(r"%(?:(\d+)\$)?[-+ #0']*(\*|\d+)?(?:\.(\*|\d+))?(hh|h|ll|l|z|j|t|L)?([diouxXeEfgGcspm%])")
_VALUE = {
    "d": r"\s*-?\d+", "i": r"\s*-?\d+", "u": r"\s*\d+", "o": r"[0-7]+", "x": r"[0-9a-fA-F]+",
    "X": r"[0-9a-fA-F]+", "c": r".", "p": r"(?:0x)?[0-9a-f]+|\(nil\)", "s": r".*?", "m": r".+?",
}
_FLOAT = r"\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan|Infinity|NaN)"


class Format:
    """One catalog format string: its regex, its template and how much literal text it has."""

    __slots__ = ("msgid", "regex", "texts", "template", "literal", "longest")

    def __init__(self, msgid: str) -> None:
        self.msgid = msgid.rstrip("\n")
        parts, texts, pos = [], [], 0  # texts: the literal text around each conversion
        for m in _CONVERSION.finditer(self.msgid):
            if m.group(5) == "%":
                continue  # a literal percent sign: part of the text
            texts.append(self.msgid[pos : m.start()].replace("%%", "%"))
            kind = m.group(5)
            pos = m.end()
            parts.append("(" + (_FLOAT if kind in "eEfgG" else _VALUE[kind]) + ")")
        texts.append(self.msgid[pos:].replace("%%", "%"))
        self.texts = texts
        self.regex = re.compile("".join(re.escape(t) + p for t, p in zip(texts, parts)) + re.escape(texts[-1]), re.S)
        self.template = self.fill(["<*>"] * len(parts))
        self.literal = sum(len(t.strip()) for t in texts)
        self.longest = max(texts, key=len).strip()

    def fill(self, values: list[str]) -> str:
        """The format with ``values`` in place of its conversions, white space collapsed."""
        out = [t + v for t, v in zip(self.texts, values)] + [self.texts[-1]]
        return " ".join("".join(out).split())


def load_formats(pattern: str = CATALOGS) -> list[Format]:
    import glob

    msgids = set()
    for path in sorted(glob.glob(pattern)):
        msgids.update(read_mo(Path(path)))
    if not msgids:
        raise FileNotFoundError(f"no message catalog matches {pattern} (apt-get install postgresql-15)")
    return [f for f in (Format(m) for m in sorted(msgids)) if f.literal >= MIN_LITERAL]


class Labeller:
    def __init__(self, formats: list[Format]) -> None:
        self.formats = formats
        self._memo: dict[str, Format | None] = {}

    def line(self, text: str) -> tuple[str, str] | None:
        """(format, template) of one line. A ``%s`` whose text is itself a catalog string
        without conversions (``%s at or near "%s"`` where the first is "syntax error") is
        part of the format: the server printed one translated constant into another."""
        if text in self._memo:
            return self._memo[text]
        best, match = None, None
        for f in self.formats:
            if f.longest in text and (best is None or f.literal > best.literal):
                m = f.regex.fullmatch(text)
                if m:
                    best, match = f, m
        found = None
        if best is not None:
            values = [g if g and g in self._constants else "<*>" for g in match.groups()]
            found = ("\x1f".join([best.msgid, *(v for v in values if v != "<*>")]), best.fill(values))
        self._memo[text] = found
        return found

    @property
    def _constants(self) -> set[str]:
        if not hasattr(self, "_constant_set"):
            self._constant_set = {f.msgid for f in self.formats if "%" not in f.msgid and " " in f.msgid}
        return self._constant_set

    def label(self, text: str) -> tuple[str, str] | None:
        """(EventId, EventTemplate) of one message, detail or hint; None if unexplained."""
        found = [self.line(part) for part in text.split("\n") if part.strip()]
        if not found or any(f is None for f in found):
            return None
        key = "\n".join(f[0] for f in found)
        return "P" + hashlib.sha256(key.encode()).hexdigest()[:10], " ".join(f[1] for f in found)


# --- the server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A throw-away PostgreSQL 15 cluster logging as jsonlog, run as the postgres user."""

    def __init__(self, pg_bin: Path, root: Path) -> None:
        self.bin, self.root = pg_bin, root
        self.data, self.sock, self.logs = root / "data", root / "sock", root / "data" / "log"
        self.port = _free_port()
        self._user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.sock.mkdir(parents=True)
        if self._user:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
             "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, **self._user,
        )
        with (self.data / "pg_hba.conf").open("w") as hba:
            hba.write("local all all trust\n"
                      "host analytics app all reject\n"
                      "host all all 127.0.0.1/32 scram-sha-256\n")
        settings = {
            "listen_addresses": "127.0.0.1", "port": self.port, "unix_socket_directories": str(self.sock),
            "logging_collector": "on", "log_destination": "jsonlog", "log_directory": "log",
            "log_error_verbosity": "verbose", "log_connections": "on", "log_disconnections": "on",
            "log_checkpoints": "on", "log_autovacuum_min_duration": "0", "autovacuum_naptime": "2",
            "autovacuum_vacuum_threshold": "20", "autovacuum_analyze_threshold": "20",
            "autovacuum_vacuum_scale_factor": "0.05", "autovacuum_analyze_scale_factor": "0.05",
            "log_lock_waits": "on", "deadlock_timeout": "100ms", "log_temp_files": "0", "work_mem": "64kB",
            "lc_messages": "C", "fsync": "off", "max_connections": "60", "checkpoint_timeout": "30s",
        }
        args = [str(self.bin / "postgres"), "-D", str(self.data)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._user)
        deadline = time.monotonic() + 30
        while not (self.sock / f".s.PGSQL.{self.port}").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def records(self) -> list[dict]:
        out = []
        for path in sorted(self.logs.glob("*.json")):
            for line in path.read_bytes().splitlines():
                if line.strip():
                    out.append(orjson.loads(line))
        return out


# --- the workload ---------------------------------------------------------------------------


def zipf(rng: random.Random, values: list, s: float = 1.3):
    """One of ``values``, the first most often (Zipf weights): an application's distribution."""
    return rng.choices(values, weights=[1 / (i + 1) ** s for i in range(len(values))])[0]


USERS = ["app", "reporting", "etl", "admin_ops", "billing_svc"]
PASSWORD = "correct horse battery"
SCANNED = ["admin", "root", "postgres", "test", "user", "oracle", "guest", "pgadmin", "backup", "sa", "dbuser",
           "support", "ubuntu", "ftp", "demo", "web", "mysql", "jenkins", "deploy", "nagios"]
DATABASES = ["shop", "analytics"]
MISSING_DBS = ["shop_test", "shopdb", "production", "template2", "prod", "shop_staging", "analytcs"]
TYPO_TABLES = ["customer", "order", "prodcts", "invoice", "billing.payment", "order_item", "users", "cart",
               "public.orderss", "sesions", "audit", "inventory", "shipments", "coupons"]
TYPO_COLUMNS = [("customers", "emial"), ("orders", "state"), ("products", "cost"), ("orders", "customer"),
                ("customers", "fullname"), ("order_items", "quantity"), ("products", "sku_code"),
                ("orders", "created"), ("billing.invoices", "total"), ("customers", "phone")]
SYNTAX = ["SELEC * FROM customers", "SELECT * FORM orders", "SELECT id, FROM products",
          "INSERT INTO orders (customer_id, status VALUES (1, 'new')", "UPDATE products SET price = WHERE id = 3",
          "SELECT * FROM orders WHERE", "DELETE orders WHERE id = 1", "SELECT * FROM customers LIMT 10",
          "SELECT count(* FROM orders", "CREATE TABEL t (id int)", "SELECT * FROM products ORDER id",
          "SELECT 'unterminated", "SELECT * FROM orders GROUP status", "INSERT INTO customers VALUES (,)"]
FUNCS = ["lenght('x')", "now(1)", "date_trnc('day', now())", "coalese(null, 1)", "upper(1, 2)", "json_extract('{}')",
         "to_char(now())", "ifnull(1, 2)", "substr()"]
PARAMS = [("statement_timout", "5s"), ("work_mem", "lots"), ("search_path", None), ("timezone", "Mars/Olympus"),
          ("lock_timeout", "-5"), ("enable_seqscan", "maybe"), ("application_nam", "x"), ("datestyle", "weird")]
COUNTRIES = ["DE", "US", "FR", "JP", "BR", "de", "USA", "X1", "Germany"]
STATUSES = ["new", "paid", "shipped", "cancelled", "refunded"]
BAD_STATUS = ["pending", "NEW", "done", "deleted", "archived", "sent", "lost"]


SCHEMA = """
CREATE SCHEMA billing;
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name varchar(40) NOT NULL,
  country char(2) CHECK (country ~ '^[A-Z]{2}$'), created_at timestamptz DEFAULT now());
CREATE TABLE products (id serial PRIMARY KEY, sku varchar(16) NOT NULL UNIQUE,
  price numeric(10,2) NOT NULL CONSTRAINT products_price_positive CHECK (price > 0),
  stock int NOT NULL DEFAULT 0 CONSTRAINT products_stock_nonnegative CHECK (stock >= 0));
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
  status text NOT NULL DEFAULT 'new' CONSTRAINT orders_status_known CHECK (status IN ('new','paid','shipped','cancelled','refunded')),
  total numeric(10,2) DEFAULT 0, updated_at timestamptz DEFAULT now());
CREATE TABLE order_items (order_id int REFERENCES orders ON DELETE CASCADE, product_id int REFERENCES products,
  qty int NOT NULL CONSTRAINT order_items_qty_positive CHECK (qty > 0), PRIMARY KEY (order_id, product_id));
CREATE TABLE billing.invoices (id serial PRIMARY KEY, order_id int NOT NULL UNIQUE REFERENCES orders,
  amount numeric(10,2) NOT NULL);
CREATE TABLE billing.payments (id serial PRIMARY KEY, invoice_id int NOT NULL REFERENCES billing.invoices,
  method text NOT NULL, amount numeric(10,2) NOT NULL CHECK (amount > 0));
CREATE TABLE sessions (token uuid PRIMARY KEY, customer_id int REFERENCES customers, expires timestamptz NOT NULL);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, actor text, action text, payload jsonb);
CREATE SEQUENCE ticket_seq MAXVALUE 3;
INSERT INTO customers (email, name, country)
  SELECT 'user' || g || '@example.com', 'Customer ' || g, (ARRAY['DE','US','FR','JP','BR'])[1 + g % 5]
  FROM generate_series(1, 300) g;
INSERT INTO products (sku, price, stock) SELECT 'SKU-' || g, 1 + g % 97, 100 FROM generate_series(1, 200) g;
INSERT INTO orders (customer_id, status, total) SELECT 1 + g % 300, 'paid', g % 500 FROM generate_series(1, 2000) g;
INSERT INTO order_items SELECT g, 1 + g % 200, 1 + g % 5 FROM generate_series(1, 2000) g;
INSERT INTO billing.invoices (order_id, amount) SELECT g, g % 500 + 1 FROM generate_series(1, 1500) g;
"""


class Workload:
    def __init__(self, server: Server, seed: int) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.pools: dict[str, list] = {}

    async def connect(self, user: str = "app", database: str = "shop", password: str = PASSWORD, **kw):
        import asyncpg

        return await asyncpg.connect(host="127.0.0.1", port=self.server.port, user=user, database=database,
                                     password=password, statement_cache_size=0, **kw)

    async def setup(self) -> None:
        import asyncpg

        su = await asyncpg.connect(host=str(self.server.sock), port=self.server.port, user="postgres", database="postgres")
        for db in DATABASES:
            await su.execute(f"CREATE DATABASE {db}")
        for user in USERS:
            await su.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")
        await su.close()
        su = await asyncpg.connect(host=str(self.server.sock), port=self.server.port, user="postgres", database="shop")
        await su.execute(SCHEMA)
        await su.execute("GRANT USAGE ON SCHEMA billing TO app, etl, billing_svc")
        await su.execute("GRANT ALL ON ALL TABLES IN SCHEMA public, billing TO app, etl, billing_svc")
        await su.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA public, billing TO app, etl, billing_svc")
        await su.execute("GRANT SELECT ON customers, orders, products TO reporting")
        await su.close()
        self.su = await asyncpg.connect(host=str(self.server.sock), port=self.server.port, user="postgres", database="shop")
        for user in ("app", "app", "app", "etl", "reporting", "billing_svc"):
            self.pools.setdefault(user, []).append(await self.connect(user))

    def conn(self, user: str | None = None):
        user = user or zipf(self.rng, ["app", "etl", "billing_svc", "reporting"], 1.6)
        return self.rng.choice(self.pools[user])

    async def sql(self, statement: str, user: str | None = None, *args) -> None:
        conn = self.conn(user)
        try:
            await conn.execute(statement, *args) if not args else await conn.fetch(statement, *args)
        except Exception:  # the errors are the point: the server logs them
            pass
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    # each kind of event: (weight, coroutine)
    async def unique(self):
        r = self.rng
        kind = zipf(r, ["email", "sku", "item", "invoice"])
        if kind == "email":
            await self.sql(f"INSERT INTO customers (email, name) VALUES ('user{r.randint(1, 300)}@example.com', 'x')", "app")
        elif kind == "sku":
            await self.sql(f"INSERT INTO products (sku, price) VALUES ('SKU-{r.randint(1, 200)}', 5)", "etl")
        elif kind == "item":
            n = r.randint(1, 2000)
            await self.sql(f"INSERT INTO order_items VALUES ({n}, {1 + n % 200}, 1)", "app")
        else:
            await self.sql(f"INSERT INTO billing.invoices (order_id, amount) VALUES ({r.randint(1, 1500)}, 10)", "billing_svc")

    async def foreign_key(self):
        r = self.rng
        if r.random() < 0.6:
            await self.sql(f"INSERT INTO orders (customer_id) VALUES ({r.randint(1000, 99999)})", "app")
        elif r.random() < 0.5:
            await self.sql(f"DELETE FROM customers WHERE id = {r.randint(1, 300)}", "app")
        else:
            await self.sql(f"INSERT INTO billing.payments (invoice_id, method, amount) VALUES ({r.randint(5000, 9000)}, 'card', 5)", "billing_svc")

    async def not_null(self):
        r = self.rng
        which = zipf(r, ["name", "price", "method", "expires"])
        if which == "name":
            await self.sql(f"INSERT INTO customers (email) VALUES ('n{r.randint(1, 10**6)}@example.com')", "app")
        elif which == "price":
            await self.sql(f"INSERT INTO products (sku) VALUES ('NEW-{r.randint(1, 10**6)}')", "etl")
        elif which == "method":
            await self.sql("INSERT INTO billing.payments (invoice_id, amount) VALUES (1, 5)", "billing_svc")
        else:
            await self.sql(f"INSERT INTO sessions (token) VALUES ('{self._uuid()}')", "app")

    def _uuid(self) -> str:
        return "%08x-%04x-4%03x-a%03x-%012x" % tuple(self.rng.getrandbits(b) for b in (32, 16, 12, 12, 48))

    async def check(self):
        r = self.rng
        which = zipf(r, ["status", "qty", "price", "country", "stock"])
        if which == "status":
            await self.sql(f"UPDATE orders SET status = '{zipf(r, BAD_STATUS)}' WHERE id = {r.randint(1, 2000)}", "app")
        elif which == "qty":
            await self.sql(f"UPDATE order_items SET qty = {-r.randint(0, 3)} WHERE order_id = {r.randint(1, 2000)}", "app")
        elif which == "price":
            await self.sql(f"UPDATE products SET price = {-r.randint(0, 50)} WHERE id = {r.randint(1, 200)}", "etl")
        elif which == "country":
            await self.sql(f"UPDATE customers SET country = '{zipf(r, COUNTRIES[5:])}' WHERE id = {r.randint(1, 300)}", "app")
        else:
            await self.sql(f"UPDATE products SET stock = stock - 1000 WHERE id = {r.randint(1, 200)}", "etl")

    async def syntax(self):
        await self.sql(zipf(self.rng, SYNTAX, 1.1))

    async def missing_table(self):
        await self.sql(f"SELECT * FROM {zipf(self.rng, TYPO_TABLES, 1.1)} LIMIT 1")

    async def missing_column(self):
        table, column = zipf(self.rng, TYPO_COLUMNS, 1.1)
        await self.sql(f"SELECT {column} FROM {table} LIMIT 1")

    async def bad_input(self):
        r = self.rng
        which = zipf(r, ["int", "uuid", "ts", "numeric", "json", "bool", "date"])
        if which == "int":
            await self.sql("SELECT * FROM orders WHERE id = $1::text::int", None, r.choice(["abc", "12a", "", "1.5", "null", "NaN", "0x1F"]))
        elif which == "uuid":
            await self.sql(f"SELECT * FROM sessions WHERE token = '{r.choice(['abc', self._uuid()[:-3], 'undefined', '123'])}'", "app")
        elif which == "ts":
            await self.sql(f"SELECT timestamptz '{r.choice(['2024-13-01', 'yesterday-ish', '31/02/2024', 'now+1'])}'")
        elif which == "numeric":
            await self.sql(f"UPDATE products SET price = '{r.choice(['1,50', 'ten', '$5', '1.2.3'])}' WHERE id = 1", "etl")
        elif which == "json":
            payload = r.choice(["{bad", "[1,", "nul", '{"a":}'])
            await self.sql(f"INSERT INTO audit_log (actor, payload) VALUES ('x', '{payload}')", "app")
        elif which == "bool":
            await self.sql(f"SELECT '{r.choice(['maybe', 'ja', '2'])}'::boolean")
        else:
            await self.sql(f"SELECT date '{r.choice(['2024-02-30', '0000-00-00', 'soon'])}'")

    async def too_long(self):
        r = self.rng
        if r.random() < 0.7:
            await self.sql(f"UPDATE customers SET name = repeat('x', {r.randint(41, 90)}) WHERE id = {r.randint(1, 300)}", "app")
        else:
            await self.sql(f"INSERT INTO products (sku, price) VALUES (repeat('S', {r.randint(17, 30)}), 1)", "etl")

    async def arithmetic(self):
        r = self.rng
        which = zipf(r, ["div", "int", "numeric", "seq", "smallint"])
        if which == "div":
            await self.sql(f"SELECT total / (id - id) FROM orders WHERE id = {r.randint(1, 2000)}")
        elif which == "int":
            await self.sql(f"SELECT {r.randint(2, 9)} * 2147483647::int")
        elif which == "numeric":
            await self.sql(f"UPDATE orders SET total = {r.randint(10**8, 10**10)} WHERE id = {r.randint(1, 2000)}", "app")
        elif which == "seq":
            await self.sql("SELECT nextval('ticket_seq')", "app")
        else:
            await self.sql(f"SELECT {r.randint(40000, 90000)}::smallint")

    async def permission(self):
        r = self.rng
        which = zipf(r, ["write", "billing", "function"])
        if which == "write":
            await self.sql(f"UPDATE {zipf(r, ['orders', 'customers', 'products'])} SET id = id WHERE id = 0", "reporting")
        elif which == "billing":
            await self.sql(f"SELECT * FROM billing.{zipf(r, ['invoices', 'payments'])}", "reporting")
        else:
            await self.sql(f"SELECT * FROM {zipf(r, ['sessions', 'audit_log'])}", "reporting")

    async def undefined_function(self):
        r = self.rng
        if r.random() < 0.7:
            await self.sql(f"SELECT {zipf(r, FUNCS)}")
        else:
            await self.sql(f"SELECT * FROM orders WHERE id = '{r.randint(1, 9)}'::text")

    async def transaction_state(self):
        r = self.rng
        conn = self.conn()
        try:
            which = zipf(r, ["aborted", "no_tx", "in_tx", "savepoint", "prepared", "cursor"])
            if which == "aborted":
                async with conn.transaction():
                    try:
                        await conn.execute("SELECT 1/0")
                    except Exception:
                        pass
                    await conn.execute("SELECT 1")
            elif which == "no_tx":
                await conn.execute(r.choice(["COMMIT", "ROLLBACK"]))
            elif which == "in_tx":
                await conn.execute("BEGIN; BEGIN; ROLLBACK")
            elif which == "savepoint":
                await conn.execute(f"BEGIN; ROLLBACK TO SAVEPOINT {r.choice(['sp1', 'before_update', 'a'])}")
            elif which == "prepared":
                await conn.execute(f"EXECUTE {r.choice(['get_order', 'stmt_1', 'find_customer'])}(1)")
            else:
                await conn.execute(f"BEGIN; FETCH NEXT FROM {r.choice(['c1', 'orders_cur'])}")
        except Exception:
            pass
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    async def settings(self):
        name, value = zipf(self.rng, PARAMS, 1.0)
        await self.sql(f"SHOW {name}" if value is None else f"SET {name} = '{value}'")
        await self.sql("RESET ALL")

    async def timeout(self):
        r = self.rng
        conn = self.conn("etl")
        try:
            await conn.execute(f"SET statement_timeout = {r.choice([50, 100, 200])}")
            await conn.execute(f"SELECT pg_sleep({r.choice([0.3, 0.5])})")
        except Exception:
            pass
        await conn.execute("RESET statement_timeout")

    async def deadlock(self):
        r = self.rng
        a, b = r.sample(range(1, 2000), 2)
        one, two = await self.connect("app"), await self.connect("app")
        try:
            await one.execute("BEGIN")
            await two.execute("BEGIN")
            await one.execute(f"UPDATE orders SET total = total + 1 WHERE id = {a}")
            await two.execute(f"UPDATE orders SET total = total + 1 WHERE id = {b}")
            results = await asyncio.gather(
                one.execute(f"UPDATE orders SET total = total + 1 WHERE id = {b}"),
                two.execute(f"UPDATE orders SET total = total + 1 WHERE id = {a}"),
                return_exceptions=True,
            )
            del results
        finally:
            await _close(one, two)

    async def lock_wait(self):
        r = self.rng
        row = r.randint(1, 300)
        holder, waiter = await self.connect("app"), await self.connect(r.choice(["app", "etl"]))
        try:
            await holder.execute("BEGIN")
            await holder.execute(f"UPDATE customers SET name = name WHERE id = {row}")
            await waiter.execute(f"SET lock_timeout = {r.choice([150, 300, 400])}")
            wait = asyncio.create_task(waiter.execute(f"UPDATE customers SET name = name WHERE id = {row}"))
            await asyncio.sleep(r.choice([0.12, 0.2, 0.5]))
            await holder.execute("COMMIT")
            try:
                await wait
            except Exception:
                pass
        finally:
            await _close(holder, waiter)

    async def serialization(self):
        r = self.rng
        row = r.randint(1, 2000)
        one, two = await self.connect("app"), await self.connect("billing_svc")
        try:
            await one.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await one.execute(f"SELECT total FROM orders WHERE id = {row}")
            await two.execute(f"UPDATE orders SET total = total + 1 WHERE id = {row}")
            try:
                await one.execute(f"UPDATE orders SET total = total + 2 WHERE id = {row}")
            except Exception:
                pass
        finally:
            await _close(one, two)

    async def login(self):
        import asyncpg

        r = self.rng
        which = zipf(r, ["wrong_password", "scanner", "database", "ok", "hba"], 1.1)
        user, database, password = "app", "shop", PASSWORD
        if which == "wrong_password":
            user, password = zipf(r, USERS), r.choice(["hunter2", "secret", "password1", ""]) or "x"
        elif which == "scanner":
            user, password = zipf(r, SCANNED, 1.0), r.choice(["123456", "admin", "password"])
        elif which == "database":
            database = zipf(r, MISSING_DBS)
        elif which == "hba":
            database = "analytics"
        else:
            user = zipf(r, USERS)
            database = "analytics" if user == "reporting" else "shop"
        try:
            conn = await self.connect(user, database, password, server_settings={"application_name": zipf(r, ["shop-api", "etl-runner", "psql", "grafana", "pgbouncer"])})
        except (asyncpg.PostgresError, OSError):
            return
        await conn.close()

    async def dropped_connection(self):
        r = self.rng
        which = zipf(r, ["eof_in_tx", "eof", "startup", "garbage"])
        if which in ("startup", "garbage"):
            with socket.create_connection(("127.0.0.1", self.server.port)) as s:
                if which == "garbage":
                    s.sendall(r.choice([b"GET / HTTP/1.1\r\nHost: db\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                        b"\x00\x00\x00\x08\x00\x00\x00\x00"]))
                    try:
                        s.recv(100)
                    except OSError:
                        pass
            return
        conn = await self.connect(zipf(r, ["app", "etl", "billing_svc"]))
        if which == "eof_in_tx":
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1")
        conn.terminate()  # the client goes away without a word (a crash, a killed pod)

    async def terminate(self):
        r = self.rng
        victim = await self.connect(zipf(r, ["app", "etl"]))
        pid = victim.get_server_pid()
        if r.random() < 0.5:
            task = asyncio.create_task(victim.execute("SELECT pg_sleep(2)"))
            await asyncio.sleep(0.1)
            await self.su.execute(f"SELECT pg_cancel_backend({pid})")
            try:
                await task
            except Exception:
                pass
        else:
            await self.su.execute(f"SELECT pg_terminate_backend({pid})")
        victim.terminate()

    async def maintenance(self):
        r = self.rng
        which = zipf(r, ["churn", "checkpoint", "sort", "analyze"], 0.8)
        if which == "churn":
            n = r.randint(50, 400)
            await self.sql(f"UPDATE orders SET updated_at = now() WHERE id % {r.randint(3, 9)} = 0 AND id < {n * 5}", "etl")
            await self.sql(f"DELETE FROM audit_log WHERE id % 2 = 0", "etl")
            await self.sql(f"INSERT INTO audit_log (actor, action) SELECT 'etl', 'sync' FROM generate_series(1, {n})", "etl")
        elif which == "checkpoint":
            await self.su.execute("CHECKPOINT")
        elif which == "sort":
            await self.sql("SELECT * FROM orders o JOIN order_items i ON i.order_id = o.id ORDER BY o.updated_at DESC, i.qty", "reporting")
        else:
            await self.sql(f"ANALYZE {r.choice(['orders', 'customers', 'audit_log'])}", "etl")

    def kinds(self):
        return [
            (14, self.unique), (8, self.foreign_key), (6, self.not_null), (7, self.check), (10, self.syntax),
            (9, self.missing_table), (7, self.missing_column), (8, self.bad_input), (3, self.too_long),
            (5, self.arithmetic), (5, self.permission), (4, self.undefined_function), (5, self.transaction_state),
            (3, self.settings), (2, self.timeout), (2, self.deadlock), (3, self.lock_wait), (2, self.serialization),
            (12, self.login), (4, self.dropped_connection), (2, self.terminate), (6, self.maintenance),
        ]

    async def run(self, events: int) -> None:
        await self.setup()
        kinds = self.kinds()
        for _ in range(events):
            _, action = self.rng.choices(kinds, weights=[w for w, _ in kinds])[0]
            await action()
        await asyncio.sleep(3)  # let autovacuum and the log collector catch up
        for conns in self.pools.values():
            for c in conns:
                await c.close()
        await self.su.close()


async def _close(*conns) -> None:
    """Roll back what a scenario left open and close its connections."""
    for c in conns:
        if c.is_in_transaction():
            await c.execute("ROLLBACK")
        await c.close()


# --- from log to corpus ---------------------------------------------------------------------

# setup statements run as the superuser over the socket before the workload: not part of it
_SETUP_ONLY = {"CREATE DATABASE", "CREATE ROLE"}


def corpus_rows(records: list[dict], labeller: Labeller) -> tuple[list[dict], Counter]:
    rows, dropped = [], Counter()
    for record in records:
        severity = record.get("error_severity", "LOG")
        for field, level in (("message", severity), ("detail", "DETAIL"), ("hint", "HINT")):
            text = record.get(field)
            if not text:
                continue
            label = labeller.label(text)
            if label is None:
                dropped[(level, text.split("\n")[0][:60])] += 1
                continue
            content = " ".join(text.split())
            rows.append({"LineId": len(rows) + 1, "Level": level, "Content": content,
                         "EventId": label[0], "EventTemplate": label[1]})
    return rows, dropped


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--events", type=int, default=1400, help="workload actions (not log lines)")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--pg-bin", type=Path, default=PG_BIN)
    args = parser.parse_args(argv)
    labeller = Labeller(load_formats())
    with tempfile.TemporaryDirectory(prefix="pg-corpus-") as tmp:
        server = Server(args.pg_bin, Path(tmp))
        server.start()
        try:
            asyncio.run(Workload(server, args.seed).run(args.events))
        finally:
            server.stop()
        records = server.records()
    # the lines before the workload's first statement are the server starting and the setup
    rows, dropped = corpus_rows(records, labeller)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["LineId", "Level", "Content", "EventId", "EventTemplate"])
        writer.writeheader()
        writer.writerows(rows)
    events = Counter(r["EventId"] for r in rows)
    print(f"{len(rows)} lines, {len(events)} events, {sum(dropped.values())} lines dropped "
          f"({len(dropped)} distinct) -> {args.out}")
    for (level, text), n in dropped.most_common(15):
        print(f"  dropped {n:4d}  {level:7s} {text}")


if __name__ == "__main__":
    main()
