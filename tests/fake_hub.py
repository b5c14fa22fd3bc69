"""A local stand-in for the Hugging Face Hub HTTP API, for upload tests that never reach the internet.

It implements the endpoints `huggingface_hub` 2.4 calls for `HfApi.create_repo`, `create_branch`,
`repo_info` and `upload_folder` on the legacy (non-Xet) path, for models and Spaces:

    POST /api/repos/create                                  create a repo (409 if it exists)
    POST /api/validate-yaml                                 README.md front matter check
    POST /api/{type}s/{owner}/{name}/preupload/{revision}   upload mode per file (regular / lfs)
    POST /{prefix}{owner}/{name}.git/info/lfs/objects/batch LFS batch API (basic transfer)
    PUT  /lfs-storage/{oid}                                 LFS object upload (no auth, like S3)
    POST /lfs-verify/{oid}                                  LFS verify
    POST /api/{type}s/{owner}/{name}/commit/{revision}      ndjson commit (base64 + lfsFile entries,
                                                            `create_pr=1` opens refs/pr/N)
    POST /api/{type}s/{owner}/{name}/branch/{branch}        create a branch from main
    GET  /api/{type}s/{owner}/{name}[/revision/{revision}]  repo info
    GET  /api/agent-harnesses                               registry for the user-agent header

Binary files (a NUL byte in the sample, or weights, images and audio) are sent through LFS, like
the Hub's default `.gitattributes`; text files as base64 in the commit. Run clients with
`HF_HUB_DISABLE_XET=1` (or `huggingface_hub.constants.HF_HUB_DISABLE_XET = True`): Xet storage is
not implemented. Every request is recorded (`hub.requests`); every request except LFS storage must
carry `Authorization: Bearer <token>` (LFS storage and the agent registry are public).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".png", ".jpg", ".flac", ".wav", ".mp3", ".npz", ".onnx")
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
REPO = r"(?P<type>model|dataset|space)s/(?P<repo>[\w.-]+/[\w.-]+)"


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool | None
    sdk: str | None
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)
    pull_requests: list[int] = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes
    status: int = 0


class FakeHub:
    """Threaded HTTP server on 127.0.0.1; use as a context manager. `url` is the HF_ENDPOINT."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        return self.repo(repo_id, repo_type).branches[revision]

    # -- endpoints -------------------------------------------------------------------------------

    def route(self, request: Request) -> tuple[int, Any]:
        path = request.path
        if request.method == "PUT" and (m := re.fullmatch(r"/lfs-storage/(\w+)", path)):
            if hashlib.sha256(request.body).hexdigest() != m[1]:
                return 400, {"error": "sha256 mismatch"}
            self.lfs[m[1]] = request.body
            return 200, {}
        if request.method == "GET" and path == "/api/agent-harnesses":  # public, user-agent telemetry
            return 200, {"standardEnvVars": [], "harnesses": {}}
        if request.authorization != f"Bearer {self.token}":
            return 401, {"error": "Invalid username or password."}
        if request.method == "POST" and path == "/api/repos/create":
            return self.create_repo(json.loads(request.body))
        if request.method == "POST" and path == "/api/validate-yaml":
            return self.validate_yaml(json.loads(request.body))
        if request.method == "POST" and (
            m := re.fullmatch(r"/(?:(datasets|spaces)/)?([\w.-]+/[\w.-]+)\.git/info/lfs/objects/batch", path)
        ):
            return self.lfs_batch(json.loads(request.body))
        if request.method == "POST" and (m := re.fullmatch(r"/lfs-verify/(\w+)", path)):
            body = json.loads(request.body)
            ok = body.get("oid") == m[1] and len(self.lfs.get(m[1], b"")) == body.get("size")
            return (200, {}) if ok else (404, {"error": "object not found"})
        if not (m := re.fullmatch(rf"/api/{REPO}(?P<rest>/.*)?", path)):
            return 404, {"error": f"stand-in has no route for {request.method} {path}"}
        key = (m["type"], m["repo"])
        if key not in self.repos:
            return 404, {"error": "Repository not found"}
        repo, rest = self.repos[key], m["rest"] or ""
        if request.method == "GET" and (rest == "" or rest.startswith("/revision/")):
            revision = unquote(rest[len("/revision/") :]) if rest else "main"
            if revision not in repo.branches:
                return 404, {"error": "Revision not found"}
            siblings = [{"rfilename": name} for name in sorted(repo.branches[revision])]
            return 200, {
                "id": repo.repo_id,
                "sha": _oid(repo, revision),
                "private": bool(repo.private),
                "siblings": siblings,
            }
        if request.method == "POST" and (p := re.fullmatch(r"/preupload/(.+)", rest)):
            return self.preupload(json.loads(request.body))
        if request.method == "POST" and (p := re.fullmatch(r"/commit/(.+)", rest)):
            return self.commit(repo, unquote(p[1]), request)
        if request.method == "POST" and (p := re.fullmatch(r"/branch/(.+)", rest)):
            branch = unquote(p[1])
            if branch in repo.branches:
                return 409, {"error": "Reference already exists"}
            start = (json.loads(request.body or b"{}") or {}).get("startingPoint", "main")
            repo.branches[branch] = dict(repo.branches[start])
            return 200, {}
        return 404, {"error": f"stand-in has no route for {request.method} {path}"}

    def create_repo(self, payload: dict[str, Any]) -> tuple[int, Any]:
        repo_type = payload.get("type") or "model"
        repo_id = (
            f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        )
        if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            return 400, {"error": "Space SDK is required"}
        url = f"{self.url}/{PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": url}
        visibility = payload.get("visibility")
        private = None if visibility is None else visibility == "private"
        self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private, payload.get("sdk"))
        return 200, {"url": url, "name": repo_id}

    def validate_yaml(self, payload: dict[str, Any]) -> tuple[int, Any]:
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
        try:
            metadata = yaml.safe_load(match[1]) if match else {}
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}
        for entry in metadata.get("model-index", []) or []:
            for result in entry.get("results", []):
                if not {"task", "dataset", "metrics"} <= set(result):
                    return 400, {"errors": [{"message": "model-index result needs task, dataset, metrics"}]}
        return 200, {"errors": [], "warnings": []}

    def preupload(self, payload: dict[str, Any]) -> tuple[int, Any]:
        files = []
        for entry in payload["files"]:
            sample = base64.b64decode(entry["sample"])
            lfs = entry["path"].endswith(LFS_SUFFIXES) or b"\x00" in sample
            files.append(
                {
                    "path": entry["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": None,
                }
            )
        return 200, {"files": files, "commitOid": "0" * 40}

    def lfs_batch(self, payload: dict[str, Any]) -> tuple[int, Any]:
        objects = []
        for item in payload["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-storage/{item['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify/{item['oid']}"},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def commit(self, repo: Repo, revision: str, request: Request) -> tuple[int, Any]:
        lines = [json.loads(line) for line in request.body.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None:
            return 400, {"error": "missing commit header"}
        create_pr = request.query.get("create_pr") == ["1"]
        if create_pr:
            number = len(repo.pull_requests) + 1
            repo.pull_requests.append(number)
            target = f"refs/pr/{number}"
            repo.branches[target] = dict(repo.branches.get(revision, {}))
        elif revision not in repo.branches:
            return 404, {"error": f"Invalid rev id: {revision}"}
        else:
            target = revision
        files = repo.branches[target]
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} was not uploaded"}
                files[value["path"]] = self.lfs[value["oid"]]
            elif line["key"] in ("deletedFile", "deletedFolder"):
                files.pop(value["path"], None)
        modes = {line["value"]["path"]: line["key"] for line in lines if line["key"] in ("file", "lfsFile")}
        repo.commits.append({"revision": target, "summary": header["summary"], "modes": modes})
        url = f"{self.url}/{PREFIX[repo.repo_type]}{repo.repo_id}"
        result = {"commitUrl": f"{url}/commit/{_oid(repo, target)}", "commitOid": _oid(repo, target)}
        result["pullRequestUrl"] = f"{url}/discussions/{repo.pull_requests[-1]}" if create_pr else None
        return 200, result


def _oid(repo: Repo, revision: str) -> str:
    return hashlib.sha1(f"{repo.repo_id}@{revision}#{len(repo.commits)}".encode()).hexdigest()


def _handler_class(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query),
                self.headers.get("Authorization"),
                self._body(),
            )
            with hub.lock:
                status, payload = hub.route(request)
                request.status = status
                hub.requests.append(request)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = _serve  # noqa: N815 (BaseHTTPRequestHandler's names)

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    return Handler
