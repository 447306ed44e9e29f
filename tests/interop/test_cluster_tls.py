"""
The TLS example of C{docs/security.md}: two real C{twistd beryl} nodes whose
cluster port is an C{ssl:} server endpoint and whose peers are C{tls:}
client endpoints, with a certificate made for the test, and the cluster
secret on top.
"""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    BerylServer,
    _unavailable,
    free_port,
    self_signed_certificate,
    unique_topic,
)
from tests.interop.puppet import Puppet


def make_certificate(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """
    A self-signed certificate for C{host}: its key, the certificate, and a
    directory of trusted roots holding it.
    """
    key_path, certificate_path = self_signed_certificate(directory, host)
    roots = directory / "roots"
    roots.mkdir()
    (roots / "cluster-ca.pem").write_bytes(certificate_path.read_bytes())
    return key_path, certificate_path, roots


class ClusterTLSTests(SynchronousTestCase):
    def test_cluster_over_tls(self) -> None:
        """Nodes linked over ssl:/tls: endpoints share presence; plain AMP gets no answer."""
        try:
            import OpenSSL  # noqa: F401
            import service_identity  # noqa: F401
        except ImportError:
            _unavailable(self, "TLS needs pip install 'beryl[tls]'")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        key, certificate, roots = make_certificate(directory, "localhost")
        secret_file = directory / "cluster-secret"
        secret_file.write_text("s3cret\n")
        ports = [free_port(), free_port()]
        servers = []
        for index, name in enumerate(["n1", "n2"]):
            options = [
                "--node-name",
                name,
                "--cluster-port",
                f"ssl:port={ports[index]}:interface=127.0.0.1"
                f":privateKey={key}:certKey={certificate}",
                "--cluster-advertise",
                f"tls:host=localhost:port={ports[index]}:trustRoots={roots}",
                "--cluster-secret-file",
                str(secret_file),
            ]
            if index:
                options += [
                    "--peers",
                    f"tls:host=localhost:port={ports[0]}:trustRoots={roots}",
                ]
            server = BerylServer(directory / f"{name}.log", options, free_port())
            self.addCleanup(server.stop)
            server.start()
            servers.append(server)
        puppet = Puppet(self)
        topic = unique_topic("room")
        for client, server, user in [
            ("a", servers[0], "alice"),
            ("b", servers[1], "bob"),
        ]:
            reply = puppet.join(client, server.url, topic, user=user)
            self.assertEqual(reply, {"status": "ok", "response": {}})
        for client in "ab":
            expected = {"alice": 1, "bob": 1}
            self.assertEqual(puppet.wait_presence(client, expected), expected)
        for server, other in [(servers[0], "n2"), (servers[1], "n1")]:
            self.assertIn(f"Cluster node {other} is up", server.log())
        # The port speaks TLS only: a plain AMP Hello is never answered.
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as plain:
            plain.sendall(amp.AmpBox({b"_command": b"Ping", b"_ask": b"1"}).serialize())
            received = b""
            try:
                while chunk := plain.recv(65536):
                    received += chunk
            except OSError:
                pass
        self.assertNotIn(b"_answer", received)
