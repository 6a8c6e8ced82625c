"""A tiny Hugging Face Hub-compatible HTTP server for tests (127.0.0.1, in-memory).

It implements only the endpoints ``huggingface_hub`` uses to push a folder and to download
it again, with the response fields and headers the client reads:

- ``POST /api/repos/create``: create a model repo (409 if it exists, as the Hub);
- ``GET /api/whoami-v2``: a fixed user;
- ``POST /api/validate-yaml``: the README metadata check done before a commit (YAML must
  parse to a mapping);
- ``POST /api/models/{repo}/preupload/{rev}``: every file is uploaded "regular" (inline,
  base64), so neither LFS nor Xet is needed;
- ``POST /api/models/{repo}/commit/{rev}``: ndjson commit (``header``, ``file``,
  ``deletedFile``, ``deletedFolder``);
- ``GET /api/models/{repo}[/revision/{rev}]``: model info with ``sha`` and ``siblings``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: file listing (``recursive`` supported);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: file content with ``X-Repo-Commit``,
  ``ETag`` (the git blob id) and ``Content-Length``.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``)
so the client raises its usual exceptions. Use it as a context manager::

    with HubServer() as hub:
        env = {"HF_ENDPOINT": hub.url, ...}   # run the client in a subprocess with this env
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

USER = "test-user"
_API_REPO = re.compile(
    r"^/api/models/([^/]+/[^/]+)(?:/(revision|preupload|commit|tree)(?:/(.*))?)?$"
)
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_id(data: bytes) -> str:
    """The git blob id (sha1) of ``data``, the ETag the Hub gives regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    """One commit: its id, message and the complete file tree after it."""

    sha: str
    message: str
    files: dict[str, bytes]
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


