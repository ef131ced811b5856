"""Local stand-ins for Google endpoints: OAuth tokens, IAP's public keys, backend services.

google-auth talks to them for real (it signs a JWT with a service-account key and posts it,
or fetches keys to verify a signed header), so ID-token and IAP code paths run unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.auth import crypt, jwt


class GoogleEndpoints:
    """Issues ID tokens for a made-up service account and signs IAP-style assertions."""

    def __init__(self) -> None:
        self.token_requests = 0
        self.backend_services: list[dict[str, str]] = []
        self.compute_authorization: str | None = None
        self.token_lifetime_s = 3600
        self._rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._ec = ec.generate_private_key(ec.SECP256R1())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> GoogleEndpoints:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def service_account_file(self, folder: Path) -> Path:
        """A key file whose token_uri points here; GOOGLE_APPLICATION_CREDENTIALS can name it."""
        pem = self._rsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        path = folder / "chat-app-key.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "demo-gemma-stack",
                    "private_key_id": "test-key",
                    "private_key": pem,
                    "client_email": "chat-app@demo-gemma-stack.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        return path

    def iap_assertion(self, email: str, audience: str, lifetime_s: int = 600) -> str:
        now = int(time.time())
        signer = crypt.ES256Signer.from_string(self._ec_pem(), key_id="iap-test")
        payload = {
            "iss": "https://cloud.google.com/iap",
            "aud": audience,
            "email": email,
            "sub": f"accounts.google.com:{email}",
            "iat": now,
            "exp": now + lifetime_s,
        }
        return jwt.encode(signer, payload).decode()

    def _ec_pem(self) -> str:
        return self._ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def _id_token(self) -> str:
        now = int(time.time())
        signer = crypt.RSASigner.from_string(
            self._rsa.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            key_id="test-key",
        )
        payload = {"iss": "test", "aud": "test", "iat": now, "exp": now + self.token_lifetime_s}
        return jwt.encode(signer, payload).decode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _json(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                endpoints.token_requests += 1
                # Answers both flows: ID tokens, and access tokens for scoped credentials.
                self._json(
                    {
                        "id_token": endpoints._id_token(),
                        "access_token": "test-access-token",
                        "expires_in": 3600,
                    }
                )

            def do_GET(self) -> None:
                if "/global/backendServices" in self.path:
                    # Compute Engine's backend service list, as the GKE Ingress leaves it.
                    endpoints.compute_authorization = self.headers.get("Authorization")
                    self._json({"items": endpoints.backend_services})
                    return
                public = endpoints._ec.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                self._json({"iap-test": public.decode()})

        return Handler
