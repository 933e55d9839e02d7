"""Storage URLs: the installed driver for a bare URL, nothing created before a search can start."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import optuna
import pytest

from optuna_diffusion.errors import ConfigError
from optuna_diffusion.storage import artifact_dir, check_storage_url, open_storage, redacted, resolve_storage_url


def installed_only(monkeypatch, *modules: str) -> None:
    """Make importlib see exactly ``modules`` among the database drivers, installed or not."""
    real = importlib.util.find_spec
    drivers = {"psycopg", "psycopg2", "pg8000", "MySQLdb", "pymysql", "mysql"}

    def find_spec(name, *args):
        if name not in drivers:
            return real(name, *args)
        return importlib.machinery.ModuleSpec(name, None) if name in modules else None

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_bare_url_gets_the_installed_driver(monkeypatch):
    installed_only(monkeypatch, "psycopg2", "pymysql")
    assert resolve_storage_url("postgresql://me@db/optuna") == "postgresql+psycopg2://me@db/optuna"
    assert resolve_storage_url("mysql://me:pw@db/optuna") == "mysql+pymysql://me:pw@db/optuna"
    installed_only(monkeypatch, "psycopg")
    assert resolve_storage_url("postgresql://me@db/optuna") == "postgresql+psycopg://me@db/optuna"
    # A URL that names its driver, SQLite and journal files are left alone.
    for url in ("postgresql+pg8000://me@db/x", "sqlite:///x.db", "runs/journal.log"):
        assert resolve_storage_url(url) == url


def test_a_bare_url_without_any_driver_says_what_to_install(monkeypatch):
    installed_only(monkeypatch)
    with pytest.raises(ConfigError) as info:
        resolve_storage_url("postgresql://me:secret@db/optuna")
    message = str(info.value)
    assert "pip install psycopg2-binary" in message and "postgresql+DRIVER://" in message and "secret" not in message


def test_a_bare_postgresql_url_opens_with_the_test_extra():
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 is not installed")
    try:
        storage = open_storage("postgresql://postgres@127.0.0.1:5432/test")
        storage.get_all_studies()
    except ConfigError as error:
        pytest.skip(f"no PostgreSQL here: {error}")
    assert isinstance(storage, optuna.storages.RDBStorage)


def test_checking_a_storage_creates_nothing(tmp_path):
    check_storage_url(f"sqlite:///{tmp_path / 'new.db'}")
    check_storage_url(str(tmp_path / "journal.log"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="does not exist"):
        check_storage_url(f"sqlite:///{tmp_path / 'no' / 'such.db'}")


def test_artifacts_sit_beside_a_sqlite_file_and_passwords_are_hidden(tmp_path):
    assert artifact_dir(f"sqlite:///{tmp_path / 'digits.db'}", "digits") == tmp_path / "digits-artifacts"
    assert str(artifact_dir("postgresql://u@h/db", "digits")) == "digits-artifacts"
    assert redacted("mysql+pymysql://root:secret@host/db") == "mysql+pymysql://root:***@host/db"


class _Dropped(Exception):
    """What psycopg2 says when PostgreSQL restarts under an open connection."""

    def __init__(self) -> None:
        super().__init__("(psycopg2.OperationalError) server closed the connection unexpectedly\n\tThis probably means ...")


def test_a_database_restarting_while_the_storage_opens_is_waited_for(monkeypatch):
    import optuna_diffusion.storage as storage

    attempts, waits = [], []
    real = storage.HeartbeatRDBStorage

    def flaky(url, **kwargs):
        attempts.append(url)
        if len(attempts) < 3:
            raise _Dropped()
        return real(url, **kwargs)

    monkeypatch.setattr(storage, "HeartbeatRDBStorage", flaky)
    monkeypatch.setattr(storage.time, "sleep", waits.append)
    assert open_storage("sqlite:///:memory:") is not None
    assert len(attempts) == 3 and waits == list(storage.OPEN_WAITS[:2])


def test_a_database_that_stays_away_is_a_storage_error_that_says_rerun(monkeypatch):
    import optuna_diffusion.storage as storage
    from optuna_diffusion.errors import StorageError

    monkeypatch.setattr(storage, "HeartbeatRDBStorage", lambda url, **kwargs: (_ for _ in ()).throw(_Dropped()))
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    with pytest.raises(StorageError, match="went away while it opened .*run the same command again") as raised:
        open_storage("postgresql+psycopg2://me:secret@127.0.0.1:5432/test")
    assert raised.value.exit_code == 3 and "secret" not in str(raised.value)
