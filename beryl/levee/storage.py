"""
Durable Levee storage in SQLite (the standard library's C{sqlite3}): the
git objects of each tenant (blobs, trees, commits), its documents and their
acknowledged summaries, and every document's op log.

L{Database} runs every statement on one worker thread (Twisted's C{adbapi}
with a single connection), so statements run in the order they were queued
and a read sees every write queued before it; with C{":memory:"} (tests) it
runs them at once on the calling thread instead.

L{DurableDocumentStore} is the sequencer's L{IDocumentStore}: it answers
from memory (sequence numbers and the newest ops) and queues each op's
write, so sequencing never waits for the disk; the channel delivers an op
only once its row is committed (L{DurableDocumentStore.written}), so an op
a client saw sequenced survives a crash of the server process.

L{LeveeStorage} is the asynchronous API of the HTTP routes and of summary
checks.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections import deque
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import attrs
import orjson
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl.levee.git import (
    BLOB,
    COMMIT,
    TREE,
    GitError,
    Person,
    TreeEntry,
    commit_body,
    object_sha,
    tree_body,
)
from beryl.levee.protocol import SequencedMessage
from beryl.levee.store import IDocumentStore

__all__ = [
    "Commit",
    "Database",
    "DurableDocumentStore",
    "LeveeStorage",
    "MAX_DELTAS_PER_REQUEST",
    "SummaryVerdict",
    "flatten_create_summary",
]

T = TypeVar("T")

MAX_DELTAS_PER_REQUEST = 2000
"""The most ops one C{GET /deltas} answers (the loader asks again for more)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    tenant TEXT NOT NULL, sha TEXT NOT NULL, kind TEXT NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (tenant, sha));
CREATE TABLE IF NOT EXISTS documents (
    tenant TEXT NOT NULL, document TEXT NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (tenant, document));
CREATE TABLE IF NOT EXISTS summaries (
    tenant TEXT NOT NULL, document TEXT NOT NULL, sequence_number INTEGER NOT NULL,
    commit_sha TEXT NOT NULL, PRIMARY KEY (tenant, document, sequence_number));
