"""
Tests for L{beryl.levee.http}: every Levee HTTP route with C{treq} against a
real listening server (storage in an in-memory SQLite database).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Generator, cast

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from beryl.app import App
from beryl.levee.auth import TenantTokens, mint_token
from beryl.levee.protocol import DOC_READ, DOC_WRITE, SUMMARY_WRITE, SequencedMessage
from beryl.levee.service import serve_levee

TENANT = "acme"
SECRET = "acme-secret-of-at-least-32-bytes!"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
HELLO_BLOB = "ce013625030ba8dba906f756967f9e9ca394464a"  # "hello\n"
MAX_BODY = 64 * 1024


def git_sha(kind: str, body: bytes) -> str:
    """The sha git gives an object (computed here independently)."""
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body).hexdigest()


def create_summary(value: str) -> dict[str, Any]:
    """A create-new summary as the loader builds it: C{.app} beside C{.protocol}."""
    return {
        "type": 1,
        "tree": {
            ".app": {
                "type": 1,
                "tree": {
                    ".metadata": {"type": 2, "content": '{"createContainer":1}'},
                    ".channels": {
                        "type": 1,
                        "tree": {"root": {"type": 2, "content": value}},
                    },
                },
            },
            ".protocol": {
                "type": 1,
                "tree": {
                    "attributes": {
                        "type": 2,
                        "content": '{"sequenceNumber":0,"minimumSequenceNumber":0}',
                    },
                    "quorumMembers": {"type": 2, "content": "[]"},
                },
            },
        },
    }


class LeveeHttpTests(TestCase):
    """The storage, document and delta routes over a real socket."""

    def setUp(self) -> None:
        app = App()
        self.levee = serve_levee(
            app,
            reactor,
            validate=TenantTokens(
                {TENANT: SECRET, "other": "other-secret-of-at-least-32-bytes"}
            ),
            data=":memory:",
            max_body=MAX_BODY,
            mint_secrets={TENANT: SECRET},
        )
        root = Resource()
        for name, child in self.levee.resources().items():
            root.putChild(name, child)
        self.port = cast(Any, reactor).listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.levee.database.close)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    def token(
        self,
        document: str = "doc",
        scopes: tuple[str, ...] = (DOC_READ, DOC_WRITE, SUMMARY_WRITE),
        tenant: str = TENANT,
        secret: str = SECRET,
        lifetime: int = 3600,
    ) -> str:
        """A token for C{document}."""
        return mint_token(tenant, document, secret, scopes=scopes, lifetime=lifetime)

    @inlineCallbacks
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> Any:
        """Send a request; return C{(status, decoded JSON body)}."""
        headers = {}
        if token is None:
            token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": headers, "pool": self.pool}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        response = yield treq.request(method, self.base + path, **kwargs)
        content = yield treq.json_content(response)
        return response.code, content

    @inlineCallbacks
    def test_blobs_are_content_addressed(self) -> Generator[Any, Any, None]:
        """A blob's sha is git's, whichever encoding it was posted in, and it reads back in base64."""
        code, answer = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/blobs",
            {"content": "hello\n", "encoding": "utf-8"},
        )
        self.assertEqual((code, answer["sha"]), (200, HELLO_BLOB))
        encoded = base64.b64encode(b"hello\n").decode()
        code, again = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/blobs",
            {"content": encoded, "encoding": "base64"},
        )
        self.assertEqual(again["sha"], HELLO_BLOB)
        code, blob = yield self.call("GET", f"/repos/{TENANT}/git/blobs/{HELLO_BLOB}")
        self.assertEqual(code, 200)
        self.assertEqual(base64.b64decode(blob["content"]), b"hello\n")
        self.assertEqual((blob["encoding"], blob["size"]), ("base64", 6))
        binary = bytes(range(256))
        code, answer = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/blobs",
            {"content": base64.b64encode(binary).decode(), "encoding": "base64"},
        )
        self.assertEqual(answer["sha"], git_sha("blob", binary))

    @inlineCallbacks
    def test_trees_and_commits_are_content_addressed(self) -> Generator[Any, Any, None]:
        """Trees and commits get git's shas; trees read back flat or recursively."""
        code, empty = yield self.call(
            "POST", f"/repos/{TENANT}/git/trees", {"tree": []}
        )
        self.assertEqual((code, empty["sha"]), (200, EMPTY_TREE))
        code, _ = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/trees",
            {
                "tree": [
                    {"path": "hi", "mode": "100644", "type": "blob", "sha": HELLO_BLOB}
                ]
            },
        )
        # This blob was never posted: the tree is refused.
        self.assertEqual(code, 400)
        yield self.call(
            "POST",
            f"/repos/{TENANT}/git/blobs",
            {"content": "hello\n", "encoding": "utf-8"},
        )
        _, inner = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/trees",
            {
                "tree": [
                    {"path": "hi", "mode": "100644", "type": "blob", "sha": HELLO_BLOB}
                ]
            },
        )
        inner_body = b"100644 hi\0" + bytes.fromhex(HELLO_BLOB)
        self.assertEqual(inner["sha"], git_sha("tree", inner_body))
        _, outer = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/trees",
            {
                "tree": [
                    {"path": "z", "mode": "100644", "type": "blob", "sha": HELLO_BLOB},
                    {
                        "path": "dir",
                        "mode": "040000",
                        "type": "tree",
                        "sha": inner["sha"],
                    },
                ]
            },
        )
        outer_body = (
            b"40000 dir\0"
            + bytes.fromhex(inner["sha"])
            + b"100644 z\0"
            + bytes.fromhex(HELLO_BLOB)
        )
        self.assertEqual(outer["sha"], git_sha("tree", outer_body))
        self.assertEqual([e["path"] for e in outer["tree"]], ["dir", "z"])
        _, deep = yield self.call(
            "GET", f"/repos/{TENANT}/git/trees/{outer['sha']}?recursive=1"
        )
        self.assertEqual(
            [(e["path"], e["type"], e["mode"]) for e in deep["tree"]],
            [
                ("dir", "tree", "040000"),
                ("dir/hi", "blob", "100644"),
                ("z", "blob", "100644"),
            ],
        )
        code, commit = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/commits",
            {
                "message": "Summary",
                "tree": outer["sha"],
                "parents": [],
                "author": {
                    "name": "A",
                    "email": "a@example.com",
                    "date": "2026-01-01T00:00:00Z",
                },
            },
        )
        self.assertEqual(code, 200)
        commit_body = (
            f"tree {outer['sha']}\n"
            "author A <a@example.com> 1767225600 +0000\n"
            "committer A <a@example.com> 1767225600 +0000\n\nSummary"
        ).encode()
        self.assertEqual(commit["sha"], git_sha("commit", commit_body))
        _, read = yield self.call("GET", f"/repos/{TENANT}/git/commits/{commit['sha']}")
        self.assertEqual(read["tree"]["sha"], outer["sha"])
        self.assertEqual(read["author"]["date"], "2026-01-01T00:00:00Z")
        self.assertEqual(read["message"], "Summary")

    @inlineCallbacks
    def test_bad_shas_are_not_found(self) -> Generator[Any, Any, None]:
        """Unknown, malformed or wrong-kind shas answer 404."""
        yield self.call(
            "POST",
            f"/repos/{TENANT}/git/blobs",
            {"content": "hello\n", "encoding": "utf-8"},
        )
        for path in [
            f"/repos/{TENANT}/git/blobs/{'0' * 40}",
            f"/repos/{TENANT}/git/blobs/not-a-sha",
            f"/repos/{TENANT}/git/trees/{HELLO_BLOB}",
            f"/repos/{TENANT}/git/commits/{HELLO_BLOB}",
            f"/repos/other/git/blobs/{HELLO_BLOB}",
            f"/repos/{TENANT}/git/refs/heads/doc",
        ]:
            token = (
                self.token(tenant="other", secret="other-secret-of-at-least-32-bytes")
                if "other" in path
                else None
            )
            code, answer = yield self.call("GET", path, token=token)
            self.assertEqual(code, 404, path)
            self.assertIn("message", answer)

    @inlineCallbacks
    def test_bad_tokens(self) -> Generator[Any, Any, None]:
        """No, forged or expired tokens get 401; another tenant, document or a missing scope 403."""
        path = f"/repos/{TENANT}/git/refs/heads/doc"
        cases = [
            ("", 401),
            ("not-a-jwt", 401),
            (self.token(secret="wrong-secret-of-at-least-32-bytes"), 401),
            (self.token(lifetime=-10), 401),
            (
                self.token(tenant="other", secret="other-secret-of-at-least-32-bytes"),
                401,
            ),
            (self.token(document="elsewhere"), 403),
            (self.token(scopes=(DOC_WRITE,)), 403),
        ]
        for token, expected in cases:
            code, answer = yield self.call("GET", path, token=token)
            self.assertEqual(code, expected, answer)
        code, answer = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/blobs",
            {"content": "x"},
            token=self.token(scopes=(DOC_READ,)),
        )
        self.assertEqual(code, 403)

    @inlineCallbacks
    def test_oversized_body(self) -> Generator[Any, Any, None]:
        """A body larger than the limit is refused with 413 and nothing is stored."""
        content = "x" * (MAX_BODY + 1)
        code, answer = yield self.call(
            "POST", f"/repos/{TENANT}/git/blobs", {"content": content}
        )
        self.assertEqual(code, 413)
        sha = git_sha("blob", content.encode())
        code, _ = yield self.call("GET", f"/repos/{TENANT}/git/blobs/{sha}")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_malformed_requests(self) -> Generator[Any, Any, None]:
        """Malformed bodies answer 400, unknown routes 404, wrong methods 405."""
        cases = [
            ("POST", f"/repos/{TENANT}/git/blobs", None, b"{not json"),
            (
                "POST",
                f"/repos/{TENANT}/git/blobs",
                {"content": "!!", "encoding": "base64"},
                None,
            ),
            ("POST", f"/repos/{TENANT}/git/trees", {"tree": [{"path": "a/b"}]}, None),
            ("POST", f"/repos/{TENANT}/git/commits", {"tree": "nope"}, None),
            ("POST", f"/repos/{TENANT}/git/commits", {"tree": EMPTY_TREE}, None),
            ("POST", f"/documents/{TENANT}", {"nosummary": 1}, None),
            ("POST", f"/documents/{TENANT}", {"summary": {"type": 2}}, None),
            ("GET", f"/deltas/{TENANT}/doc?from=x", None, None),
        ]
        for method, path, body, raw in cases:
            code, answer = yield self.call(method, path, body, raw=raw)
            self.assertEqual(code, 400, (path, body, answer))
        code, _ = yield self.call("GET", f"/repos/{TENANT}/git/nothing/x")
        self.assertEqual(code, 404)
        code, _ = yield self.call("DELETE", f"/repos/{TENANT}/git/blobs/{HELLO_BLOB}")
        self.assertEqual(code, 405)

    @inlineCallbacks
    def test_create_document_and_load_it(self) -> Generator[Any, Any, None]:
        """POST /documents answers a bare id; its snapshot has the .app children at the root."""
        code, document = yield self.call(
            "POST",
            f"/documents/{TENANT}",
            {"summary": create_summary('{"v":1}')},
            token=self.token(document="__new__"),
        )
        self.assertEqual(code, 200)
        self.assertIsInstance(document, str)
        token = self.token(document=document)
        code, ref = yield self.call(
            "GET", f"/repos/{TENANT}/git/refs/heads/{document}", token=token
        )
        self.assertEqual((code, ref["ref"]), (200, f"refs/heads/{document}"))
        _, commit = yield self.call(
            "GET", f"/repos/{TENANT}/git/commits/{ref['object']['sha']}", token=token
        )
        _, tree = yield self.call(
            "GET",
            f"/repos/{TENANT}/git/trees/{commit['tree']['sha']}?recursive=1",
            token=token,
        )
        paths = [entry["path"] for entry in tree["tree"]]
        self.assertEqual(
            paths,
            [
                ".channels",
                ".channels/root",
                ".metadata",
                ".protocol",
                ".protocol/attributes",
                ".protocol/quorumMembers",
            ],
        )
        [root] = [e for e in tree["tree"] if e["path"] == ".channels/root"]
        _, blob = yield self.call(
            "GET", f"/repos/{TENANT}/git/blobs/{root['sha']}", token=token
        )
        self.assertEqual(base64.b64decode(blob["content"]), b'{"v":1}')
        code, _ = yield self.call(
            "POST",
            f"/documents/{TENANT}",
            {"summary": create_summary("x"), "id": document},
            token=self.token(document="__new__"),
        )
        self.assertEqual(code, 409)

    @inlineCallbacks
    def test_patch_ref(self) -> Generator[Any, Any, None]:
        """PATCH moves a ref to a stored commit; an unknown commit is 404."""
        _, tree = yield self.call("POST", f"/repos/{TENANT}/git/trees", {"tree": []})
        _, commit = yield self.call(
            "POST",
            f"/repos/{TENANT}/git/commits",
            {"message": "m", "tree": tree["sha"], "parents": []},
        )
        code, ref = yield self.call(
            "PATCH",
            f"/repos/{TENANT}/git/refs/heads/doc",
            {"sha": commit["sha"], "force": True},
        )
        self.assertEqual((code, ref["object"]["sha"]), (200, commit["sha"]))
        code, ref = yield self.call("GET", f"/repos/{TENANT}/git/refs/heads/doc")
        self.assertEqual((code, ref["object"]["sha"]), (200, commit["sha"]))
        code, _ = yield self.call(
            "PATCH",
            f"/repos/{TENANT}/git/refs/heads/doc",
            {"sha": "1" * 40, "force": True},
        )
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_deltas_bounds(self) -> Generator[Any, Any, None]:
        """/deltas answers from <= sequenceNumber < to, Fluid's fetchMessages bounds."""
        store = self.levee.relay.sessions.store
        store.append(
            TENANT,
            "doc",
            [
                SequencedMessage(None, n, 0, -1, -1, "noop", None, 0)
                for n in range(1, 11)
            ],
        )

        @inlineCallbacks
        def numbers(query: str) -> Any:
            code, answer = yield self.call("GET", f"/deltas/{TENANT}/doc?{query}")
            self.assertEqual(code, 200)
            return [op["sequenceNumber"] for op in answer["value"]]

        self.assertEqual((yield numbers("from=1")), list(range(1, 11)))
        self.assertEqual((yield numbers("from=4&to=7")), [4, 5, 6])
        self.assertEqual((yield numbers("from=10")), [10])
        self.assertEqual((yield numbers("from=11")), [])
        self.assertEqual((yield numbers("from=5&to=5")), [])
        # A reader paging as the loader asks (from = last + 1) sees each op once.
        seen: list[int] = []
        first = 1
        while True:
            page = yield numbers(f"from={first}&to={first + 3}")
            if not page:
                break
            seen += page
            first = page[-1] + 1
        self.assertEqual(seen, list(range(1, 11)))
        code, _ = yield self.call(
            "GET", f"/deltas/{TENANT}/doc?from=1", token=self.token(document="other")
        )
        self.assertEqual(code, 403)

    @inlineCallbacks
    def test_cors(self) -> Generator[Any, Any, None]:
        """Browsers on other origins may call the routes: preflights pass, answers allow any origin."""
        response = yield treq.request(
            "OPTIONS",
            f"{self.base}/repos/{TENANT}/git/blobs",
            headers=cast(
                Any,
                {
                    "Origin": "http://app.example",
                    "Access-Control-Request-Method": "POST",
                },
            ),
            pool=self.pool,
        )
        yield treq.content(response)
        self.assertEqual(response.code, 204)
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertIn(
            "authorization",
            headers.getRawHeaders("access-control-allow-headers")[0],
        )
        response = yield treq.get(
            f"{self.base}/repos/{TENANT}/git/blobs/{HELLO_BLOB}", pool=self.pool
        )
        yield treq.content(response)
        self.assertEqual(response.code, 401)
        self.assertEqual(
            response.headers.getRawHeaders("access-control-allow-origin"), ["*"]
        )

    @inlineCallbacks
    def test_token_mint(self) -> Generator[Any, Any, None]:
        """The development mint signs tokens the routes accept, only for known tenants."""
        code, answer = yield self.call(
            "POST", f"/api/tenants/{TENANT}/token-mint", {"documentId": "doc"}, token=""
        )
        self.assertEqual(code, 200)
        code, _ = yield self.call(
            "GET", f"/deltas/{TENANT}/doc?from=1", token=answer["token"]
        )
        self.assertEqual(code, 200)
        code, _ = yield self.call(
            "POST", "/api/tenants/nobody/token-mint", {"documentId": "doc"}, token=""
        )
        self.assertEqual(code, 404)