@dataclass
class Repo:
    """A model repo: its commits (oldest first); ``main`` is the last one."""

    repo_id: str
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "HEAD"):
            return self.head
        for commit in self.commits:
            if commit.sha == revision:
                return commit
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        head_only: bool = False,
    ) -> None:
        body = (
            raw if raw is not None else json.dumps(payload).encode() if payload is not None else b""
        )
        self.send_response(status)
        content_type = "application/octet-stream" if raw is not None else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, head_only: bool = False) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message} if code else {}
        self._send(status, {"error": message}, headers=headers, head_only=head_only)

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        hub = self.server.hub
        hub.requests.append((method, path))
        try:
            handled = self._route(method, path, query)
        except Exception as err:  # report server bugs to the client instead of hanging
            self._error(500, None, f"{type(err).__name__}: {err}")
            return
        if not handled:
            self._error(404, None, f"No route for {method} {path}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> bool:
        hub = self.server.hub
        if method == "POST" and path == "/api/repos/create":
            self._create_repo(json.loads(self._body() or b"{}"))
            return True
        if method == "GET" and path == "/api/whoami-v2":
            self._send(200, {"type": "user", "name": USER, "auth": {"type": "access_token"}})
            return True
        if method == "POST" and path == "/api/validate-yaml":
            self._validate_yaml(json.loads(self._body() or b"{}"))
            return True

        match = _API_REPO.match(path)
        if match:
            repo_id, action, rest = match.group(1), match.group(2), match.group(3) or ""
            with hub.lock:
                repo = hub.repos.get(repo_id)
            if repo is None:
                self._body()
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return True
            revision, _, sub = rest.partition("/")
            if action is None and method == "GET":
                self._model_info(repo, "main")
            elif action == "revision" and method == "GET":
                self._model_info(repo, rest)
            elif action == "preupload" and method == "POST":
                self._preupload(repo, revision, json.loads(self._body() or b"{}"))
            elif action == "commit" and method == "POST":
                self._commit(repo, revision, self._body())
            elif action == "tree" and method == "GET":
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                self._tree(repo, revision, sub.strip("/"), recursive)
            else:
                return False
            return True

        match = _RESOLVE.match(path)
        if match and method in ("GET", "HEAD"):
            self._resolve(
                match.group(1), match.group(2), match.group(3), head_only=method == "HEAD"
            )
            return True
        return False

    def _create_repo(self, payload: dict[str, Any]) -> None:
        hub = self.server.hub
        if payload.get("type", "model") != "model":
            self._error(400, None, "This test server only hosts model repos.")
            return
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{hub.url}/{repo_id}"
        with hub.lock:
            if repo_id in hub.repos:
                self._error(409, None, "You already created this model repo")
                return
            repo = Repo(repo_id)
            files = {".gitattributes": _GITATTRIBUTES}
            repo.commits.append(Commit(hub.new_sha(repo_id, "initial"), "initial commit", files))
            hub.repos[repo_id] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        content = payload.get("content", "")
        errors: list[dict[str, str]] = []
        if content.startswith("---"):
            parts = content.split("---", 2)
            try:
                meta = yaml.safe_load(parts[1]) if len(parts) == 3 else None
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a YAML mapping"})
            except yaml.YAMLError as err:
                errors.append({"message": f"invalid YAML: {err}"})
        self._send(400 if errors else 200, {"errors": errors, "warnings": []})

    def _commit_or_error(self, repo: Repo, revision: str, head_only: bool = False) -> Commit | None:
        with self.server.hub.lock:
            commit = repo.at(unquote(revision))
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head_only)
        return commit

    def _model_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        self._send(
            200,
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "private": False,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": name} for name in sorted(commit.files)],
            },
        )

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        files = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"])
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_id(existing) if existing is not None else None,
                }
            )
        self._send(200, {"files": files, "commitOid": commit.sha})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        hub = self.server.hub
        message = ""
        with hub.lock:
            head = repo.at(unquote(revision))
            if head is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            if head is not repo.head:
                self._error(400, None, "This test server only commits to the branch head (main).")
                return
            files = dict(head.files)
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    message = value.get("summary", "")
                elif key == "file":
                    if value.get("encoding", "base64") != "base64":
                        self._error(400, None, f"Unsupported encoding {value.get('encoding')}")
                        return
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                else:
                    self._error(400, None, f"Unsupported commit operation {key!r} (no LFS here).")
                    return
            sha = hub.new_sha(repo.repo_id, message)
            repo.commits.append(Commit(sha, message, files))
        self._send(
            200,
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{hub.url}/{repo.repo_id}/commit/{sha}",
                "pullRequestUrl": None,
            },
        )

    def _tree(self, repo: Repo, revision: str, prefix: str, recursive: bool) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        base = prefix + "/" if prefix else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, data in commit.files.items():
            if not name.startswith(base):
                continue
            parts = name[len(base) :].split("/")
            # Directories between the prefix and the file.
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                directory = base + "/".join(parts[:depth])
                entries.setdefault(
                    directory,
                    {
                        "type": "directory",
                        "path": directory,
                        "oid": hashlib.sha1(directory.encode()).hexdigest(),
                        "size": 0,
                    },
                )
            if len(parts) == 1 or recursive:
                entries[name] = {
                    "type": "file",
                    "path": name,
                    "oid": git_blob_id(data),
                    "size": len(data),
                }
        if prefix and not entries:
            self._error(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
            return
        self._send(200, [entries[k] for k in sorted(entries)])

    def _resolve(self, repo_id: str, revision: str, filename: str, head_only: bool) -> None:
        hub = self.server.hub
        with hub.lock:
            repo = hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head_only)
            return
        commit = self._commit_or_error(repo, revision, head_only)
        if commit is None:
            return
        data = commit.files.get(filename)
        if data is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist", head_only)
            return
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_id(data)}"'}
        self._send(200, raw=data, headers=headers, head_only=head_only)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class HubServer:
    """The server, in a background thread on ``127.0.0.1`` and a free port.

    Attributes:
        url: the endpoint to put in ``HF_ENDPOINT`` (available after :meth:`start`).
        repos: ``repo_id -> Repo`` (in memory).
        requests: ``(method, path)`` of every request served, in order.
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._counter = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def new_sha(self, repo_id: str, message: str) -> str:
        """A fresh 40-hex commit id (call with ``lock`` held)."""
        self._counter += 1
        return hashlib.sha1(f"{repo_id}\0{message}\0{self._counter}".encode()).hexdigest()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (``KeyError`` if unknown)."""
        with self.lock:
            commit = self.repos[repo_id].at(revision)
        if commit is None:
            raise KeyError(revision)
        return dict(commit.files)

    def start(self) -> HubServer:
        """Starts serving in a daemon thread; returns ``self``."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the server and closes its socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # manual use: python tests/hub_server.py
    import time

    with HubServer() as server:
        print(f"HF_ENDPOINT={server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
