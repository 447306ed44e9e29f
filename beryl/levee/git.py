"""
Git objects as the historian/Routerlicious storage API serves them: blobs,
trees and commits, each named by the SHA-1 git itself would give it, so a
client can rely on content addressing (the same content always has the same
sha, and a sha always names the same content).

These are pure values and functions; L{beryl.levee.storage} keeps them.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any, Mapping, Sequence

import attrs

__all__ = [
    "BLOB",
    "COMMIT",
    "TREE",
    "GitError",
    "Person",
    "TreeEntry",
    "blob_sha",
    "commit_body",
    "is_sha",
    "object_sha",
    "parse_person",
    "tree_body",
]

BLOB = "blob"
TREE = "tree"
COMMIT = "commit"

_SHA = re.compile(r"^[0-9a-f]{40}$")
_TREE_MODES = {"40000", "040000"}
_BLOB_MODES = {"100644", "100755", "120000"}


class GitError(ValueError):
    """A request for an object that git could not represent."""


def is_sha(value: object) -> bool:
    """Whether C{value} is a lower-case 40-digit hex SHA-1."""
    return isinstance(value, str) and _SHA.match(value) is not None


def object_sha(kind: str, body: bytes) -> str:
    """The sha git gives an object of C{kind} whose raw content is C{body}."""
    header = f"{kind} {len(body)}\0".encode("ascii")
    return hashlib.sha1(header + body, usedforsecurity=False).hexdigest()


def blob_sha(content: bytes) -> str:
    """The sha of a blob (C{git hash-object})."""
    return object_sha(BLOB, content)


@attrs.frozen
class TreeEntry:
    """
    One entry of a tree.

    @ivar mode: git's mode text; trees are written C{40000} as git does.
    @ivar type: L{BLOB} or L{TREE}.
    """

    path: str
    mode: str
    type: str
    sha: str

    @classmethod
    def from_json(cls, raw: Any) -> TreeEntry:
        """
        An entry of a C{POST /git/trees} body: C{{path, mode, type, sha}}.

        @raise GitError: when a field is missing or malformed.
        """
        if not isinstance(raw, dict):
            raise GitError("a tree entry must be an object")
        path, mode, kind, sha = (raw.get(k) for k in ("path", "mode", "type", "sha"))
        if not isinstance(path, str) or not path or "/" in path or "\0" in path:
            raise GitError(f"bad tree entry path {path!r}")
        if path in (".", ".."):
            raise GitError(f"bad tree entry path {path!r}")
        if kind not in (BLOB, TREE):
            raise GitError(f"tree entry {path!r}: type must be blob or tree")
        if not is_sha(sha):
            raise GitError(f"tree entry {path!r}: sha must be 40 hex digits")
        if kind == TREE:
            if mode not in _TREE_MODES:
                raise GitError(f"tree entry {path!r}: a tree's mode is 040000")
            mode = "40000"
        elif mode not in _BLOB_MODES:
            raise GitError(f"tree entry {path!r}: bad blob mode {mode!r}")
        return cls(path, str(mode), kind, str(sha))

    def json_mode(self) -> str:
        """The mode as the REST API writes it (C{040000} for trees)."""
        return "040000" if self.type == TREE else self.mode


def _tree_order(entry: TreeEntry) -> bytes:
    """Git's tree order: names compared bytewise, trees as if ending in C{/}."""
    name = entry.path.encode("utf-8")
    return name + b"/" if entry.type == TREE else name


def tree_body(entries: Sequence[TreeEntry]) -> tuple[bytes, list[TreeEntry]]:
    """
    The raw content git stores for a tree, and the entries in git's order.

    @raise GitError: when two entries have the same name.
    """
    ordered = sorted(entries, key=_tree_order)
    names = [entry.path for entry in ordered]
    if len(set(names)) != len(names):
        raise GitError("a tree has two entries with the same path")
    body = b"".join(
        f"{entry.mode} {entry.path}\0".encode() + bytes.fromhex(entry.sha)
        for entry in ordered
    )
    return body, ordered


@attrs.frozen
class Person:
    """A commit's author or committer."""

    name: str
    email: str
    date: str
    """ISO 8601 as the API writes it, e.g. C{2026-12-01T20:00:00Z}."""
    seconds: int
    """The same instant in epoch seconds, as git hashes it."""

    def to_json(self) -> dict[str, str]:
        """C{{name, email, date}}."""
        return {"name": self.name, "email": self.email, "date": self.date}


def commit_body(
    tree: str, parents: Sequence[str], author: Person, message: str
) -> bytes:
    """
    The raw content git stores for a commit with C{author} as both author and
    committer, in UTC.
    """
    signature = f"{author.name} <{author.email}> {author.seconds} +0000"
    lines = [f"tree {tree}"]
    lines += [f"parent {parent}" for parent in parents]
    lines += [f"author {signature}", f"committer {signature}", "", message]
    return "\n".join(lines).encode("utf-8")


def parse_person(raw: Mapping[str, Any] | None, now: float) -> Person:
    """
    The author of a C{POST /git/commits} body; fields it lacks default to
    the Levee service at C{now}.

    @raise GitError: when a given field has the wrong type or date format.
    """
    raw = raw or {}
    name = raw.get("name", "Beryl Levee")
    email = raw.get("email", "levee@beryl.invalid")
    if not isinstance(name, str) or not isinstance(email, str):
        raise GitError("author name and email must be strings")
    if any(c in name + email for c in "<>\n\0"):
        raise GitError("author name and email may not contain <, >, newlines")
    date = raw.get("date")
    if date is None:
        moment = datetime.datetime.fromtimestamp(int(now), datetime.UTC)
    elif isinstance(date, str):
        try:
            moment = datetime.datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            raise GitError(f"bad author date {date!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
    else:
        raise GitError("author date must be an ISO 8601 string")
    seconds = int(moment.timestamp())
    text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return Person(name, email, text, seconds)
