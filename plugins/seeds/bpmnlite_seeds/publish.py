"""Task types of the publish example (``processes/publish_project.bpmn``, ``processes/publish_cleanup.bpmn``).

A launcher checks its input and starts a worker workflow in the background;
the worker prepares a project's files, hands them to a hosting provider,
updates the site index and reports its progress under one key,
``publish:<project>``. When the provider refuses, the error port logs the raw
answer for operators and tells the user something neutral. An hourly
clean-up removes the staging folders of publishes that have ended.

Everything the example keeps lives in one folder, ``$BPMNLITE_PUBLISH_DIR``
(default ``publish-data`` in the current directory), so that worker processes
on the same machine share it::

    staging/<project>/manifest.json   what was staged, and whether the publish ended
    site/<project>.json               what the (fake) hosting provider holds
    site/index.json                   the site's list of published projects
    operators.log                     one JSON line per provider error: for operators only

The provider is a stand-in for an external hosting API: it refuses
executables (``*.exe``, a business answer: HTTP 422) and times out on disk
images (``*.iso``, a technical failure that is retried, then becomes an
incident). Every write is keyed (by project, or by the step's idempotency key),
so a retried step does the same thing again instead of something twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from bpmnlite import BpmnError, TaskContext

log = logging.getLogger("bpmnlite_seeds.publish")

TITLE = "Publishing project"
TOTAL = 4
SITE_URL = "https://sites.example.org"
#: what a user is told when the provider refuses: no provider text, a reference for support
FAILED_NOTICE = "We could not publish your project. Our team has been notified (reference {ref})."

_PROJECT = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


# ---------------------------------------------------------------- the data folder
def data_dir() -> Path:
    """The example's folder (``$BPMNLITE_PUBLISH_DIR``, default ``./publish-data``), created on use."""
    path = Path(os.environ.get("BPMNLITE_PUBLISH_DIR", "publish-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress_key(project: str) -> str:
    """The one progress item every step of a project's publish advances."""
    return f"publish:{project}"


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically (write a temporary file, then rename it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def staging_dir(project: str) -> Path:
    return data_dir() / "staging" / project


def _mark(project: str, state: str) -> None:
    manifest = staging_dir(project) / "manifest.json"
    data = _read_json(manifest, {"project": project, "files": []})
    data["state"] = state
    _write_json(manifest, data)


# ---------------------------------------------------------------- the hosting provider (a fake)
class ProviderRejected(Exception):
    """The provider answered, and the answer is no (a business outcome)."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body}")


class FakeHostingProvider:
    """Stands in for an external hosting API, with the rough edges of a real one."""

    host = "upload.cdn-7.hosting.example:8443"

    def upload(self, project: str, files: list[str], upload_id: str) -> dict[str, Any]:
        """Store ``files`` for ``project``; the same ``upload_id`` again is the same upload."""
        for name in files:
            if name.lower().endswith(".exe"):
                body = json.dumps({
                    "error": "E_POLICY_FILETYPE",
                    "detail": f"object '{name}' rejected by content policy 7 for account acct_93b1f2 "
                              f"(bucket prod-eu-sites-0042)",
                    "request_id": f"req_{upload_id[-12:]}",
                })
                raise ProviderRejected(422, body)
            if name.lower().endswith(".iso"):
                raise TimeoutError(f"no answer from {self.host} after 30 s while sending '{name}' "
                                   f"(upload {upload_id})")
        record = {"project": project, "files": sorted(files), "upload_id": upload_id}
        _write_json(data_dir() / "site" / f"{project}.json", record)
        return record


PROVIDER = FakeHostingProvider()


# ---------------------------------------------------------------- the launcher
def validate(ctx: TaskContext) -> None:
    """Check the input; set ``valid`` and, when it is not, ``problem`` (a message for the user)."""
    project = ctx.get("project")
    files = ctx.get("files", ["index.html"])
    problem = None
    if not isinstance(project, str) or not _PROJECT.match(project):
        problem = ("A project name has 2 to 40 characters: lower-case letters, digits and dashes, "
                   "starting with a letter or digit.")
    elif not isinstance(files, list) or not files or not all(isinstance(f, str) and _FILE.match(f) for f in files):
        problem = "Files are a non-empty list of plain file names (no folders)."
    ctx.set("valid", problem is None)
    ctx.set("problem", problem)
    if problem is None:
        ctx.set("files", files)


def notify_queued(ctx: TaskContext) -> None:
    """Tell the user the work started; open the progress item the worker's steps advance."""
    project = ctx.get("project")
    ctx.progress(0, TOTAL, "Queued", key=progress_key(project), title=TITLE, status="queued")
    ctx.set("userMessage", f"Publishing of '{project}' has started. "
                           f"Follow it under progress item '{progress_key(project)}'.")


def notify_invalid(ctx: TaskContext) -> None:
    ctx.set("userMessage", f"Nothing was published: {ctx.get('problem')}")


# ---------------------------------------------------------------- the worker workflow
def prepare_files(ctx: TaskContext) -> None:
    """Stage the project's files (step 1 of 4)."""
    project, files = ctx.get("project"), list(ctx.get("files"))
    key = progress_key(project)
    ctx.progress(0, TOTAL, "Preparing files", key=key, title=TITLE, status="running")
    folder = staging_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_text(f"{project}/{name}\n", encoding="utf-8")
    _write_json(folder / "manifest.json", {"project": project, "files": files, "state": "staged"})
    ctx.set("stagedFiles", len(files))
    ctx.progress(1, message="Files prepared", key=key)


def upload(ctx: TaskContext) -> None:
    """Hand the staged files to the hosting provider (step 2 of 4): the unreliable part.

    A refusal is a business outcome: ``BpmnError("ProviderRejected")`` goes to
    the error port with the provider's raw answer in ``providerError``. A
    timeout is a technical failure: it propagates, the job is retried and in
    the end becomes an incident whose ``error_detail`` holds the raw text
    (``error_message`` stays neutral).
    """
    project, files = ctx.get("project"), list(ctx.get("files"))
    key = progress_key(project)
    ctx.progress(1, message=f"Uploading {ctx.get('stagedFiles')} file(s)", key=key)
    try:
        record = PROVIDER.upload(project, files, upload_id=ctx.idempotency_key)
    except ProviderRejected as exc:
        raise BpmnError("ProviderRejected", "the hosting provider refused the upload",
                        variables={"providerError": str(exc)}) from None
    ctx.set("uploadId", record["upload_id"])
    ctx.feedback(f"uploaded {len(files)} file(s)", key=key)  # replace: a retried job says it once
    ctx.progress(2, message="Files uploaded", key=key)


def update_index(ctx: TaskContext) -> None:
    """Add the project to the site index (step 3 of 4); a set, so doing it twice changes nothing."""
    project = ctx.get("project")
    path = data_dir() / "site" / "index.json"
    index = _read_json(path, {"projects": []})
    index["projects"] = sorted(set(index["projects"]) | {project})
    _write_json(path, index)
    ctx.set("publishedUrl", f"{SITE_URL}/{project}/")
    ctx.progress(3, message="Site index updated", key=progress_key(project))


def finish(ctx: TaskContext) -> None:
    """Close the progress item (step 4 of 4) and tell the user where the project is."""
    project = ctx.get("project")
    _mark(project, "published")
    ctx.set("userMessage", f"'{project}' is published at {ctx.get('publishedUrl')}")
    ctx.progress(4, message="Finished", key=progress_key(project), status="done")


def log_provider_error(ctx: TaskContext) -> None:
    """The error port's first step: keep the provider's raw answer where operators look, not in the instance.

    It goes to the logger ``bpmnlite_seeds.publish`` and to ``operators.log``
    with a reference; the variable is cleared (its old value stays in the
    variable history, which is for operators too).
    """
    project = ctx.get("project")
    ref = f"PUB-{ctx.instance_id[:8].upper()}"
    entry = {"ref": ref, "instance": ctx.instance_id, "project": project, "code": ctx.get("errorCode"),
             "provider_error": ctx.get("providerError")}
    log.warning("publish of %s failed (%s): %s", project, ref, entry["provider_error"])
    with (data_dir() / "operators.log").open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
    ctx.set("errorRef", ref)
    ctx.set("providerError", None)


def notify_failed(ctx: TaskContext) -> None:
    """The error port's second step: a neutral message for the user, on the instance and the progress item."""
    project = ctx.get("project")
    _mark(project, "failed")
    notice = FAILED_NOTICE.format(ref=ctx.get("errorRef"))
    ctx.set("userMessage", notice)
    ctx.progress(1, message=notice, key=progress_key(project), status="failed")


# ---------------------------------------------------------------- the hourly clean-up
def cleanup_staging(ctx: TaskContext) -> None:
    """Remove the staging folders of publishes that ended (published or failed); keep the others.

    Idempotent and safe when two clean-ups run at once: a folder is first
    renamed (atomic: one of two racing runs wins), then deleted, so each
    folder is counted as removed exactly once, and a second run finds
    nothing to do. Sets ``removed``, ``kept`` and a one-line ``summary``.
    """
    root = data_dir() / "staging"
    removed: list[str] = []
    kept: list[str] = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            state = (_read_json(folder / "manifest.json", {}) or {}).get("state")
            if state not in ("published", "failed"):
                kept.append(folder.name)
                continue
            trash = root / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"
            try:
                folder.rename(trash)
            except FileNotFoundError:
                continue  # another clean-up took it first
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(folder.name)
    summary = f"removed {len(removed)} staging folder(s), kept {len(kept)} in progress"
    log.info("publish clean-up: %s", summary)
    ctx.set("removed", removed)
    ctx.set("kept", kept)
    ctx.set("summary", summary)


TASK_TYPES: dict[str, Any] = {
    "publish.validate": validate,
    "publish.notify_queued": notify_queued,
    "publish.notify_invalid": notify_invalid,
    "publish.prepare_files": prepare_files,
    "publish.upload": upload,
    "publish.update_index": update_index,
    "publish.finish": finish,
    "publish.log_provider_error": log_provider_error,
    "publish.notify_failed": notify_failed,
    "publish.cleanup_staging": cleanup_staging,
}
