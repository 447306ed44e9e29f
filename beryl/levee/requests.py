"""
Parsing of the inbound document-channel events: C{connect_document},
C{submitOp}, C{submitSignal}, C{noop} and C{requestOps}.

Pure functions that never raise: each returns a typed request, or a value
saying what was wrong (a L{ConnectDocumentError}, a L{NackMessage}, or C{None} for
the events Levee silently ignores when malformed).
"""

from __future__ import annotations

from typing import Any, Mapping, TypeGuard

import attrs

from beryl.levee.protocol import (
    OPERATION,
    ConnectDocumentError,
    NackContent,
    NackMessage,
)

__all__ = [
    "ConnectRequest",
    "DocumentMessage",
    "MalformedMessage",
    "NoopRequest",
    "READ",
    "SignalSubmission",
    "SubmitOp",
    "SubmitSignal",
    "WRITE",
    "bad_request_nack",
    "parse_connect",
    "parse_noop",
    "parse_request_ops",
    "parse_submit_op",
    "parse_submit_signal",
]

READ = "read"
WRITE = "write"


def _is_int(value: Any) -> TypeGuard[int]:
    """Whether C{value} is a JSON integer (and not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(value: Any) -> str | None:
    """C{value} when it is a string, else C{None}."""
    return value if isinstance(value, str) else None


def _optional_int(value: Any) -> int | None:
    """C{value} when it is an integer, else C{None}."""
    return value if _is_int(value) else None


@attrs.frozen
class ConnectRequest:
    """
    A well-formed C{connect_document} (Fluid's C{IConnect}).

    @ivar client: the C{IClient} the connection declared; untrusted.
    @ivar mode: the requested mode, C{"write"} or C{"read"}; the granted
        mode may be lower.
    @ivar versions: the client's protocol version ranges, preferred first.
    @ivar submit_signals_v2: whether the client did not opt out of v2
        signals.
    """

    tenant_id: str
    document_id: str
    token: str = attrs.field(repr=False)
    client: Mapping[str, Any]
    mode: str = WRITE
    versions: tuple[str, ...] = ("^0.1.0",)
    submit_signals_v2: bool = True
    nonce: str | None = None


def parse_connect(
    payload: Any, tenant_id: str, document_id: str
) -> ConnectRequest | ConnectDocumentError:
    """
    Check a C{connect_document} payload against the channel's topic, with
    Levee's error codes and messages.

    @param tenant_id: the tenant named by the channel topic.
    @param document_id: the document named by the channel topic.
    """
    if not isinstance(payload, dict):
        return ConnectDocumentError(400, "Invalid connect_document payload")
    tenant = payload.get("tenantId")
    document = payload.get("id")
    client = payload.get("client")
    if not isinstance(tenant, str) or not isinstance(document, str) or client is None:
        return ConnectDocumentError(
            400, "Missing required fields: tenantId, id, token, client"
        )
    token = payload.get("token")
    if not isinstance(token, str) or not token:
        return ConnectDocumentError(401, "Missing authentication token")
    if tenant != tenant_id or document != document_id:
        return ConnectDocumentError(400, "Tenant/document ID mismatch with topic")
    mode = payload.get("mode", WRITE)
    versions = payload.get("versions", ["^0.1.0"])
    features = payload.get("supportedFeatures", {})
    nonce = payload.get("nonce")
    if (
        not isinstance(client, dict)
        or mode not in (WRITE, READ)
        or not isinstance(versions, list)
        or not all(isinstance(version, str) for version in versions)
        or not isinstance(features, dict)
        or (nonce is not None and not isinstance(nonce, str))
    ):
        return ConnectDocumentError(400, "Invalid connection message")
    return ConnectRequest(
        tenant_id=tenant,
        document_id=document,
        token=token,
        client=client,
        mode=mode,
        versions=tuple(versions),
        submit_signals_v2=features.get("submit_signals_v2") is not False,
        nonce=nonce,
    )


@attrs.frozen
class DocumentMessage:
    """
    One op a client submitted (Fluid's C{IDocumentMessage}).

    @ivar raw: the op exactly as received, echoed in a nack.
    """

    client_sequence_number: int
    reference_sequence_number: int
    type: str
    contents: Any
    raw: Any
    metadata: Any = None
    compression: str | None = None


@attrs.frozen
class MalformedMessage:
    """
    An element of C{messageBatches} that is not a valid op; the session nacks
    it in its place in the submission.
    """

    raw: Any
    reason: str


@attrs.frozen
class SubmitOp:
    """
    A C{submitOp}: the sender and its ops, flattened across batches in the
    order sent.
    """

    client_id: str
    messages: tuple[DocumentMessage | MalformedMessage, ...]


def bad_request_nack(
    message: str,
    code: int = 400,
    *,
    operation: Any = None,
    sequence_number: int = -1,
) -> NackMessage:
    """
    A nack with a refusal the client caused.  By default it is about a
    whole submission rather than one op, as the channel sends it:
    C{operation} null and C{sequenceNumber} -1.

    @param code: 400 gives a C{BadRequestError}, 403 an C{InvalidScopeError}.
    @param operation: the refused op as the client sent it.
    @param sequence_number: the MSN when the sequencer refused the op.
    """
    error_type = "InvalidScopeError" if code == 403 else "BadRequestError"
    return NackMessage(
        operation, sequence_number, NackContent(code, error_type, message)
    )


def _parse_document_message(raw: Any) -> DocumentMessage | MalformedMessage:
    """Check one submitted op."""
    if not isinstance(raw, dict):
        return MalformedMessage(raw, "Malformed op: not an object")
    csn = raw.get("clientSequenceNumber")
    rsn = raw.get("referenceSequenceNumber")
    op_type = raw.get("type", OPERATION)
    compression = raw.get("compression")
    if not _is_int(csn) or not _is_int(rsn):
        return MalformedMessage(
            raw,
            "Malformed op: clientSequenceNumber and referenceSequenceNumber "
            "must be integers",
        )
    if not isinstance(op_type, str):
        return MalformedMessage(raw, "Malformed op: type must be a string")
    return DocumentMessage(
        client_sequence_number=csn,
        reference_sequence_number=rsn,
        type=op_type,
        contents=raw.get("contents"),
        raw=raw,
        metadata=raw.get("metadata"),
        compression=compression if isinstance(compression, str) else None,
    )


def parse_submit_op(payload: Any) -> SubmitOp | NackMessage:
    """
    Check a C{submitOp} payload C{{clientId, messageBatches}}.  Each batch
    may be a list of ops or a single op.

    @return: the submission, or the nack for a payload that is not one.
    """
    if not isinstance(payload, dict):
        return bad_request_nack(
            "Malformed submitOp: missing clientId or messageBatches"
        )
    client_id = payload.get("clientId")
    batches = payload.get("messageBatches")
    if not isinstance(client_id, str) or not isinstance(batches, list):
        return bad_request_nack(
            "Malformed submitOp: missing clientId or messageBatches"
        )
    messages: list[DocumentMessage | MalformedMessage] = []
    for batch in batches:
        for raw in batch if isinstance(batch, list) else [batch]:
            messages.append(_parse_document_message(raw))
    return SubmitOp(client_id, tuple(messages))


@attrs.frozen
class SignalSubmission:
    """
    One signal a client asked to relay.

    @ivar content: relayed verbatim (normally JSON text).
    @ivar v2: whether it came as a v2 signal object (C{{content, type?,
        targetClientId?, ...}}); a v1 entry is relayed as C{{clientId,
        content}} only.
    @ivar targeted_clients: Levee's extension: relay only to these clients.
    @ivar ignored_clients: Levee's extension: relay to all but these.
    """

    content: Any
    v2: bool = False
    type: str | None = None
    client_connection_number: int | None = None
    reference_sequence_number: int | None = None
    target_client_id: str | None = None
    targeted_clients: tuple[str, ...] = ()
    ignored_clients: tuple[str, ...] = ()


@attrs.frozen
class SubmitSignal:
    """A C{submitSignal}: the sender and its signals in the order sent."""

    client_id: str
    signals: tuple[SignalSubmission, ...]


def _client_ids(value: Any) -> tuple[str, ...]:
    """A list of client ids, keeping only the strings."""
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _parse_signal(entry: Any, envelope: Mapping[str, Any]) -> SignalSubmission:
    """
    One C{contentBatches} entry: an object with C{content} is a v2 signal;
    anything else (normally the JSON text of a v1 envelope) is v1 content.
    """
    if not isinstance(entry, dict) or "content" not in entry:
        return SignalSubmission(content=entry)
    return SignalSubmission(
        content=entry["content"],
        v2=True,
        type=_optional_str(entry.get("type")),
        client_connection_number=_optional_int(entry.get("clientConnectionNumber")),
        reference_sequence_number=_optional_int(entry.get("referenceSequenceNumber")),
        target_client_id=_optional_str(entry.get("targetClientId")),
        targeted_clients=_client_ids(
            entry.get("targetedClients", envelope.get("targetedClients"))
        ),
        ignored_clients=_client_ids(
            entry.get("ignoredClients", envelope.get("ignoredClients"))
        ),
    )


def parse_submit_signal(payload: Any) -> SubmitSignal | None:
    """
    Check a C{submitSignal} payload C{{clientId, contentBatches}}, accepting
    the batches flat (C{[signal, ...]}) or nested (C{[[signal, ...]]}).

    @return: the submission, or C{None} when malformed (Levee ignores those).
    """
    if not isinstance(payload, dict):
        return None
    client_id = payload.get("clientId")
    batches = payload.get("contentBatches")
    if not isinstance(client_id, str) or not isinstance(batches, list):
        return None
    signals: list[SignalSubmission] = []
    for batch in batches:
        for entry in batch if isinstance(batch, list) else [batch]:
            signals.append(_parse_signal(entry, payload))
    return SubmitSignal(client_id, tuple(signals))


@attrs.frozen
class NoopRequest:
    """Levee's C{noop} event: the client has processed up to this SN."""

    client_id: str
    reference_sequence_number: int


def parse_noop(payload: Any) -> NoopRequest | None:
    """
    Check a C{noop} payload C{{clientId, referenceSequenceNumber}}.

    @return: the request, or C{None} when malformed (ignored).
    """
    if not isinstance(payload, dict):
        return None
    client_id = payload.get("clientId")
    reference = payload.get("referenceSequenceNumber")
    if not isinstance(client_id, str) or not _is_int(reference):
        return None
    return NoopRequest(client_id, reference)


def parse_request_ops(payload: Any) -> int | None:
    """
    Check a C{requestOps} payload C{{from}}.

    @return: the SN after which ops are wanted, or C{None} when malformed
        (ignored).
    """
    if not isinstance(payload, dict):
        return None
    after = payload.get("from")
    return after if _is_int(after) else None
