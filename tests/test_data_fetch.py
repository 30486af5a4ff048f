"""`harness data fetch` against a local HTTP mirror: verified placement, a changed byte, a
connection dropped halfway (resumed with HTTP Range), a 404, git blob pins, unpinned files, and
`harness data list` states. No test leaves this machine (the server is on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.data import registry
from harness.data.home import git_blob_id
from harness.data.registry import DatasetEntry, RemoteFile

PAYLOAD = {
    "toy/a/train.txt": b"".join(b"%d\t%d\t1\n" % (u, u * 7 % 13) for u in range(4000)),
    "toy/b/test.txt": b"1\t2\t1\n3\t4\t1\n",
}


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves ``server.root`` with Range support; ``server.drop`` maps a path to the number of
    bytes after which its first response is cut off (a dropped connection)."""

    def do_GET(self) -> None:
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        path = server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if (wanted := self.headers.get("Range")) and wanted.startswith("bytes="):
            start = int(wanted[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.drop.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the client sees a short body
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    for rel, data in PAYLOAD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.root, server.drop, server.log = root, {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def toy_entry(**pins) -> DatasetEntry:
    files = tuple(
        RemoteFile(
            rel.split("/", 1)[1],
            None,
            sha256=pins.get(rel, hashlib.sha256(data).hexdigest()),
            size=len(data),
        )
        for rel, data in PAYLOAD.items()
    )
    return DatasetEntry(
        name="toy",
        title="toy",
        folder="toy",
        loader="amazon_pairs",
        loader_options={},
        files=files,
        licence="test",
        citation="test",
        homepage="https://example.invalid",
    )


@pytest.fixture
def registered(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("HARNESS_DATA", str(home))
    monkeypatch.delenv("HARNESS_DATA_MIRROR", raising=False)

    def register(entry: DatasetEntry) -> Path:
        monkeypatch.setitem(registry.DATASETS, entry.name, entry)
        return home / entry.folder

    return register


def fetch(*args: str):
    return CliRunner().invoke(app, ["data", "fetch", *args], catch_exceptions=False)


def errors(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error")]


def test_fetch_verifies_and_places_every_file(mirror, registered):
    server, url = mirror
    folder = registered(toy_entry())
    result = fetch("toy", "--mirror", url)
    assert result.exit_code == 0, result.output
    assert "2 fetched" in result.output
    for rel, data in PAYLOAD.items():
        assert (folder / rel.split("/", 1)[1]).read_bytes() == data
    assert not list(folder.rglob("*.part"))
    again = fetch("toy", "--mirror", url)  # verified in place: nothing downloaded again
    assert "0 fetched, 2 already present and verified" in again.output
    assert len(server.log) == 2


def test_a_changed_byte_is_refused_with_one_line_and_nothing_in_place(mirror, registered):
    server, url = mirror
    folder = registered(toy_entry())
    target = server.root / "toy/a/train.txt"
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    result = fetch("toy", "--mirror", url)
    assert result.exit_code == 3
    (line,) = errors(result)
    expected = hashlib.sha256(PAYLOAD["toy/a/train.txt"]).hexdigest()
    found = hashlib.sha256(bytes(data)).hexdigest()
    assert f"{url}/toy/a/train.txt" in line and expected in line and found in line
    assert "to place it by hand" in line
    assert not (folder / "a" / "train.txt").exists()
    assert not list(folder.rglob("*.part"))


def test_a_connection_dropped_halfway_resumes_to_the_same_hash(mirror, registered):
    server, url = mirror
    folder = registered(toy_entry())
    size = len(PAYLOAD["toy/a/train.txt"])
    server.drop["/toy/a/train.txt"] = size // 2
    result = fetch("toy", "--mirror", url)
    assert result.exit_code == 0, result.output
    assert (folder / "a" / "train.txt").read_bytes() == PAYLOAD["toy/a/train.txt"]
    requests = [r for p, r in server.log if p == "/toy/a/train.txt"]
    assert requests == [None, f"bytes={size // 2}-"]  # the second asks only for the rest


def test_a_missing_file_is_one_line_with_the_url(mirror, registered):
    server, url = mirror
    registered(toy_entry())
    (server.root / "toy/b/test.txt").unlink()
    result = fetch("toy", "--mirror", url)
    assert result.exit_code == 3
    (line,) = errors(result)
    assert f"{url}/toy/b/test.txt" in line and "404" in line


def test_no_network_is_one_line(registered):
    registered(toy_entry())
    result = fetch("toy", "--mirror", "http://127.0.0.1:9", "--retries", "0")  # nothing listens
    assert result.exit_code == 3
    (line,) = errors(result)
    assert "http://127.0.0.1:9/toy/a/train.txt" in line


def test_a_folder_mirror_and_a_git_blob_pin(tmp_path, mirror, registered):
    server, _url = mirror
    data = PAYLOAD["toy/b/test.txt"]
    blob = git_blob_id(server.root / "toy/b/test.txt")
    assert blob == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's id
    entry = toy_entry()
    pinned = RemoteFile("b/test.txt", None, git_blob=blob)
    entry = DatasetEntry(**{**entry.__dict__, "files": (entry.files[0], pinned)})
    folder = registered(entry)
    result = fetch("toy", "--mirror", str(server.root))
    assert result.exit_code == 0, result.output
    assert (folder / "b" / "test.txt").read_bytes() == PAYLOAD["toy/b/test.txt"]
    wrong = RemoteFile("b/test.txt", None, git_blob="0" * 40)
    (folder / "b" / "test.txt").unlink()
    registered(DatasetEntry(**{**entry.__dict__, "files": (entry.files[0], wrong)}))
    bad = fetch("toy", "--mirror", str(server.root))
    assert bad.exit_code == 3 and "git_blob mismatch" in errors(bad)[0]


def test_an_unpinned_file_is_recorded_and_printed_to_pin(mirror, registered):
    _server, url = mirror
    entry = toy_entry()
    loose = RemoteFile("b/test.txt", None)
    folder = registered(DatasetEntry(**{**entry.__dict__, "files": (entry.files[0], loose)}))
    result = fetch("toy", "--mirror", url)
    assert result.exit_code == 0, result.output
    sha = hashlib.sha256(PAYLOAD["toy/b/test.txt"]).hexdigest()
    assert "unpinned" in result.output and sha in result.output
    assert sha in (folder / ".harness-checked.json").read_text()


def test_registry_paths_stay_inside_and_upstreams_are_https():
    with pytest.raises(ValueError, match="inside"):
        RemoteFile("../escape.txt", None)
    with pytest.raises(ValueError, match="https"):
        RemoteFile("a.txt", "http://example.org/a.txt")
    for entry in registry.DATASETS.values():
        assert entry.licence and entry.citation
        for remote in entry.files:
            assert remote.url is None or remote.url.startswith("https://")
            assert (
                remote.url is None
                or "raw.githubusercontent.com" not in remote.url
                or (
                    len(remote.url.split("/")[5]) == 40  # pinned to a commit, not a branch
                )
            )


def test_data_list_shows_present_missing_and_corrupt(mirror, registered):
    _server, url = mirror
    folder = registered(toy_entry())
    assert fetch("toy", "--mirror", url).exit_code == 0
    (folder / "b" / "test.txt").write_bytes(b"tampered\n")
    (folder / "a" / "train.txt").unlink()
    result = CliRunner().invoke(app, ["data", "list"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "1 corrupt" in result.output and "1 missing" in result.output
    assert "harness data fetch toy" in result.output


def test_the_shipped_registry_pins_every_disencdr_file():
    pairs = registry.DATASETS["amazon-pairs"]
    assert len(pairs.files) == 24 and all(f.sha256 and f.size for f in pairs.files)
    assert {f.part for f in pairs.files} == set(pairs.parts)
    douban = registry.DATASETS["douban"]
    assert all(f.sha256 and f.url for f in douban.files)
    assert registry.DATASETS["douban-movies"].files[0].git_blob
    assert not any(f.pinned for f in registry.DATASETS["amazon-2014"].files)
