"""
Tests for the C{--levee-*} options of C{twistd beryl} and the token helpers
behind them (L{beryl.levee.auth}).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.auth import TenantTokens, mint_token, parse_tenants
from beryl.levee.protocol import DOC_READ, Claims, ConnectDocumentError
from beryl.tap import Options

SECRET = "a-tenant-secret-of-32-bytes-or-more"


class OptionTests(SynchronousTestCase):
    """Parsing the Levee options."""

    def parse(self, *argv: str) -> Options:
        """Parse C{argv} as twistd would."""
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_tenants(self) -> None:
        """--levee-tenant repeats and --levee-tenants-file adds ID:SECRET lines."""
        path = self.mktemp()
        with open(path, "w") as file:
            file.write("# dev tenants\n\nfile-tenant: s3cret \n")
        options = self.parse(
            "--levee",
            "--levee-tenant",
            "a:one",
            "--levee-tenant",
            "b:two:with-colon",
            "--levee-tenants-file",
            path,
        )
        self.assertEqual(
            options["levee-tenants"],
            {"a": "one", "b": "two:with-colon", "file-tenant": "s3cret"},
        )
        self.assertEqual(options["levee-data"], "./levee-data")

    def test_errors(self) -> None:
        """Options without --levee, bad tenants and a mint without tenants are usage errors."""
        missing = self.mktemp()
        for argv, words in (
            (["--levee-tenant", "a:b"], "need --levee"),
            (["--levee-dev-token-mint"], "needs --levee"),
            (["--levee-data", "/tmp/x"], "needs --levee"),
            (["--levee", "--levee-tenant", "nosecret"], "ID:SECRET"),
            (["--levee", "--levee-tenants-file", missing], "--levee-tenants-file"),
            (["--levee", "--levee-dev-token-mint"], "needs --levee-tenant"),
        ):
            error = self.assertRaises(UsageError, self.parse, *argv)
            self.assertIn(words, str(error))

    def test_parse_tenants_names_bad_line(self) -> None:
        """A bad tenants line is reported by number."""
        error = self.assertRaises(ValueError, parse_tenants, ["a:b", "oops"])
        self.assertIn("line 2", str(error))


class TenantTokenTests(SynchronousTestCase):
    """HS256 validation with per-tenant secrets."""

    def test_round_trip(self) -> None:
        """A minted token validates to its claims."""
        token = mint_token(
            "t", "d", SECRET, scopes=(DOC_READ,), user={"id": "u"}, now=1000
        )
        claims = TenantTokens({"t": SECRET})("t", "d", token)
        assert isinstance(claims, Claims)
        self.assertEqual(
            (claims.tenant_id, claims.document_id, claims.scopes, claims.user),
            ("t", "d", (DOC_READ,), {"id": "u"}),
        )
        self.assertEqual((claims.issued_at, claims.expires_at), (1000, 4600))

    def test_refused(self) -> None:
        """Unknown tenants, wrong secrets, other algorithms and missing claims are 401."""
        import jwt

        validate = TenantTokens({"t": SECRET})
        tokens = [
            mint_token("t", "d", SECRET),
            mint_token("t", "d", "another-secret-of-32-bytes-or-more"),
            jwt.encode(
                {"tenantId": "t", "documentId": "d", "exp": 9e9},
                cast(Any, None),
                "none",
            ),
            jwt.encode({"tenantId": "t", "documentId": "d"}, SECRET, "HS256"),
            jwt.encode(
                {"tenantId": "t", "documentId": "d", "exp": 9e9, "scopes": "doc:read"},
                SECRET,
                "HS256",
            ),
        ]
        verdicts = [validate("u", "d", tokens[0])] + [
            validate("t", "d", token) for token in tokens[1:]
        ]
        for verdict in verdicts:
            self.assertEqual(
                verdict, ConnectDocumentError(401, "Invalid authentication token")
            )


class ServiceTests(SynchronousTestCase):
    """C{make_beryl_service} with C{--levee}."""

    def test_routes_mounted(self) -> None:
        """--levee mounts the HTTP routes beside /socket."""
        from twisted.internet.testing import MemoryReactorClock

        from beryl.tap import make_beryl_service

        options = Options()
        options.parseOptions(
            ["--levee", "--levee-data", ":memory:", "--levee-tenant", f"t:{SECRET}"]
        )
        service = make_beryl_service(options, MemoryReactorClock())
        site = cast(Any, service.getServiceNamed("web")).factory
        self.assertEqual(
            sorted(site.resource.children),
            [b"", b"api", b"deltas", b"documents", b"favicon.ico", b"repos", b"socket"],
        )