CREATE TABLE IF NOT EXISTS refs (
    tenant TEXT NOT NULL, name TEXT NOT NULL, sha TEXT NOT NULL,
    PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS ops (
    tenant TEXT NOT NULL, document TEXT NOT NULL, sequence_number INTEGER NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (tenant, document, sequence_number));
"""

Cursor = Any
"""A DB-API cursor (C{sqlite3.Cursor} or an C{adbapi} transaction)."""


class Database:
    """
    The SQLite database of a Levee server.
    """

    log = Logger()

    def __init__(self, directory: str, reactor: Any = None) -> None:
        """
        @param directory: where C{levee.sqlite3} is kept (created if
            missing), or C{":memory:"} for a database that lives as long as
            this object and runs statements synchronously.
        @param reactor: runs the worker thread of an on-disk database.
        """
        self.directory = directory
        self.reactor = None if directory == ":memory:" else reactor
        self.before_close: list[Callable[[], None]] = []
        self._pool: adbapi.ConnectionPool | None = None
        self._connection: sqlite3.Connection | None = None
        if directory == ":memory:":
            self._connection = sqlite3.connect(":memory:")
            self._connection.executescript(_SCHEMA)
            return
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "levee.sqlite3")
        with sqlite3.connect(self.path) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
        connection.close()
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_reactor=reactor,
            cp_openfun=_open_connection,
        )

    def run(self, work: Callable[[Cursor], T]) -> Deferred[T]:
        """
        Run C{work(cursor)} in one transaction, after everything queued
        before it; its result, or its failure (rolled back).
        """
        if self._pool is not None:
            result: Deferred[T] = self._pool.runInteraction(work)
            return result
        assert self._connection is not None
        try:
            with self._connection:
                value = work(self._connection.cursor())
        except Exception:
            return fail(Failure())
        return succeed(value)

    def run_now(self, work: Callable[[Cursor], T]) -> T:
        """
        Run C{work} synchronously on a connection of this thread; for
        startup only, before the worker thread serves anything.
        """
        if self._connection is not None:
            with self._connection:
                return work(self._connection.cursor())
        connection = sqlite3.connect(self.path)
        try:
            with connection:
                return work(connection.cursor())
        finally:
            connection.close()

    def close(self) -> None:
        """
        Call every C{before_close} hook (which may queue statements), finish
        the queued statements and close the database.
        """
        for hook in self.before_close:
            hook()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _open_connection(connection: sqlite3.Connection) -> None:
    """Settings of the worker's connection: WAL, and fsync at checkpoints."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


@attrs.define
class _RecentOps:
    """A document's last SN and newest ops, kept in memory."""

    sequence_number: int
    messages: deque[SequencedMessage]


@implementer(IDocumentStore)
class DurableDocumentStore:
    """
    An L{IDocumentStore} that writes every op to a L{Database} and answers
    the sequencer from memory.
    """

    log = Logger()

    def __init__(self, database: Database, recent_ops: int = 1000) -> None:
        """
        Read every document's last sequence number (at startup).  On disk,
        the ops appended in one reactor turn are written in one transaction
        at the end of it (and before shutdown).

        @param recent_ops: how many of each document's newest ops
            C{requestOps} can replay; C{GET /deltas} serves them all.
        """
        self.database = database
        self.recent_ops = recent_ops
        rows = database.run_now(
            lambda cursor: cursor.execute(
                "SELECT tenant, document, MAX(sequence_number) FROM ops "
                "GROUP BY tenant, document"
            ).fetchall()
        )
        self._documents: dict[tuple[str, str], _RecentOps] = {
            (tenant, document): _RecentOps(number, deque(maxlen=recent_ops))
            for tenant, document, number in rows
        }
        self._last_write: Deferred[None] | None = None
        self._rows: list[tuple[str, str, int, bytes]] = []
        self._batch: Deferred[None] | None = None
        database.before_close.append(self._flush)
        if database.reactor is not None:
            database.reactor.addSystemEventTrigger("before", "shutdown", self._flush)

    def sequence_number(self, tenant_id: str, document_id: str) -> int:
        """See L{IDocumentStore.sequence_number}."""
        log = self._documents.get((tenant_id, document_id))
        return 0 if log is None else log.sequence_number

    def append(
        self, tenant_id: str, document_id: str, messages: Sequence[SequencedMessage]
    ) -> None:
        """See L{IDocumentStore.append}; the rows are written in order."""
        key = (tenant_id, document_id)
        log = self._documents.get(key)
        if log is None:
            log = _RecentOps(0, deque(maxlen=self.recent_ops))
        expected = log.sequence_number
        for message in messages:
            expected += 1
            if message.sequence_number != expected:
                raise ValueError(
                    f"op {message.sequence_number} does not follow "
                    f"{expected - 1} in {tenant_id}/{document_id}"
                )
        log.messages.extend(messages)
        log.sequence_number = expected
        self._documents[key] = log
        rows = [
            (
                tenant_id,
                document_id,
                message.sequence_number,
                orjson.dumps(message.to_json()),
            )
            for message in messages
        ]
        self._rows += rows
        if self._batch is not None:
            return
        self._batch = self._last_write = Deferred()
        reactor = self.database.reactor
        if reactor is None:
            self._flush()
        else:
            # Group commit: every op of this reactor turn in one transaction.
            reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        """Write the ops appended since the last flush, in one transaction."""
        rows, self._rows = self._rows, []
        batch, self._batch = self._batch, None
        if batch is None:
            return
        write: Deferred[None] = self.database.run(
            lambda cursor: (
                cursor.executemany("INSERT INTO ops VALUES (?, ?, ?, ?)", rows) and None
            )
        )
        write.addErrback(
            lambda failure: self.log.failure(
                "Could not store {count} ops", failure, count=len(rows)
            )
        )
        write.chainDeferred(batch)

    def messages_after(
        self, tenant_id: str, document_id: str, after: int
    ) -> list[SequencedMessage]:
        """See L{IDocumentStore.messages_after}."""
        log = self._documents.get((tenant_id, document_id))
        if log is None:
            return []
        return [message for message in log.messages if message.sequence_number > after]

    def written(self) -> Deferred[None] | None:
        """
        See L{IDocumentStore.written}: the last write queued, which commits
        after every earlier one, while it is pending.
        """
        last = self._last_write
        if last is None or last.called:
            self._last_write = None
            return None
        return last


@attrs.frozen
class SummaryVerdict:
    """
    The decision on a proposed summary.

    @ivar refusal: why it is refused, or C{None} when it is accepted.
    @ivar commit: the commit to acknowledge (and load later documents from).
    """

    refusal: str | None
    commit: str | None = None


@attrs.frozen
class Commit:
    """A stored commit."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Person
    committer: Person
    message: str


def _parse_signature(text: str) -> Person:
    """C{name <email> seconds +0000} as git writes it."""
    name, _, rest = text.partition(" <")
    email, _, when = rest.partition("> ")
    seconds = int(when.split(" ")[0])
    date = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return Person(name, email, date, seconds)


def _parse_commit(sha: str, body: bytes) -> Commit:
    """A commit from the raw content git stores."""
    head, _, message = body.decode("utf-8").partition("\n\n")
    tree = ""
    parents: list[str] = []
    author = committer = None
    for line in head.split("\n"):
        key, _, value = line.partition(" ")
        if key == "tree":
            tree = value
        elif key == "parent":
            parents.append(value)
        elif key == "author":
            author = _parse_signature(value)
        elif key == "committer":
            committer = _parse_signature(value)
    assert author is not None and committer is not None
    return Commit(sha, tree, tuple(parents), author, committer, message)


def _parse_tree(body: bytes) -> list[TreeEntry]:
    """The entries of the raw content git stores for a tree."""
    entries = []
    position = 0
    while position < len(body):
        space = body.index(b" ", position)
        nul = body.index(b"\0", space)
        mode = body[position:space].decode("ascii")
        path = body[space + 1 : nul].decode("utf-8")
        sha = body[nul + 1 : nul + 21].hex()
        kind = TREE if mode == "40000" else BLOB
        entries.append(TreeEntry(path, mode, kind, sha))
        position = nul + 21
    return entries


def _get_object(cursor: Cursor, tenant: str, sha: str) -> tuple[str, bytes] | None:
    row = cursor.execute(
        "SELECT kind, body FROM objects WHERE tenant = ? AND sha = ?", (tenant, sha)
    ).fetchone()
    return None if row is None else (row[0], bytes(row[1]))


def _put_object(cursor: Cursor, tenant: str, kind: str, body: bytes) -> str:
    sha = object_sha(kind, body)
    cursor.execute(
        "INSERT OR IGNORE INTO objects VALUES (?, ?, ?, ?)", (tenant, sha, kind, body)
    )
    return sha


def _kinds(cursor: Cursor, tenant: str, shas: Iterable[str]) -> dict[str, str]:
    """The kind of each of C{shas} that is stored."""
    found = {}
    for sha in set(shas):
        row = cursor.execute(
            "SELECT kind FROM objects WHERE tenant = ? AND sha = ?", (tenant, sha)
        ).fetchone()
        if row is not None:
            found[sha] = row[0]
    return found


def _put_tree(cursor: Cursor, tenant: str, entries: Sequence[TreeEntry]) -> str:
    kinds = _kinds(cursor, tenant, (entry.sha for entry in entries))
    for entry in entries:
        if kinds.get(entry.sha) != entry.type:
            raise GitError(f"tree entry {entry.path!r} names a missing {entry.type}")
    body, _ = tree_body(entries)
    return _put_object(cursor, tenant, TREE, body)


def _put_commit(
    cursor: Cursor,
    tenant: str,
    tree: str,
    parents: Sequence[str],
    author: Person,
    message: str,
) -> str:
    kinds = _kinds(cursor, tenant, [tree, *parents])
    if kinds.get(tree) != TREE:
        raise GitError(f"commit names a missing tree {tree}")
    for parent in parents:
        if kinds.get(parent) != COMMIT:
            raise GitError(f"commit names a missing parent {parent}")
    return _put_object(
        cursor, tenant, COMMIT, commit_body(tree, parents, author, message)
    )


def _child(cursor: Cursor, tenant: str, tree: str, name: str) -> TreeEntry | None:
    """The entry C{name} of a stored tree, if it has one."""
    found = _get_object(cursor, tenant, tree)
    if found is None or found[0] != TREE:
        return None
    return {e.path: e for e in _parse_tree(found[1])}.get(name)


def _protocol_tree(
    cursor: Cursor, tenant: str, document: str, reference: int | None
) -> TreeEntry | str:
    """
    Write the C{.protocol} tree of C{document} at sequence number
    C{reference}, as scribe does: C{attributes} (SN and MSN), the quorum
    members then (those of the newest acknowledged summary, plus the join
    and minus the leave ops after it), and its proposals and values as they
    were in that summary (only the code proposal, which clients never
    change).

    @return: the tree's entry, or why it cannot be made.
    """
    if reference is None or not document:
        return "the summary has no .protocol tree"
    row = cursor.execute(
        "SELECT commit_sha FROM summaries WHERE tenant = ? AND document = ? "
        "ORDER BY sequence_number DESC LIMIT 1",
        (tenant, document),
    ).fetchone()
    if row is None:
        return "no .protocol tree, and no earlier summary to start one from"
    found = _get_object(cursor, tenant, str(row[0]))
    assert found is not None
    parent = _child(cursor, tenant, _parse_commit(row[0], found[1]).tree, ".protocol")
    if parent is None:
        return "no .protocol tree, and the previous summary has none either"
    blobs: dict[str, bytes] = {}
    for name in ("attributes", "quorumMembers", "quorumProposals", "quorumValues"):
        entry = _child(cursor, tenant, parent.sha, name)
        blob = None if entry is None else _get_object(cursor, tenant, entry.sha)
        if blob is None:
            return f"the previous summary has no .protocol/{name}"
        blobs[name] = blob[1]
    try:
        start = int(orjson.loads(blobs["attributes"])["sequenceNumber"])
        members = dict(orjson.loads(blobs["quorumMembers"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "the previous summary's .protocol cannot be read"
    if reference < start:
        return f"reference sequence number {reference} precedes the last summary"
    minimum = int(orjson.loads(blobs["attributes"]).get("minimumSequenceNumber", 0))
    for (body,) in cursor.execute(
        "SELECT body FROM ops WHERE tenant = ? AND document = ? "
        "AND sequence_number > ? AND sequence_number <= ? ORDER BY sequence_number",
        (tenant, document, start, reference),
    ):
        op = orjson.loads(body)
        minimum = op["minimumSequenceNumber"]
        if op["type"] == "join":
            joined = orjson.loads(op["data"])
            members[joined["clientId"]] = {
                "client": joined["detail"],
                "sequenceNumber": op["sequenceNumber"],
            }
        elif op["type"] == "leave":
            members.pop(orjson.loads(op["data"]), None)
    attributes = {"minimumSequenceNumber": minimum, "sequenceNumber": reference}
    blobs["attributes"] = orjson.dumps(attributes)
    blobs["quorumMembers"] = orjson.dumps(list(members.items()))
    entries = [
        TreeEntry(name, "100644", BLOB, _put_object(cursor, tenant, BLOB, body))
        for name, body in blobs.items()
    ]
    return TreeEntry(".protocol", "40000", TREE, _put_tree(cursor, tenant, entries))


def _summary_blob(value: Any) -> bytes:
    """The bytes of a create-new summary blob's C{content}."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        # A Uint8Array that went through JSON.stringify.
        try:
            return bytes(value[str(i)] for i in range(len(value)))
        except (KeyError, ValueError, TypeError):
            pass
    if isinstance(value, list):
        try:
            return bytes(value)
        except (ValueError, TypeError):
            pass
    raise GitError("a summary blob's content must be a string or bytes")


def flatten_create_summary(summary: Any) -> dict[str, Any]:
    """
    The tree to store for a create-new summary: its C{.app} children moved
    to the root beside C{.protocol}, as a loader expects of a snapshot.

    @raise GitError: when C{summary} is not a summary tree.
    """
    if not isinstance(summary, dict) or summary.get("type") != 1:
        raise GitError("summary must be a summary tree (type 1)")
    tree = summary.get("tree")
    if not isinstance(tree, dict):
        raise GitError("summary.tree must be an object")
    app = tree.get(".app")
    if app is None:
        return tree
    if not isinstance(app, dict) or not isinstance(app.get("tree"), dict):
        raise GitError("summary .app must be a summary tree")
    flat = {key: value for key, value in tree.items() if key != ".app"}
    for key, value in app["tree"].items():
        if key in flat:
            raise GitError(f"summary .app child {key!r} collides with the root")
        flat[key] = value
    return flat


def _write_summary_tree(cursor: Cursor, tenant: str, tree: Mapping[str, Any]) -> str:
    """Store a summary tree's blobs and trees; the sha of its root tree."""
    entries = []
    for name, node in tree.items():
        if not isinstance(node, dict):
            raise GitError(f"summary node {name!r} must be an object")
        kind = node.get("type")
        if kind == 1:
            child = node.get("tree")
            if not isinstance(child, dict):
                raise GitError(f"summary tree {name!r} has no tree")
            sha = _write_summary_tree(cursor, tenant, child)
            entries.append(TreeEntry.from_json(_entry(name, TREE, sha)))
        elif kind == 2:
            sha = _put_object(cursor, tenant, BLOB, _summary_blob(node.get("content")))
            entries.append(TreeEntry.from_json(_entry(name, BLOB, sha)))
        elif kind == 4:
            identifier = node.get("id")
            if not isinstance(identifier, str):
                raise GitError(f"summary attachment {name!r} has no id")
            sha = _put_object(cursor, tenant, BLOB, identifier.encode("utf-8"))
            entries.append(TreeEntry.from_json(_entry(name, BLOB, sha)))
        else:
            raise GitError(f"summary node {name!r} has unsupported type {kind!r}")
    return _put_tree(cursor, tenant, entries)


def _entry(path: str, kind: str, sha: str) -> dict[str, str]:
    return {
        "path": path,
        "mode": "040000" if kind == TREE else "100644",
        "type": kind,
        "sha": sha,
    }


class LeveeStorage:
    """
    The asynchronous storage API behind the HTTP routes: git objects,
    documents, summaries and deltas.  Every method returns a C{Deferred};
    those that create an object fail with L{GitError} for a bad request.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    def put_blob(self, tenant: str, content: bytes) -> Deferred[str]:
        """Store a blob; its sha."""
        return self.database.run(lambda c: _put_object(c, tenant, BLOB, content))

    def get_blob(self, tenant: str, sha: str) -> Deferred[bytes | None]:
        """A blob's content, or C{None} when no such blob is stored."""

        def work(cursor: Cursor) -> bytes | None:
            found = _get_object(cursor, tenant, sha)
            return found[1] if found is not None and found[0] == BLOB else None

        return self.database.run(work)

    def put_tree(self, tenant: str, entries: Sequence[TreeEntry]) -> Deferred[str]:
        """Store a tree whose entries name stored objects; its sha."""
        return self.database.run(lambda c: _put_tree(c, tenant, entries))

    def get_tree(
        self, tenant: str, sha: str, recursive: bool = False
    ) -> Deferred[list[TreeEntry] | None]:
        """
        A tree's entries in git's order, or C{None} when no such tree is
        stored; C{recursive} lists every subtree's entries too, after their
        tree's entry, with paths from the root.
        """

        def work(cursor: Cursor) -> list[TreeEntry] | None:
            found = _get_object(cursor, tenant, sha)
            if found is None or found[0] != TREE:
                return None
            return _walk(cursor, found[1], "", recursive)

        def _walk(cursor: Cursor, body: bytes, prefix: str, deep: bool) -> list[Any]:
            result = []
            for entry in _parse_tree(body):
                result.append(attrs.evolve(entry, path=prefix + entry.path))
                if deep and entry.type == TREE:
                    child = _get_object(cursor, tenant, entry.sha)
                    assert child is not None
                    result += _walk(cursor, child[1], f"{prefix}{entry.path}/", True)
            return result

        return self.database.run(work)

    def put_commit(
        self,
        tenant: str,
        tree: str,
        parents: Sequence[str],
        author: Person,
        message: str,
    ) -> Deferred[str]:
        """Store a commit of a stored tree; its sha."""
        return self.database.run(
            lambda c: _put_commit(c, tenant, tree, parents, author, message)
        )

    def get_commit(self, tenant: str, sha: str) -> Deferred[Commit | None]:
        """A commit, or C{None} when no such commit is stored."""

        def work(cursor: Cursor) -> Commit | None:
            found = _get_object(cursor, tenant, sha)
            if found is None or found[0] != COMMIT:
                return None
            return _parse_commit(sha, found[1])

        return self.database.run(work)

    def create_document(
        self,
        tenant: str,
        document: str,
        summary: Any,
        author: Person,
        created: int,
    ) -> Deferred[str | None]:
        """
        Store a new document's create-new summary (flattened, see
        L{flatten_create_summary}) as its first acknowledged summary, at
        sequence number 0.

        @return: the summary's commit sha, or C{None} when the document
            exists already.
        """

        def work(cursor: Cursor) -> str | None:
            exists = cursor.execute(
                "SELECT 1 FROM documents WHERE tenant = ? AND document = ?",
                (tenant, document),
            ).fetchone()
            if exists is not None:
                return None
            tree = _write_summary_tree(cursor, tenant, flatten_create_summary(summary))
            commit = _put_commit(cursor, tenant, tree, [], author, "New document")
            cursor.execute(
                "INSERT INTO documents VALUES (?, ?, ?)", (tenant, document, created)
            )
            cursor.execute(
                "INSERT INTO summaries VALUES (?, ?, 0, ?)", (tenant, document, commit)
            )
            return commit

        return self.database.run(work)

    def head(self, tenant: str, document: str) -> Deferred[str | None]:
        """
        The commit of C{refs/heads/<document>}: the document's newest
        acknowledged summary; for a name that is no document, what a
        C{PATCH} last set.  C{None} when there is neither.
        """

        def work(cursor: Cursor) -> str | None:
            row = cursor.execute(
                "SELECT commit_sha FROM summaries WHERE tenant = ? AND document = ? "
                "ORDER BY sequence_number DESC LIMIT 1",
                (tenant, document),
            ).fetchone()
            if row is None:
                row = cursor.execute(
                    "SELECT sha FROM refs WHERE tenant = ? AND name = ?",
                    (tenant, f"heads/{document}"),
                ).fetchone()
            return None if row is None else str(row[0])

        return self.database.run(work)

    def set_ref(self, tenant: str, name: str, sha: str) -> Deferred[bool]:
        """
        Point C{refs/<name>} at a stored commit; whether it is stored.  A
        document's own head still moves only when a summary is acknowledged.
        """

        def work(cursor: Cursor) -> bool:
            found = _get_object(cursor, tenant, sha)
            if found is None or found[0] != COMMIT:
                return False
            cursor.execute(
                "INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", (tenant, name, sha)
            )
            return True

        return self.database.run(work)

    def document_exists(self, tenant: str, document: str) -> Deferred[bool]:
        """Whether the document was created (C{POST /documents})."""
        return self.database.run(
            lambda c: (
                c.execute(
                    "SELECT 1 FROM documents WHERE tenant = ? AND document = ?",
                    (tenant, document),
                ).fetchone()
                is not None
            )
        )

    def check_summary(
        self,
        tenant: str,
        handle: Any,
        document: str = "",
        reference_sequence_number: int | None = None,
    ) -> Deferred[SummaryVerdict]:
        """
        Decide on the summary a summarize op's C{handle} names.

        It must be a stored commit (whose tree, like every stored tree, is
        complete).  A single-commit summary as the loader uploads it
        (C{.app} beside C{.protocol}) is stored again with the C{.app}
        children at the root, where a loader looks for them.  A summary
        without C{.protocol} gets one written by the service, as
        Routerlicious's scribe does: the document's quorum at
        C{reference_sequence_number} (the summarize op's reference SN),
        from its newest acknowledged summary and the join and leave ops
        after it.  Either way, the commit so made is the one acknowledged.
        """
        if not isinstance(handle, str) or not handle:
            return succeed(SummaryVerdict("Summary handle is missing"))

        def work(cursor: Cursor) -> SummaryVerdict:
            found = _get_object(cursor, tenant, handle)
            if found is None:
                return SummaryVerdict(f"Summary {handle} was not uploaded")
            if found[0] != COMMIT:
                return SummaryVerdict(f"Summary {handle} is a {found[0]}, not a commit")
            commit = _parse_commit(handle, found[1])
            root = _get_object(cursor, tenant, commit.tree)
            assert root is not None
            entries = {e.path: e for e in _parse_tree(root[1])}
            changed = False
            app = entries.get(".app")
            if app is not None and app.type == TREE:
                inner = _get_object(cursor, tenant, app.sha)
                assert inner is not None
                del entries[".app"]
                for entry in _parse_tree(inner[1]):
                    if entry.path in entries:
                        return SummaryVerdict(
                            f"Summary {handle}: .app/{entry.path} collides with "
                            "the root"
                        )
                    entries[entry.path] = entry
                changed = True
            protocol = entries.get(".protocol")
            if protocol is None:
                made = _protocol_tree(
                    cursor, tenant, document, reference_sequence_number
                )
                if isinstance(made, str):
                    return SummaryVerdict(f"Summary {handle}: {made}")
                entries[".protocol"] = made
                changed = True
            elif (
                protocol.type != TREE
                or _child(cursor, tenant, protocol.sha, "attributes") is None
            ):
                return SummaryVerdict(f"Summary {handle} has no .protocol/attributes")
            if not changed:
                return SummaryVerdict(None, handle)
            tree = _put_tree(cursor, tenant, list(entries.values()))
            made_commit = _put_commit(
                cursor, tenant, tree, commit.parents, commit.author, commit.message
            )
            return SummaryVerdict(None, made_commit)

        return self.database.run(work)

    def acknowledge_summary(
        self, tenant: str, document: str, sequence_number: int, commit: str
    ) -> Deferred[None]:
        """Record an acknowledged summary: later loads start from it."""
        return self.database.run(
            lambda c: (
                c.execute(
                    "INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?)",
                    (tenant, document, sequence_number, commit),
                )
                and None
            )
        )

    def deltas_json(
        self, tenant: str, document: str, first: int, end: int | None
    ) -> Deferred[bytes]:
        """
        The stored ops with C{first <= sequenceNumber < end} (no upper
        bound when C{end} is C{None}), oldest first, at most
        L{MAX_DELTAS_PER_REQUEST}, as the JSON text of their array (the
        stored JSON of each, not decoded again).
        """
        bound = end if end is not None else 2**62

        def work(cursor: Cursor) -> bytes:
            rows = cursor.execute(
                "SELECT body FROM ops WHERE tenant = ? AND document = ? "
                "AND sequence_number >= ? AND sequence_number < ? "
                "ORDER BY sequence_number LIMIT ?",
                (tenant, document, first, bound, MAX_DELTAS_PER_REQUEST),
            ).fetchall()
            return b"[" + b",".join(bytes(row[0]) for row in rows) + b"]"

        return self.database.run(work)

    def deltas(
        self, tenant: str, document: str, first: int, end: int | None
    ) -> Deferred[list[Any]]:
        """L{deltas_json}, decoded: each op as its JSON value."""
        return self.deltas_json(tenant, document, first, end).addCallback(orjson.loads)
