"""A real SMTP server on loopback (aiosmtpd) that records the messages and logins it receives."""

from __future__ import annotations

import email
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from tests.support.net import free_port


@dataclass
class SmtpRecorder:
    """What the server received: every message, and every AUTH login as (login, password)."""

    port: int
    messages: list[Message] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def connection(self) -> str:
        """An Airflow SMTP connection (AIRFLOW_CONN_... JSON) to this server: no TLS, no login."""
        extra = {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost", "retry_limit": 1}
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra})

    def bodies(self, subject_part: str) -> list[str]:
        """The text of each message whose subject contains `subject_part`."""
        return [message_text(m) for m in self.messages if subject_part in str(m["Subject"])]


def message_text(message: Message) -> str:
    """The decoded text of every non-multipart part, joined by newlines."""
    parts = message.walk() if message.is_multipart() else [message]
    texts = []
    for part in parts:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts.append(payload.decode(part.get_content_charset() or "utf-8"))
    return "\n".join(texts)


@contextmanager
def smtp_recorder() -> Iterator[SmtpRecorder]:
    """Serve SMTP on a free port for a `with` block.

    AUTH is offered without TLS (loopback only) and every login is accepted and recorded;
    a client that does not log in can send all the same.
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    recorder = SmtpRecorder(free_port())

    def authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        recorder.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # the name aiosmtpd calls
            recorder.messages.append(email.message_from_bytes(envelope.content))
            return "250 Message accepted for delivery"

    controller = Controller(
        Handler(), hostname="127.0.0.1", port=recorder.port, authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()
