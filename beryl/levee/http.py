"""
The HTTP half of Levee, on the same port as the socket: document creation,
the git-style storage API of Routerlicious's historian that the Levee
driver's C{gitManager} calls, the op log (C{/deltas}) and, for development,
token minting.

Routes (every one checks C{Authorization: Bearer <token>}):

  - C{POST /documents/{tenant}}: body C{{summary, id?}}; answers the new
    document id as a bare JSON string.
  - C{GET|PATCH /repos/{tenant}/git/refs/heads/{document}}
  - C{GET /repos/{tenant}/git/commits/{sha}}, C{POST /repos/{tenant}/git/commits}
  - C{GET /repos/{tenant}/git/trees/{sha}[?recursive=1]}, C{POST .../git/trees}
  - C{GET /repos/{tenant}/git/blobs/{sha}}, C{POST .../git/blobs}
  - C{GET /deltas/{tenant}/{document}?from=X[&to=Y]}: C{{"value": [ops]}}
    with C{X <= sequenceNumber < Y}, Fluid's C{fetchMessages} bounds.
  - C{POST /api/tenants/{tenant}/token-mint} (only when enabled).

Any origin may call them (CORS; tokens are bearer headers, never cookies).
Errors answer C{{"message": ...}} with 400 (malformed), 401 (no, bad or
expired token), 403 (another tenant or document, missing scope), 404
(unknown object or document), 405, 409 (document exists) or 413 (body
larger than the limit).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any, Callable, Mapping

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from beryl.levee.auth import TokenValidator, authorize_request, mint_token
from beryl.levee.git import GitError, TreeEntry, is_sha, parse_person
from beryl.levee.protocol import (
    DOC_READ,
    DOC_WRITE,
    SUMMARY_WRITE,
    ConnectDocumentError,
)
from beryl.levee.storage import Commit, LeveeStorage

__all__ = ["DEFAULT_MAX_BODY", "LeveeHttp", "route_names"]

DEFAULT_MAX_BODY = 32 * 1024 * 1024
"""The largest request body accepted, in bytes (summaries can be large)."""

_WRITE = (DOC_WRITE, SUMMARY_WRITE)
_READ = (DOC_READ,)


class HttpError(Exception):
    """A request refused with C{code} and a one-line C{message}."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def route_names() -> tuple[bytes, ...]:
    """The first path segments L{LeveeHttp} serves."""
    return (b"documents", b"repos", b"deltas", b"api")


