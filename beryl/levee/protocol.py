"""
The outbound message shapes of the Fluid relay protocol as Levee carries it
over Phoenix Channels, and the pure builders that produce their JSON.

Every builder returns a JSON-ready value (dicts, lists, strings, numbers,
C{None}) using Fluid's camelCase field names, so that an adapter can hand it
straight to the wire codec.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import attrs
import orjson

__all__ = [
    "Claims",
    "ConnectDocumentError",
    "DOC_READ",
    "DOC_WRITE",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FORBIDDEN_CLIENT_TYPES",
    "JOIN",
    "LEAVE",
    "NOOP",
    "NackContent",
    "NackMessage",
    "OPERATION",
    "SERVER_PROTOCOL_VERSIONS",
    "SUMMARIZE",
    "SUMMARY_ACK",
    "SUMMARY_NACK",
    "SUMMARY_WRITE",
    "SequencedMessage",
    "connected_response",
    "json_string",
    "join_signal",
    "leave_signal",
    "nack_payload",
    "negotiate_version",
    "op_payload",
]

DOC_READ = "doc:read"
"""The scope that allows connecting to a document at all."""

DOC_WRITE = "doc:write"
"""The scope that allows a write connection (submitting ops)."""

SUMMARY_WRITE = "summary:write"
"""The scope that allows submitting C{summarize} ops."""

OPERATION = "op"
"""The C{type} of an ordinary runtime op."""

NOOP = "noop"
"""The C{type} of an op that only reports the sender's reference SN."""

JOIN = "join"
"""The C{type} of the system op that adds a write client to the quorum."""

LEAVE = "leave"
"""The C{type} of the system op that removes a write client."""

SUMMARIZE = "summarize"
"""The C{type} of a summary proposal."""

SUMMARY_ACK = "summaryAck"
"""The C{type} of the system op that accepts a summary proposal."""

SUMMARY_NACK = "summaryNack"
"""The C{type} of the system op that refuses a summary proposal."""

FORBIDDEN_CLIENT_TYPES = frozenset(
    {JOIN, LEAVE, "noClient", SUMMARY_ACK, SUMMARY_NACK, "control"}
)
"""Op types only the service may sequence; a client sending one is nacked."""

SERVER_PROTOCOL_VERSIONS = ("^0.4.0", "^0.3.0", "^0.2.0", "^0.1.0")
"""The protocol version ranges Routerlicious offers, in preference order."""

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024
"""Routerlicious's default C{maxMessageSize}, in bytes."""

DEFAULT_BLOCK_SIZE = 64436
"""Routerlicious's default C{blockSize}."""


def json_string(value: Any) -> str:
    """
    Encode C{value} as compact JSON text, as C{JSON.stringify} does; used for
    the C{data} of system ops and the C{content} of system signals.
    """
    return orjson.dumps(value).decode("utf-8")


