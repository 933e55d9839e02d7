"""Where a study lives: storage URLs, their database drivers, and the storage objects Optuna gets.

A storage is an RDB URL (SQLite, PostgreSQL, MySQL/MariaDB) or the path of a journal file. RDB
storages get heartbeats and retry a trial whose worker died (:class:`~optuna_diffusion.compat.HeartbeatRDBStorage`),
including one killed before its first heartbeat. Opening an RDB storage creates its tables, so the
command line checks everything else first.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import optuna

from .compat import HeartbeatRDBStorage
from .errors import ConfigError, StorageError, first_line

# SQLAlchemy's default driver for a bare URL, and the drivers it can name instead, by preference.
_DRIVERS = {
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2"), ("pg8000", "pg8000")),
    "mysql": (("mysqldb", "MySQLdb"), ("pymysql", "pymysql"), ("mysqlconnector", "mysql.connector")),
    "mariadb": (("mysqldb", "MySQLdb"), ("pymysql", "pymysql"), ("mysqlconnector", "mysql.connector")),
}
_INSTALL_HINT = {"postgresql": "psycopg2-binary (or psycopg)", "mysql": "pymysql", "mariadb": "pymysql"}

# What PostgreSQL and MySQL/MariaDB drivers say when a server that was there is restarting or dropped the
# connection: worth waiting for. A refused connection is not among them: a wrong host or port says the same.
_UNREACHABLE = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "lost connection to",
    "server has gone away",
)
OPEN_WAITS = (1.0, 2.0, 4.0)
"""Seconds waited before each new try when the database is unreachable while the storage opens."""


SQLITE_PREFIX = "sqlite:///"
"""How a SQLite storage URL begins; the file's path follows."""


def sqlite_file(storage_url: str) -> Path | None:
    """The file of a SQLite storage URL, else None."""
    return Path(storage_url[len(SQLITE_PREFIX) :]) if storage_url.startswith(SQLITE_PREFIX) else None


def check_stored(storage_url: str) -> None:
    """A one-line error if ``storage_url`` is a SQLite file that does not exist (nothing is created)."""
    path = sqlite_file(storage_url)
    if path is not None and not path.is_file():
        raise ConfigError(f"no storage at {storage_url}; run optuna-diffusion optimize first")


def default_storage_url(name: str) -> str:
    """A SQLite file named after the study, in the working directory."""
    return f"{SQLITE_PREFIX}{name}.db"


def artifact_dir(storage_url: str, name: str) -> Path:
    """Where trial images go: ``NAME-artifacts/`` next to a SQLite file, else in the working directory."""
    path = sqlite_file(storage_url)
    return path.with_name(f"{name}-artifacts") if path is not None else Path(f"{name}-artifacts")


def redacted(url: str) -> str:
    """``url`` without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def resolve_storage_url(url: str) -> str:
    """``url`` with a database driver that is installed, or a one-line error saying which to install.

    A bare ``postgresql://`` or ``mysql://`` URL means SQLAlchemy's default driver (psycopg and
    mysqlclient in SQLAlchemy 2.1), which is often not the one installed (the test extra installs
    psycopg2-binary and pymysql). Such a URL gets the first installed driver instead; a URL that
    names its driver (``postgresql+psycopg2://``) is left as it is.
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if scheme not in _DRIVERS:
        return url
    for driver, module in _DRIVERS[scheme]:
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            return f"{scheme}+{driver}://{rest}"
    raise ConfigError(
        f"storage {redacted(url)} needs a {scheme} driver: pip install {_INSTALL_HINT[scheme]}, "
        f"or name an installed one in the URL ({scheme}+DRIVER://...)"
    )


def check_storage_url(url: str) -> None:
    """Check what can be checked of a storage without touching it (nothing is created)."""
    url = resolve_storage_url(url)
    path = sqlite_file(url)
    if path is not None:
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(f"cannot open storage {url}: folder {folder} does not exist")
    elif "://" not in url and not Path(url).parent.is_dir():
        raise ConfigError(f"cannot open journal file {url}: folder {Path(url).parent} does not exist")


def open_storage(url: str, *, heartbeat_interval: int = 30) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: an RDB URL (heartbeat + retry of stale trials) or a journal file path.

    A database that is down or restarting while the storage opens is waited for (:data:`OPEN_WAITS`),
    then a :class:`StorageError` (rerun to resume); any other failure is a one-line :class:`ConfigError`.
    """
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    resolved = resolve_storage_url(url)
    for wait in (*OPEN_WAITS, None):
        try:
            return HeartbeatRDBStorage(
                resolved,
                heartbeat_interval=heartbeat_interval,
                grace_period=heartbeat_interval * 3,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs={"pool_pre_ping": True} if not resolved.startswith("sqlite") else None,
            )
        except Exception as error:  # SQLAlchemy raises many kinds; all mean the same to the user
            if not unreachable(error):
                raise ConfigError(f"cannot open storage {redacted(url)}: {first_line(error)}") from None
            if wait is None:
                raise StorageError(
                    f"the database of storage {redacted(url)} went away while it opened ({first_line(error)}); "
                    "run the same command again to resume"
                ) from None
            time.sleep(wait)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database server is restarting or dropped the connection."""
    message = str(error).lower()
    return any(marker in message for marker in _UNREACHABLE)


def storage_files(storage_url: str, name: str) -> list[Path]:
    """The files a run of study ``name`` creates on this machine: the SQLite or journal file, and ``NAME-artifacts/``."""
    database = sqlite_file(storage_url) or (Path(storage_url) if "://" not in storage_url else None)
    return [database, artifact_dir(storage_url, name)] if database is not None else [artifact_dir(storage_url, name)]


def holds_results(storage: optuna.storages.BaseStorage, study_names: list[str] | None = None) -> bool:
    """Whether a study of ``storage`` (of ``study_names`` when given) holds a completed trial."""
    complete = (optuna.trial.TrialState.COMPLETE,)
    names = [study.study_name for study in storage.get_all_studies()]
    return any(
        storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False, states=complete)
        for name in names if study_names is None or name in study_names
    )


def remove_created(paths: list[Path], storage: optuna.storages.BaseStorage | None, study_names: list[str]) -> None:
    """Remove ``paths`` -- files and folders a failed start created -- unless they hold results by now.

    ``paths`` must be only what did not exist before the run (:func:`storage_files` taken before it
    started). The storage's file stays if any study in it holds a completed trial (another worker's,
    started meanwhile, or this run's); the artifact folder stays if one of ``study_names`` (the run's
    studies) does; an unreadable storage keeps everything.
    """
    try:
        keep_file = storage is not None and holds_results(storage)
        keep_folder = storage is not None and holds_results(storage, study_names)
    except Exception:  # an unreadable storage: leave what is there
        return
    for path in paths:
        if path.is_dir() and not keep_folder:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and not keep_file:
            engine = getattr(storage, "engine", None)
            if engine is not None:
                engine.dispose()  # close SQLite's file before it goes
            path.unlink(missing_ok=True)