class LeveeHttp(Resource):
    """
    Every Levee HTTP route, mounted under each of L{route_names} with
    C{root.putChild(name, LeveeHttp(...).child(name))}.
    """

    log = Logger()

    def __init__(
        self,
        storage: LeveeStorage,
        validate: TokenValidator,
        clock: IReactorTime,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        mint_secrets: Mapping[str, str] | None = None,
        new_document_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        """
        @param mint_secrets: when given, C{POST /api/tenants/{t}/token-mint}
            signs tokens for any tenant listed, for anyone who asks
            (development only).
        """
        Resource.__init__(self)
        self.storage = storage
        self.validate = validate
        self.clock = clock
        self.max_body = max_body
        self.mint_secrets = mint_secrets
        self.new_document_id = new_document_id
        if mint_secrets is not None:
            self.log.warn(
                "Levee mints tokens for tenants {tenants} for anyone at "
                "POST /api/tenants/{{tenant}}/token-mint; never enable this in "
                "production",
                tenants=sorted(mint_secrets),
            )

    def child(self, name: bytes) -> Resource:
        """The resource to mount at C{/name}."""
        return _Prefix(self, name.decode("ascii"))

    # Plumbing

    def handle(self, prefix: str, request: Request) -> object:
        """Serve one request under C{/prefix}."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        # Tokens travel in a header, never in cookies, so any origin may call.
        request.setHeader(b"access-control-allow-origin", b"*")
        if request.method == b"OPTIONS":
            request.setHeader(
                b"access-control-allow-methods", b"GET, POST, PATCH, OPTIONS"
            )
            request.setHeader(
                b"access-control-allow-headers", b"authorization, content-type"
            )
            request.setHeader(b"access-control-max-age", b"600")
            request.setResponseCode(204)
            return b""
        path = [
            segment.decode("utf-8", "replace") for segment in request.postpath or []
        ]
        method = request.method.decode("ascii", "replace")
        result = Deferred.fromCoroutine(self._dispatch(prefix, method, path, request))
        result.addCallbacks(
            lambda answer: self._finish(request, 200, answer),
            lambda failure: self._fail(request, failure),
        )
        return NOT_DONE_YET

    def _finish(self, request: Request, code: int, answer: Any) -> None:
        if request.finished or request.channel is None:
            return
        request.setResponseCode(code)
        request.write(orjson.dumps(answer))
        request.finish()

    def _fail(self, request: Request, failure: Failure) -> None:
        if failure.check(HttpError):
            error = failure.value
            assert isinstance(error, HttpError)
            code, message = error.code, error.message
        elif failure.check(GitError):
            code, message = 400, str(failure.value)
        else:
            self.log.failure("Levee HTTP request failed", failure)
            code, message = 500, "Internal server error"
        self._finish(request, code, {"message": message})

    def _check_size(self, request: Request) -> None:
        """Refuse a body larger than C{max_body} with 413."""
        length = request.getHeader(b"content-length")
        content = request.content
        assert content is not None
        content.seek(0, 2)
        size = content.tell()
        if size > self.max_body or (
            length is not None and length.isdigit() and int(length) > self.max_body
        ):
            raise HttpError(413, f"Request body larger than {self.max_body} bytes")

    def _body(self, request: Request) -> Any:
        """The request's JSON body."""
        self._check_size(request)
        content = request.content
        assert content is not None
        content.seek(0)
        try:
            return orjson.loads(content.read())
        except orjson.JSONDecodeError:
            raise HttpError(400, "Request body is not JSON") from None

    def _authorize(
        self,
        request: Request,
        tenant: str,
        document: str | None,
        scopes: tuple[str, ...],
    ) -> None:
        header = request.getHeader(b"authorization")
        verdict = authorize_request(
            self.validate,
            tenant,
            document,
            header.decode("latin-1") if header is not None else None,
            self.clock.seconds(),
            scopes,
        )
        if isinstance(verdict, ConnectDocumentError):
            raise HttpError(verdict.code, verdict.message)

    async def _dispatch(
        self, prefix: str, method: str, path: list[str], request: Request
    ) -> Any:
        if method in ("POST", "PATCH", "PUT"):
            # Refuse an oversized body before anything else, token included.
            self._check_size(request)
        if prefix == "documents" and len(path) == 1 and path[0]:
            self._allow(method, "POST")
            return await self._create_document(path[0], request)
        if prefix == "deltas" and len(path) >= 2 and path[0]:
            self._allow(method, "GET")
            return await self._deltas(path[0], "/".join(path[1:]), request)
        if prefix == "repos" and len(path) >= 3 and path[1] == "git" and path[0]:
            return await self._git(method, path[0], path[2], path[3:], request)
        if (
            prefix == "api"
            and len(path) == 3
            and path[0] == "tenants"
            and path[2] == "token-mint"
            and self.mint_secrets is not None
        ):
            self._allow(method, "POST")
            return self._mint(path[1], request)
        raise HttpError(404, "Not found")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HttpError(405, f"{method} not allowed here")

    # Routes

    async def _create_document(self, tenant: str, request: Request) -> Any:
        self._authorize(request, tenant, None, (DOC_WRITE,))
        body = self._body(request)
        if not isinstance(body, dict) or "summary" not in body:
            raise HttpError(400, "Body must be {summary, ...}")
        document = body.get("id") or self.new_document_id()
        if not isinstance(document, str) or "/" in document or ":" in document:
            raise HttpError(400, "Document id must be a string without / or :")
        now = self.clock.seconds()
        commit = await self.storage.create_document(
            tenant, document, body["summary"], parse_person(None, now), int(now * 1000)
        )
        if commit is None:
            raise HttpError(409, f"Document {document} exists")
        self.log.info(
            "Created document {tenant}/{document}", tenant=tenant, document=document
        )
        return document

    async def _deltas(self, tenant: str, document: str, request: Request) -> Any:
        self._authorize(request, tenant, document, _READ)
        first = _int_arg(request, b"from", 0)
        end = _int_arg(request, b"to", None)
        if end is not None and end <= first:
            return {"value": []}
        ops = await self.storage.deltas_json(tenant, document, first, end)
        return {"value": orjson.Fragment(ops)}

    async def _git(
        self, method: str, tenant: str, kind: str, rest: list[str], request: Request
    ) -> Any:
        scopes = _READ if method == "GET" else _WRITE
        if kind == "refs" and len(rest) >= 2 and rest[0] == "heads" and rest[1]:
            document = "/".join(rest[1:])
            self._allow(method, "GET", "PATCH")
            self._authorize(request, tenant, document, scopes)
            return await self._ref(method, tenant, document, request)
        getter = {
            "blobs": self._get_blob,
            "trees": self._get_tree,
            "commits": self._get_commit,
        }.get(kind)
        creator = {
            "blobs": self._post_blob,
            "trees": self._post_tree,
            "commits": self._post_commit,
        }.get(kind)
        if getter is None or creator is None or len(rest) > 1:
            raise HttpError(404, "Not found")
        if not rest or not rest[0]:
            self._allow(method, "POST")
            self._authorize(request, tenant, None, scopes)
            return await creator(tenant, request)
        self._allow(method, "GET")
        self._authorize(request, tenant, None, scopes)
        sha = rest[0]
        if not is_sha(sha):
            raise HttpError(404, f"No object {sha}")
        return await getter(tenant, sha, request)

    async def _ref(
        self, method: str, tenant: str, document: str, request: Request
    ) -> Any:
        if method == "PATCH":
            body = self._body(request)
            sha = body.get("sha") if isinstance(body, dict) else None
            if not is_sha(sha):
                raise HttpError(400, "Body must be {sha, force}")
            assert isinstance(sha, str)
            if not await self.storage.set_ref(tenant, f"heads/{document}", sha):
                raise HttpError(404, f"No commit {sha}")
            return _ref_json(tenant, document, sha)
        head = await self.storage.head(tenant, document)
        if head is None:
            raise HttpError(404, f"No ref heads/{document}")
        return _ref_json(tenant, document, head)

    async def _get_blob(self, tenant: str, sha: str, request: Request) -> Any:
        content = await self.storage.get_blob(tenant, sha)
        if content is None:
            raise HttpError(404, f"No blob {sha}")
        return {
            "sha": sha,
            "size": len(content),
            "url": f"/repos/{tenant}/git/blobs/{sha}",
            "content": base64.b64encode(content).decode("ascii"),
            "encoding": "base64",
        }

    async def _post_blob(self, tenant: str, request: Request) -> Any:
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            raise HttpError(400, "Body must be {content, encoding}")
        encoding = body.get("encoding", "utf-8")
        text: str = body["content"]
        if encoding == "base64":
            try:
                content = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise HttpError(400, "content is not valid base64") from None
        elif encoding in ("utf-8", "utf8"):
            content = text.encode("utf-8")
        else:
            raise HttpError(400, "encoding must be base64 or utf-8")
        sha = await self.storage.put_blob(tenant, content)
        return {"sha": sha, "url": f"/repos/{tenant}/git/blobs/{sha}"}

    async def _get_tree(self, tenant: str, sha: str, request: Request) -> Any:
        recursive = request.args.get(b"recursive", [b"0"])[0] not in (b"0", b"")
        entries = await self.storage.get_tree(tenant, sha, recursive)
        if entries is None:
            raise HttpError(404, f"No tree {sha}")
        return _tree_json(tenant, sha, entries)

    async def _post_tree(self, tenant: str, request: Request) -> Any:
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("tree"), list):
            raise HttpError(400, "Body must be {tree: [entries]}")
        if body.get("base_tree"):
            raise HttpError(400, "base_tree is not supported")
        entries = [TreeEntry.from_json(raw) for raw in body["tree"]]
        sha = await self.storage.put_tree(tenant, entries)
        stored = await self.storage.get_tree(tenant, sha)
        assert stored is not None
        return _tree_json(tenant, sha, stored)

    async def _get_commit(self, tenant: str, sha: str, request: Request) -> Any:
        commit = await self.storage.get_commit(tenant, sha)
        if commit is None:
            raise HttpError(404, f"No commit {sha}")
        return _commit_json(tenant, commit)

    async def _post_commit(self, tenant: str, request: Request) -> Any:
        body = self._body(request)
        if not isinstance(body, dict):
            raise HttpError(400, "Body must be {message, tree, parents}")
        tree, parents = body.get("tree"), body.get("parents", [])
        message = body.get("message", "")
        if not is_sha(tree) or not isinstance(message, str):
            raise HttpError(400, "Body must be {message, tree, parents}")
        if not isinstance(parents, list) or not all(is_sha(p) for p in parents):
            raise HttpError(400, "parents must be a list of commit shas")
        author = body.get("author")
        if author is not None and not isinstance(author, dict):
            raise HttpError(400, "author must be {name, email, date}")
        person = parse_person(author, self.clock.seconds())
        assert isinstance(tree, str)
        sha = await self.storage.put_commit(tenant, tree, parents, person, message)
        commit = await self.storage.get_commit(tenant, sha)
        assert commit is not None
        return _commit_json(tenant, commit)

    def _mint(self, tenant: str, request: Request) -> Any:
        assert self.mint_secrets is not None
        secret = self.mint_secrets.get(tenant)
        if secret is None:
            raise HttpError(404, f"No tenant {tenant}")
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("documentId"), str):
            raise HttpError(400, "Body must be {documentId, scopes?, user?}")
        scopes = body.get("scopes", [DOC_READ, DOC_WRITE, SUMMARY_WRITE])
        user = body.get("user")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise HttpError(400, "scopes must be a list of strings")
        if user is not None and not (isinstance(user, dict) and "id" in user):
            raise HttpError(400, "user must be {id, ...}")
        token = mint_token(
            tenant,
            body["documentId"],
            secret,
            scopes=scopes,
            user=user,
            now=self.clock.seconds(),
        )
        return {"token": token}


