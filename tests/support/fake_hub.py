"""A stand-in for the Hugging Face Hub on loopback, enough for `huggingface_hub.snapshot_download`.

It speaks the part of the Hub protocol that huggingface_hub 2.x uses to download a model repo:

- `GET /api/models/{repo}/revision/{rev}`: repo info; `sha` is the commit the revision points to.
- `GET /api/models/{repo}/tree/{commit}?recursive=true`: the file listing (git oid, size, LFS info).
- `HEAD` / `GET /{repo}/resolve/{rev}/{path}`: a plain file answers 200 with `X-Repo-Commit`, `ETag`
  (its git blob oid) and `Content-Length`; an LFS file answers 302 to a second server on another
  port (the "CDN", which the client must not treat as the Hub) with `X-Linked-Etag` (its sha256) and
  `X-Linked-Size`, just as huggingface.co redirects to its CDN.

Errors carry the `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that
huggingface_hub turns into its typed exceptions. No Xet headers are sent, so the client takes the
plain-HTTP path whether or not `hf_xet` is installed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from typing_extensions import Self

CHUNK = 1 << 20
CDN_HOST = "127.0.0.2"
# What git-lfs tracks in a typical model repo: weights by extension, anything else above 10 MiB.
LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 << 20


@dataclass(frozen=True)
class HubFile:
    path: str
    content: Path | bytes
    size: int
    oid: str  # git blob sha1; of the LFS pointer for LFS files, as on the Hub
    sha256: str | None  # set for LFS files only
    pointer_size: int = 0  # size of the LFS pointer git stores instead of the file

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.content, bytes):
            yield self.content
            return
        with self.content.open("rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(content: Path | bytes) -> str:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    digest = hashlib.sha256()
    with content.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hub_file(path: str, content: Path | bytes) -> HubFile:
    size = len(content) if isinstance(content, bytes) else content.stat().st_size
    if path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE:
        sha256 = _sha256(content)
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        raw = pointer.encode()
        return HubFile(path, content, size, _git_blob_oid(raw), sha256, len(raw))
    data = content if isinstance(content, bytes) else content.read_bytes()
    return HubFile(path, content, size, _git_blob_oid(data), None)


def folder_files(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every file under `folder` by its repo path, leaving out the names in `skip`."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@dataclass(frozen=True)
class Repo:
    repo_id: str
    commit: str
    files: dict[str, HubFile]

    def tree(self, prefix: str, recursive: bool) -> list[dict]:
        """The `/tree` listing below `prefix`, folders included, as the Hub returns it."""
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        folders: set[str] = set()
        entries: list[dict] = []
        for path, f in sorted(self.files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": f.oid, "size": f.size, "path": path}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                entries.append(entry)
        for folder in sorted(folders):
            oid = hashlib.sha1(f"tree {folder}".encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
        return entries


class _Server(ThreadingHTTPServer):
    # Join handler threads on close, so nothing is still writing when a test ends.
    daemon_threads = False
    block_on_close = True

    def __init__(self, hub: FakeHub, host: str = "127.0.0.1") -> None:
        self.hub = hub
        super().__init__((host, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no keep-alive socket outlives a test.
    protocol_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, *, body: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        path = unquote(url.path)
        hub.record(self.command, self.server is hub.cdn_server, path)
        if self.server is hub.cdn_server:
            blob = hub.blobs.get(path.lstrip("/"))
            if blob is None:
                return self._send(404, b"no such blob", body=body)
            return self._send_file(blob, {"ETag": f'"{blob.sha256}"'}, body=body)
        parts = path.lstrip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._repo_not_found(body)
            if not rest or rest[0] == "revision":
                revision = rest[1] if len(rest) > 1 else "main"
                if not hub.knows_revision(repo, revision):
                    return self._revision_not_found(body)
                return self._send_json(hub.model_info(repo), body=body)
            if rest[0] == "tree" and len(rest) >= 2:
                if not hub.knows_revision(repo, rest[1]):
                    return self._revision_not_found(body)
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                return self._send_json(repo.tree("/".join(rest[2:]), recursive), body=body)
            return self._send(404, b"not found", body=body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = hub.repos.get("/".join(parts[:2]))
            if repo is None:
                return self._repo_not_found(body)
            if not hub.knows_revision(repo, parts[3]):
                return self._revision_not_found(body)
            f = repo.files.get("/".join(parts[4:]))
            headers = {"X-Repo-Commit": repo.commit}
            if f is None:
                headers |= {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
                return self._send(404, b"Entry not found", headers, body=body)
            headers["ETag"] = f'"{f.oid}"'
            if f.lfs:
                headers |= {
                    "Location": f"{hub.cdn_endpoint}/{f.sha256}",
                    "X-Linked-Etag": f'"{f.sha256}"',
                    "X-Linked-Size": str(f.size),
                }
                return self._send(302, b"", headers, body=body)
            return self._send_file(f, headers, body=body)
        return self._send(404, b"not found", body=body)

    def _repo_not_found(self, body: bool) -> None:
        headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
        self._send_json({"error": "Repository not found"}, 404, headers, body=body)

    def _revision_not_found(self, body: bool) -> None:
        headers = {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}
        self._send_json({"error": "Invalid rev id"}, 404, headers, body=body)

    def _send_json(
        self,
        obj: object,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        body: bool,
    ) -> None:
        data = json.dumps(obj).encode()
        self._send(status, data, {"Content-Type": "application/json", **(headers or {})}, body=body)

    def _send(
        self, status: int, data: bytes, headers: Mapping[str, str] | None = None, *, body: bool
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _send_file(self, f: HubFile, headers: Mapping[str, str], *, body: bool) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(f.size))
        self.end_headers()
        if not body:
            return
        try:
            for chunk in f.chunks():
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up; nothing to tell it


class FakeHub:
    """Two loopback servers, the Hub API and its CDN, serving the repos added with `add_repo`.

    `endpoint` is what `HF_ENDPOINT` should be; `requests` logs (method, "hub" or "cdn", path)
    of every request.
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, HubFile] = {}
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self.hub_server = _Server(self)
        # Another loopback address, so the CDN is another host: huggingface_hub 1.x follows a
        # redirect to the same host name whatever the port, and would miss the Hub's headers.
        self.cdn_server = _Server(self, CDN_HOST)
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self.hub_server, self.cdn_server)
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub_server.server_address[1]}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{CDN_HOST}:{self.cdn_server.server_address[1]}"

    def add_repo(self, repo_id: str, files: Mapping[str, Path | bytes]) -> Repo:
        published = {path: hub_file(path, content) for path, content in files.items()}
        commit = hashlib.sha1(
            "".join(f"{p}:{f.oid}\n" for p, f in sorted(published.items())).encode()
        ).hexdigest()
        repo = Repo(repo_id, commit, published)
        with self._lock:
            self.repos[repo_id] = repo
            self.blobs.update({f.sha256: f for f in published.values() if f.sha256 is not None})
        return repo

    def knows_revision(self, repo: Repo, revision: str) -> bool:
        return revision in ("main", repo.commit)

    def model_info(self, repo: Repo) -> dict:
        return {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.commit,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(repo.files)],
        }

    def record(self, method: str, on_cdn: bool, path: str) -> None:
        with self._lock:
            self.requests.append((method, "cdn" if on_cdn else "hub", path))

    def downloads(self) -> list[str]:
        """Repo paths whose bytes were sent, in order.

        Plain files count when GET from `/resolve`, LFS files when GET from the CDN.
        """
        with self._lock:
            log = list(self.requests)
        by_sha = {sha: f.path for sha, f in self.blobs.items()}
        paths: list[str] = []
        for method, server, path in log:
            if method != "GET":
                continue
            if server == "cdn":
                paths.append(by_sha.get(path.lstrip("/"), path))
            elif "/resolve/" in path:
                paths.append(path.split("/", 5)[5])
        return paths

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.hub_server, self.cdn_server):
            s.shutdown()
        for t in self._threads:
            t.join()
        for s in (self.hub_server, self.cdn_server):
            s.server_close()