@attrs.frozen
class Claims:
    """
    The validated claims of a connection's token (Fluid's C{ITokenClaims}).

    @ivar scopes: the granted scopes, such as L{DOC_READ} and L{DOC_WRITE}.
    @ivar user: the user the token speaks for (an C{IUser}: at least C{id}),
        or C{None} when the validator does not know one; the session then
        takes the user the client declared.
    @ivar issued_at: C{iat}, seconds since the epoch.
    @ivar expires_at: C{exp}, seconds since the epoch.
    """

    tenant_id: str
    document_id: str
    scopes: tuple[str, ...]
    user: Mapping[str, Any] | None
    issued_at: int
    expires_at: int
    version: str = "1.0"
    token_id: str | None = None

    def can_write(self) -> bool:
        """
        Whether these claims allow a write connection: they must grant
        L{DOC_WRITE}, because the Fluid driver refuses a write connection
        whose claims lack it.
        """
        return DOC_WRITE in self.scopes

    def to_json(self, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """
        The C{ITokenClaims} JSON sent in C{connect_document_success}.

        @param user: the user to report when the claims carry none.
        """
        result: dict[str, Any] = {
            "documentId": self.document_id,
            "tenantId": self.tenant_id,
            "scopes": list(self.scopes),
            "user": dict(self.user if self.user is not None else (user or {})),
            "iat": self.issued_at,
            "exp": self.expires_at,
            "ver": self.version,
        }
        if self.token_id is not None:
            result["jti"] = self.token_id
        return result


@attrs.frozen
class ConnectDocumentError:
    """
    Why a C{connect_document} was refused; pushed as
    C{connect_document_error}.

    @ivar code: an HTTP-like status: 400 malformed, 401 bad or expired
        token, 403 not allowed, 500 server failure.
    """

    code: int
    message: str

    def to_json(self) -> dict[str, Any]:
        """The C{connect_document_error} payload: C{{code, message}}."""
        return {"code": self.code, "message": self.message}


@attrs.frozen
class SequencedMessage:
    """
    One op as the service ordered it (Fluid's C{ISequencedDocumentMessage}).

    @ivar client_id: the sender, or C{None} for a system op (join, leave).
    @ivar data: for system ops, the JSON text the client parses (for a join
        C{{clientId, detail}}, for a leave the client id).
    @ivar timestamp: when the op was sequenced, in epoch milliseconds.
    """

    client_id: str | None
    sequence_number: int
    minimum_sequence_number: int
    client_sequence_number: int
    reference_sequence_number: int
    type: str
    contents: Any
    timestamp: int
    metadata: Any = None
    data: str | None = None
    compression: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The C{ISequencedDocumentMessage} JSON; unset optionals omitted."""
        result: dict[str, Any] = {
            "clientId": self.client_id,
            "sequenceNumber": self.sequence_number,
            "minimumSequenceNumber": self.minimum_sequence_number,
            "clientSequenceNumber": self.client_sequence_number,
            "referenceSequenceNumber": self.reference_sequence_number,
            "type": self.type,
            "contents": self.contents,
            "timestamp": self.timestamp,
        }
        if self.metadata is not None:
            result["metadata"] = self.metadata
        if self.data is not None:
            result["data"] = self.data
        if self.compression is not None:
            result["compression"] = self.compression
        return result


def op_payload(
    document_id: str, messages: Sequence[SequencedMessage]
) -> dict[str, Any]:
    """
    The payload of an C{op} push: C{{documentId, op: [...]}} in SN order,
    one of the shapes the Levee driver accepts.
    """
    return {
        "documentId": document_id,
        "op": [message.to_json() for message in messages],
    }


@attrs.frozen
class NackContent:
    """
    Why an op was refused (Fluid's C{INackContent}).

    @ivar type: one of C{ThrottlingError}, C{InvalidScopeError},
        C{BadRequestError}, C{LimitExceededError}.
    @ivar retry_after: seconds the client should wait before reconnecting.
    """

    code: int
    type: str
    message: str
    retry_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The C{INackContent} JSON."""
        result: dict[str, Any] = {
            "code": self.code,
            "type": self.type,
            "message": self.message,
        }
        if self.retry_after is not None:
            result["retryAfter"] = self.retry_after
        return result


@attrs.frozen
class NackMessage:
    """
    One refused op (Fluid's C{INack}).

    @ivar operation: the op as the client sent it, or C{None} when the
        refusal is about the whole submission.
    @ivar sequence_number: the MSN when the sequencer refused the op (as
        deli does), or -1 for a refusal made before sequencing.
    """

    operation: Any
    sequence_number: int
    content: NackContent

    def to_json(self) -> dict[str, Any]:
        """The C{INack} JSON."""
        return {
            "operation": self.operation,
            "sequenceNumber": self.sequence_number,
            "content": self.content.to_json(),
        }


def nack_payload(nacks: Sequence[NackMessage]) -> dict[str, Any]:
    """
    The payload of a C{nack} push.

    It is Levee's wire shape, C{{clientId: "", nacks: [...]}}, and it also
    carries the first nack's C{operation}, C{sequenceNumber} and C{content}
    at the top level: the Levee driver reads the payload as a single
    C{INack}, and the loader acts on the first nack's C{content} only.
    """
    if not nacks:
        raise ValueError("a nack push needs at least one nack")
    return {"clientId": "", "nacks": [nack.to_json() for nack in nacks]} | (
        nacks[0].to_json()
    )


def join_signal(client_id: str, client: Mapping[str, Any]) -> dict[str, Any]:
    """
    The system signal that announces a connection to the document's
    audience: C{clientId} null and C{content} the JSON text of
    C{{type: "join", content: {clientId, client}}}.
    """
    content = {"type": JOIN, "content": {"clientId": client_id, "client": client}}
    return {"clientId": None, "content": json_string(content)}


def leave_signal(client_id: str) -> dict[str, Any]:
    """
    The system signal that removes a connection from the audience:
    C{content} the JSON text of C{{type: "leave", content: clientId}}.
    """
    return {
        "clientId": None,
        "content": json_string({"type": LEAVE, "content": client_id}),
    }


_VERSION = re.compile(r"^\s*(\^|~|=)?v?(\d+)\.(\d+)\.(\d+)\s*$")


def _version_interval(
    version_range: str,
) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """
    The half-open interval C{[low, high)} of versions a simple semver range
    (C{^x.y.z}, C{~x.y.z} or an exact C{x.y.z}) admits, or C{None} when the
    range has another form.
    """
    match = _VERSION.match(version_range)
    if match is None:
        return None
    operator, *numbers = match.groups()
    major, minor, patch = (int(number) for number in numbers)
    low = (major, minor, patch)
    if operator == "^":
        if major > 0:
            return low, (major + 1, 0, 0)
        if minor > 0:
            return low, (0, minor + 1, 0)
        return low, (0, 0, patch + 1)
    if operator == "~":
        return low, (major, minor + 1, 0)
    return low, (major, minor, patch + 1)


def negotiate_version(
    client_versions: Sequence[str],
    server_versions: Sequence[str] = SERVER_PROTOCOL_VERSIONS,
) -> str | None:
    """
    Pick the protocol version as nexus does: walking the client's ranges in
    its order of preference, the first server range that overlaps one.

    @return: the chosen server range, or C{None} when none overlaps.
    """
    for client_range in client_versions:
        client_interval = _version_interval(client_range)
        if client_interval is None:
            continue
        client_low, client_high = client_interval
        for server_range in server_versions:
            server_interval = _version_interval(server_range)
            if server_interval is None:
                continue
            server_low, server_high = server_interval
            if client_low < server_high and server_low < client_high:
                return server_range
    return None


def connected_response(
    *,
    client_id: str,
    mode: str,
    claims: Mapping[str, Any],
    version: str,
    supported_versions: Sequence[str],
    initial_clients: Sequence[Mapping[str, Any]],
    max_message_size: int,
    block_size: int,
    checkpoint_sequence_number: int,
    timestamp: int,
    submit_signals_v2: bool,
    nonce: str | None = None,
) -> dict[str, Any]:
    """
    The C{connect_document_success} payload (Fluid's C{IConnected}).

    @param claims: the C{ITokenClaims} JSON; its scopes include
        L{DOC_WRITE} whenever C{mode} is C{"write"}.
    @param initial_clients: every connected client as C{{clientId,
        client}}, the new one included (the Levee driver relies on that).
    """
    result: dict[str, Any] = {
        "clientId": client_id,
        "existing": True,
        "maxMessageSize": max_message_size,
        "mode": mode,
        "claims": dict(claims),
        "version": version,
        "supportedVersions": list(supported_versions),
        "serviceConfiguration": {
            "blockSize": block_size,
            "maxMessageSize": max_message_size,
        },
        "initialClients": [dict(client) for client in initial_clients],
        "initialMessages": [],
        "initialSignals": [],
        "supportedFeatures": {"submit_signals_v2": submit_signals_v2},
        "checkpointSequenceNumber": checkpoint_sequence_number,
        "timestamp": timestamp,
    }
    if nonce is not None:
        result["nonce"] = nonce
    return result
