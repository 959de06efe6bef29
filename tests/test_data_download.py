"""Downloads against a local HTTP server laid out like the UCI archive, and against directory mirrors."""

import dataclasses
import hashlib
import io
import shutil
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from interplay.data import (
    DATASETS,
    DataError,
    MalformedFile,
    SourceMissing,
    SourceUnreachable,
    UnknownDataset,
    download,
    make_table,
    resolve_mirror,
)

ZIP_PATH = "/291/airfoil+self+noise.zip"
MEMBER = "airfoil_self_noise.dat"
FAST = {"timeout": 5}


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buffer.getvalue()


class Server:
    """A local HTTP server; `routes[path]` is a list of answers served in turn (the last one repeats).

    An answer is (status, body) or ("truncate", body): a Content-Length larger than the body sent.
    """

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                answers = server.routes.get(self.path, [(404, b"not found")])
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                if status == "sleep":
                    time.sleep(body)
                    return
                code = 200 if status == "truncate" else status
                self.send_response(code)
                self.send_header("Content-Length", str(len(body) + (100 if status == "truncate" else 0)))
                self.end_headers()
                self.wfile.write(body)
                if status == "truncate":
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # a sleeping handler must not hold up the teardown
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def airfoil_text() -> bytes:
    """A small airfoil original (tab-separated), independent of the mirror."""
    return b"800\t0\t0.3048\t71.3\t0.00266337\t126.201\r\n1000\t0\t0.3048\t71.3\t0.00266337\t125.201\r\n"


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_zip_from_http_mirror_laid_out_like_uci(server, airfoil_text, tmp_path):
    server.routes[ZIP_PATH] = [(200, make_zip({MEMBER: airfoil_text, "readme.txt": b"x"}))]
    path = download("airfoil", tmp_path / "dl" / "airfoil", mirror=server.url, **FAST)
    assert path == tmp_path / "dl" / "airfoil" / MEMBER
    assert path.read_bytes() == airfoil_text
    assert entries(path.parent) == [MEMBER]
    assert entries(tmp_path / "dl") == ["airfoil"]  # no staging left beside it
    assert server.requests == [ZIP_PATH]


def test_member_nested_in_a_folder_of_the_zip(server, airfoil_text, tmp_path):
    server.routes[ZIP_PATH] = [(200, make_zip({f"airfoil/{MEMBER}": airfoil_text}))]
    path = download("airfoil", tmp_path / "airfoil", mirror=server.url + "/", **FAST)
    assert path.read_bytes() == airfoil_text