class _Prefix(Resource):
    """C{/name}: every path below it goes to L{LeveeHttp.handle}."""

    isLeaf = True

    def __init__(self, http: LeveeHttp, prefix: str) -> None:
        Resource.__init__(self)
        self.http = http
        self.prefix = prefix

    def render(self, request: Request) -> object:
        return self.http.handle(self.prefix, request)


def _int_arg(request: Request, name: bytes, default: int | None) -> Any:
    values = request.args.get(name)
    if not values:
        return default
    text = values[0].decode("ascii", "replace")
    try:
        return int(text)
    except ValueError:
        raise HttpError(400, f"{name.decode()} must be an integer") from None


def _ref_json(tenant: str, document: str, sha: str) -> dict[str, Any]:
    return {
        "ref": f"refs/heads/{document}",
        "url": f"/repos/{tenant}/git/refs/heads/{document}",
        "object": {
            "sha": sha,
            "type": "commit",
            "url": f"/repos/{tenant}/git/commits/{sha}",
        },
    }


def _tree_json(tenant: str, sha: str, entries: list[TreeEntry]) -> dict[str, Any]:
    return {
        "sha": sha,
        "url": f"/repos/{tenant}/git/trees/{sha}",
        "tree": [
            {
                "path": entry.path,
                "mode": entry.json_mode(),
                "sha": entry.sha,
                "type": entry.type,
                "url": f"/repos/{tenant}/git/{entry.type}s/{entry.sha}",
            }
            for entry in entries
        ],
    }


def _commit_json(tenant: str, commit: Commit) -> dict[str, Any]:
    return {
        "sha": commit.sha,
        "url": f"/repos/{tenant}/git/commits/{commit.sha}",
        "tree": {
            "sha": commit.tree,
            "url": f"/repos/{tenant}/git/trees/{commit.tree}",
        },
        "parents": [
            {"sha": parent, "url": f"/repos/{tenant}/git/commits/{parent}"}
            for parent in commit.parents
        ],
        "message": commit.message,
        "author": commit.author.to_json(),
        "committer": commit.committer.to_json(),
    }
