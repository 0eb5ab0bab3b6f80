"""The service token: where it comes from, how it is stored, how a call is checked."""

from __future__ import annotations

import os
import stat

import pytest
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from serve.auth import TOKEN_ENV, check, load_token, write_token_file


def bearer(token: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def test_token_file_is_private_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token = write_token_file(tmp_path / "serve.token")
    assert len(token) >= 40 and stat.S_IMODE(os.stat(tmp_path / "serve.token").st_mode) == 0o600
    assert load_token(str(tmp_path / "serve.token")) == token
    assert write_token_file(tmp_path / "serve.token") != token          # a new one each time
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    assert load_token(str(tmp_path / "serve.token")) == "from-the-environment"
    monkeypatch.delenv(TOKEN_ENV)
    assert load_token(None) is None


def test_bad_token_files_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="token_file .*missing.token does not exist"):
        load_token(str(tmp_path / "missing.token"))
    (tmp_path / "empty.token").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.token is empty"):
        load_token(str(tmp_path / "empty.token"))


@pytest.mark.parametrize("server, sent, says", [
    (None, bearer("anything"), "this server has none configured"),     # never falls open
    ("s3cret", None, "needs a bearer token"),
    ("s3cret", bearer("s3cre"), "wrong bearer token"),
    ("s3cret", bearer("s3cret "), "wrong bearer token"),
])
def test_check_refuses_with_401_and_never_echoes_the_token(server, sent, says):
    with pytest.raises(HTTPException) as err:
        check(server, sent, "POST /events")
    assert err.value.status_code == 401 and says in err.value.detail
    assert err.value.headers == {"WWW-Authenticate": "Bearer"}
    assert "s3cret" not in err.value.detail


def test_check_accepts_the_token():
    assert check("s3cret", bearer("s3cret"), "POST /events") is None
