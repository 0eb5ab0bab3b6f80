"""Who may call what: a bearer token for the routes that change state (and, by config, reads).

The token comes from ``HETREC_TOKEN`` in the replica's environment, else from the first
line of ``ServeConfig.token_file`` (a secrets file every serving node can read, mode 0600).
It is never part of the config (Serve shows configs on its dashboard), never logged, and
compared in constant time. A server without a token refuses every protected call: it
never falls open.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from graphs.exceptions import ConfigError, NotFoundError
from graphs.store import atomic_file

TOKEN_ENV = "HETREC_TOKEN"
bearer = HTTPBearer(auto_error=False, description=f"the service token ({TOKEN_ENV} or ServeConfig.token_file)")


def load_token(token_file: str | None) -> str | None:
    """``HETREC_TOKEN``, else the first line of ``token_file``; None when neither is set."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    if token_file is None:
        return None
    path = Path(token_file)
    if not path.is_file():
        raise NotFoundError(f"ServeConfig.token_file {path} does not exist")
    lines = path.read_text().strip().splitlines()
    if not lines or not lines[0].strip():
        raise ConfigError(f"ServeConfig.token_file {path} is empty")
    return lines[0].strip()


def write_token_file(path: str | Path) -> str:
    """A new random token in ``path`` (mode 0600, written whole or not at all); returns it."""
    path, token = Path(path), secrets.token_urlsafe(32)
    with atomic_file(path) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(token + "\n")
    return token


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def check(token: str | None, credentials: HTTPAuthorizationCredentials | None, action: str) -> None:
    """Raise 401 unless ``credentials`` carry ``token``."""
    if token is None:
        raise _unauthorized(f"{action} needs a bearer token and this server has none configured "
                            f"(set {TOKEN_ENV} or ServeConfig.token_file on the server)")
    if credentials is None:
        raise _unauthorized(f"{action} needs a bearer token: header 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise _unauthorized(f"{action}: wrong bearer token")


async def require_write(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
    """Dependency of routes that change state (checked before the body is parsed)."""
    check(request.app.state.token, credentials, f"{request.method} {request.url.path}")


async def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
    """Dependency of read routes: checked only with ``ServeConfig.protect_reads``."""
    if request.app.state.protect_reads:
        check(request.app.state.token, credentials, f"{request.method} {request.url.path}")
