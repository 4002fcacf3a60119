"""A migrated, empty SQLite store per MLflow server, copied into each new stack.

A fresh SQLite file costs MLflow its whole chain of schema migrations at start (about 1 s on two
quiet cores, 3-6 s loaded). The first stack whose server runs through the direct entry
(:mod:`.mlflow_entry`) saves the database it has just created and migrated, before anything is
written to it, under the user cache dir, one per MLflow version and server Python; later stacks
copy it into their data dir, and MLflow then only checks that the schema is current.

Only for the stack's default SQLite store (never a PostgreSQL or other user-given URI), only into a
data dir without an ``mlflow.db`` yet. The template is written beside its final name and renamed
into place (by the entry), and copied the same way here, so parallel stacks (xdist workers) never
read half a file. Any problem means migrating in place, as before, with a debug log line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
from pathlib import Path

from .config import user_cache_dir
from .mlflow_entry import TEMPLATE_OPTION

__all__ = ["CACHE_DIR_ENV", "DATABASE_NAME", "prepare_database", "template_path"]

#: Overrides the cache folder (default ``~/.cache/pytest-hokusai``).
CACHE_DIR_ENV = "HOKUSAI_STACK_CACHE_DIR"
DATABASE_NAME = "mlflow.db"
_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    chosen = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(chosen).expanduser() if chosen else user_cache_dir()


def template_path(mlflow_version: str, python: str) -> Path:
    """Where the template for MLflow ``mlflow_version`` run by ``python`` lives."""
    # abspath, not realpath: every virtualenv's python is a symlink to the same base interpreter
    which = hashlib.sha256(os.path.abspath(python).encode()).hexdigest()[:12]
    safe_version = "".join(c if c.isalnum() or c in ".-" else "_" for c in mlflow_version)
    return cache_dir() / "mlflow-sqlite" / f"mlflow-{safe_version}-{which}.db"


def _usable(template: Path) -> bool:
    """A complete MLflow store: a schema version and nothing but the Default experiment."""
    try:
        with sqlite3.connect(f"file:{template}?mode=ro", uri=True) as db:
            versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = db.execute("SELECT count(*) FROM experiments").fetchone()
        db.close()
    except sqlite3.Error as exc:
        _log.debug("MLflow SQLite template %s unusable: %s", template, exc)
        return False
    return len(versions) == 1 and experiments == (1,)


def prepare_database(data_dir: Path, mlflow_version: str, python: str, *, direct: bool) -> list[str]:
    """Copy the template to ``data_dir/mlflow.db`` if there is one; return the entry's arguments.

    Returns ``[]`` when the database was copied in (or already exists, or nothing can be done),
    else, for the direct entry, the option asking it to save the template after migrating.
    """
    database = Path(data_dir) / DATABASE_NAME
    if database.exists():
        return []
    template = template_path(mlflow_version, python)
    if template.is_file() and _usable(template):
        partial = database.with_name(f".{DATABASE_NAME}.{os.getpid()}.partial")
        try:
            shutil.copyfile(template, partial)
            os.replace(partial, database)
            return []
        except OSError as exc:
            _log.debug("MLflow SQLite template %s not copied (migrating in place): %s", template, exc)
            partial.unlink(missing_ok=True)
    elif template.exists():
        _log.debug("MLflow SQLite template %s replaced: not a complete store", template)
    if not direct:
        return []
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _log.debug("MLflow SQLite template dir %s not made (migrating in place): %s", template.parent, exc)
        return []
    return [TEMPLATE_OPTION, str(template)]