def test_corrupted_zip_fails_clearly_and_leaves_nothing(server, airfoil_text, tmp_path):
    good = make_zip({MEMBER: airfoil_text})
    server.routes[ZIP_PATH] = [(200, good[: len(good) // 2] + b"garbage" * 10)]
    out = tmp_path / "dl" / "airfoil"
    with pytest.raises(MalformedFile, match="not a valid zip archive") as info:
        download("airfoil", out, mirror=server.url, **FAST)
    assert "airfoil" in str(info.value) and ZIP_PATH in str(info.value)
    assert not out.exists()
    assert entries(tmp_path / "dl") == []


def test_zip_without_the_member_is_an_error(server, tmp_path):
    server.routes[ZIP_PATH] = [(200, make_zip({"other.dat": b"1 2\n"}))]
    with pytest.raises(MalformedFile, match=MEMBER):
        download("airfoil", tmp_path / "airfoil", mirror=server.url, **FAST)
    assert not (tmp_path / "airfoil").exists()


def test_server_errors_are_retried(server, airfoil_text, tmp_path):
    server.routes[ZIP_PATH] = [(500, b"oops"), (500, b"oops"), (200, make_zip({MEMBER: airfoil_text}))]
    path = download("airfoil", tmp_path / "airfoil", mirror=server.url, retries=3, **FAST)
    assert path.read_bytes() == airfoil_text
    assert server.requests == [ZIP_PATH] * 3


def test_truncated_body_is_retried(server, airfoil_text, tmp_path):
    archive = make_zip({MEMBER: airfoil_text})
    server.routes[ZIP_PATH] = [("truncate", archive), (200, archive)]
    path = download("airfoil", tmp_path / "airfoil", mirror=server.url, retries=2, **FAST)
    assert path.read_bytes() == airfoil_text
    assert server.requests == [ZIP_PATH] * 2


def test_persistent_server_error_names_dataset_url_and_mirror_option(server, tmp_path):
    server.routes[ZIP_PATH] = [(503, b"down")]
    with pytest.raises(SourceUnreachable) as info:
        download("airfoil", tmp_path / "airfoil", mirror=server.url, retries=2, **FAST)
    message = str(info.value)
    for fragment in (
        "airfoil",
        server.url + ZIP_PATH,
        "2 attempt",
        "HTTP 503",
        "data.mirror",
        "INTERPLAY_DATA_MIRROR",
    ):
        assert fragment in message
    assert server.requests == [ZIP_PATH] * 2
    assert entries(tmp_path) == []


def test_timeouts_are_retried_then_fail(server, tmp_path):
    server.routes[ZIP_PATH] = [("sleep", 1.0)]
    start = time.monotonic()
    with pytest.raises(SourceUnreachable, match="Timeout"):
        download("airfoil", tmp_path / "airfoil", mirror=server.url, retries=2, timeout=0.2)
    assert time.monotonic() - start < 5
    assert server.requests == [ZIP_PATH] * 2


def test_missing_zip_falls_back_to_raw_then_member_then_table(server, airfoil_text, tmp_path):
    server.routes[f"/raw/{MEMBER}"] = [(200, airfoil_text)]
    path = download("airfoil", tmp_path / "a", mirror=server.url, **FAST)
    assert path.name == MEMBER and path.read_bytes() == airfoil_text
    assert server.requests == [ZIP_PATH, f"/raw/{MEMBER}"]

    server.requests.clear()
    server.routes = {"/airfoil.data": [(200, b"1 2 3 4 5 6\n")]}
    path = download("airfoil", tmp_path / "b", mirror=server.url, **FAST)
    assert path.name == "airfoil.data"
    assert server.requests == [ZIP_PATH, f"/raw/{MEMBER}", f"/{MEMBER}", "/airfoil.data"]


def test_mirror_without_the_dataset_lists_what_was_tried(server, tmp_path):
    with pytest.raises(SourceMissing) as info:
        download("airfoil", tmp_path / "airfoil", mirror=server.url, **FAST)
    for candidate in (ZIP_PATH, f"/raw/{MEMBER}", f"/{MEMBER}", "/airfoil.data"):
        assert server.url + candidate in str(info.value)
    assert not (tmp_path / "airfoil").exists()


@pytest.fixture
def canonical_url(server, monkeypatch):
    """Point airfoil's canonical URL at the local server (the no-mirror code path)."""
    url = server.url + ZIP_PATH
    monkeypatch.setitem(DATASETS, "airfoil", dataclasses.replace(DATASETS["airfoil"], url=url))
    return url


def test_without_mirror_the_canonical_zip_is_streamed(server, canonical_url, airfoil_text, tmp_path):
    server.routes[ZIP_PATH] = [(500, b""), (200, make_zip({MEMBER: airfoil_text}))]
    path = download("airfoil", tmp_path / "airfoil", retries=2, **FAST)
    assert path.read_bytes() == airfoil_text


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{ZIP_PATH}"


def test_unreachable_canonical_source_mentions_the_mirror_option(monkeypatch, tmp_path):
    url = closed_port_url()
    monkeypatch.setitem(DATASETS, "airfoil", dataclasses.replace(DATASETS["airfoil"], url=url))
    with pytest.raises(SourceUnreachable) as info:
        download("airfoil", tmp_path / "airfoil", retries=2, **FAST)
    message = str(info.value)
    for fragment in ("airfoil", url, "ConnectionError", "data.mirror", "INTERPLAY_DATA_MIRROR"):
        assert fragment in message
    assert entries(tmp_path) == []


def test_canonical_404_is_not_retried(server, canonical_url, tmp_path):
    with pytest.raises(SourceMissing, match="does not exist"):
        download("airfoil", tmp_path / "airfoil", retries=3, **FAST)
    assert server.requests == [ZIP_PATH]


def test_stale_download_dir_ends_with_exactly_one_file(server, airfoil_text, tmp_path):
    out = tmp_path / "airfoil"
    (out / "old").mkdir(parents=True)
    (out / "airfoil.data").write_text("stale")
    server.routes[ZIP_PATH] = [(200, make_zip({MEMBER: airfoil_text}))]
    download("airfoil", out, mirror=server.url, **FAST)
    assert entries(out) == [MEMBER]


def test_local_mirror_with_uci_layout_and_file_url(airfoil_text, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "291").mkdir(parents=True)
    (mirror / ZIP_PATH.lstrip("/")).write_bytes(make_zip({MEMBER: airfoil_text}))
    for location in (str(mirror), mirror.as_uri()):
        path = download("airfoil", tmp_path / "out", mirror=location)
        assert path.read_bytes() == airfoil_text


def test_missing_local_mirror_directory(tmp_path):
    with pytest.raises(DataError, match="mirror directory .* does not exist"):
        download("airfoil", tmp_path / "out", mirror=str(tmp_path / "nowhere"))
    assert not (tmp_path / "out").exists()


@pytest.mark.mirror
@pytest.mark.parametrize(
    ("dataset", "expected_file"),
    [
        ("concrete", "Concrete_Data.xls"),
        ("energy", "ENB2012_data.xlsx"),
        ("bikesharing", "hour.csv"),
        ("yacht", "yacht_hydrodynamics.data"),
        ("airfoil", "airfoil.data"),
        ("protein", "protein.data"),
        ("ionosphere", "ionosphere.data"),
        ("synthetic_regression_1x", "synthetic_regression_1x.data"),
    ],
)
def test_directory_mirror_with_raw_and_table_files(dataset, expected_file, mirror_dir, tmp_path):
    """The shared mirror holds raw/ originals for four datasets and table files for all."""
    path = download(dataset, tmp_path / "download" / dataset, mirror=str(mirror_dir))
    assert entries(path.parent) == [expected_file]
    table = make_table(dataset, path.parent, tmp_path / f"{dataset}.data")
    assert hashlib.sha256(table.read_bytes()).hexdigest() == DATASETS[dataset].table_sha256


@pytest.mark.mirror
def test_http_mirror_zip_end_to_end(server, mirror_dir, tmp_path):
    """A UCI-style zip made from the mirror's airfoil values converts to the pinned table."""
    rows = (mirror_dir / "airfoil.data").read_text().splitlines()
    original = "".join(row.replace(" ", "\t") + "\r\n" for row in rows).encode()
    server.routes[ZIP_PATH] = [(200, make_zip({MEMBER: original}))]
    path = download("airfoil", tmp_path / "airfoil", mirror=server.url, **FAST)
    table = make_table("airfoil", path.parent, tmp_path / "airfoil.data")
    assert hashlib.sha256(table.read_bytes()).hexdigest() == DATASETS["airfoil"].table_sha256


def test_synthetic_set_is_generated_without_a_mirror(tmp_path):
    # No archive exists for it; the generator reproduces the authors' table (checked by make_table).
    path = download("synthetic_regression_1x", tmp_path / "dl")
    table = make_table("synthetic_regression_1x", path.parent, tmp_path / "synthetic_regression_1x.data")
    assert hashlib.sha256(table.read_bytes()).hexdigest() == DATASETS["synthetic_regression_1x"].table_sha256
    rows = [line.split() for line in table.read_text().splitlines()]
    assert len(rows) == 1000 and rows[0][0] == "-3.0" and rows[-1][0] == "3.0"


def test_resolve_mirror_prefers_config_then_environment(monkeypatch):
    monkeypatch.delenv("INTERPLAY_DATA_MIRROR", raising=False)
    assert resolve_mirror(None) is None
    assert resolve_mirror("  ") is None
    assert resolve_mirror("/data/uci") == "/data/uci"
    monkeypatch.setenv("INTERPLAY_DATA_MIRROR", "http://mirror.example/uci")
    assert resolve_mirror(None) == "http://mirror.example/uci"
    assert resolve_mirror("") == "http://mirror.example/uci"
    assert resolve_mirror("/data/uci") == "/data/uci"


def test_bad_arguments(tmp_path):
    with pytest.raises(UnknownDataset, match="known"):
        download("iris", tmp_path / "out")
    with pytest.raises(ValueError, match="retries"):
        download("airfoil", tmp_path / "out", retries=0)
    with pytest.raises(ValueError, match="timeout"):
        download("airfoil", tmp_path / "out", timeout=0)
    with pytest.raises(DataError, match="unsupported scheme"):
        download("airfoil", tmp_path / "out", mirror="ftp://example.org/uci")
    assert entries(tmp_path) == []


def test_nothing_left_when_the_copy_fails(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "raw").mkdir(parents=True)
    (mirror / "raw" / MEMBER).write_text("1 2 3 4 5 6\n")

    def broken_copy(src, dst, *args, **kwargs):
        Path(dst).write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        download("airfoil", tmp_path / "out" / "airfoil", mirror=str(mirror))
    assert entries(tmp_path / "out") == []


def test_client_error_is_not_retried(server, tmp_path):
    """A 403 is no network hiccup: one attempt, then the message names the URL and the mirror option."""
    server.routes[ZIP_PATH] = [(403, b"forbidden")]
    with pytest.raises(SourceUnreachable) as info:
        download("airfoil", tmp_path / "airfoil", mirror=server.url, retries=3, **FAST)
    assert server.requests == [ZIP_PATH]
    for fragment in (server.url + ZIP_PATH, "1 attempt", "HTTP 403", "data.mirror"):
        assert fragment in str(info.value)
    assert entries(tmp_path) == []


def test_progress_goes_to_the_log(server, airfoil_text, caplog, tmp_path):
    archive = make_zip({MEMBER: airfoil_text})
    server.routes[ZIP_PATH] = [(200, archive)]
    with caplog.at_level("INFO", logger="interplay.data.download"):
        download("airfoil", tmp_path / "airfoil", mirror=server.url, **FAST)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"airfoil: {server.url}")]
    assert progress[-1] == f"airfoil: {server.url}{ZIP_PATH}: done ({len(archive)} bytes)"
    assert [m.rsplit(": ", 1)[1] for m in progress[:-1]] == [f"{p}% of {len(archive)} bytes" for p in (25, 50, 75)]
