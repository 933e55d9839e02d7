"""optuna-dashboard on a study's storage and artifact store."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError, first_line
from .storage import artifact_dir, check_stored, open_storage
from .study_config import StudyConfig


def dashboard_server(config: StudyConfig, storage_url: str, *, host: str = "127.0.0.1", port: int = 8080) -> Any:
    """optuna-dashboard on the study's storage and artifact store, bound to ``host:port`` (0: any free
    port) and ready for ``serve_forever()``; ``shutdown()`` stops it."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    check_stored(storage_url)
    directory = artifact_dir(storage_url, config.name)
    directory.mkdir(parents=True, exist_ok=True)
    app = wsgi(open_storage(storage_url), artifact_store=FileSystemArtifactStore(str(directory)))

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise in a terminal
            pass

    try:
        return make_server(host, port, app, handler_class=QuietHandler)
    except OSError as error:
        raise ConfigError(f"cannot serve the dashboard on {host}:{port}: {first_line(error)}") from None


def serve_dashboard(config: StudyConfig, storage_url: str, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard on the study's storage and artifact store (blocks until stopped)."""
    server = dashboard_server(config, storage_url, host=host, port=port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
