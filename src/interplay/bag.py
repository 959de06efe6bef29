"""BagIt bags (RFC 8493) packed as one deterministic ``.tar.gz``: write, verify, unpack.

The archive holds one top directory, a complete bag::

    <top>/
        data/...                  the payload (any files; `interplay.bundle` puts a project there)
        bagit.txt                 "BagIt-Version: 1.0", the tag files' encoding
        bag-info.txt              labels given by the caller, plus Payload-Oxum (bytes.files)
        manifest-sha256.txt       "sha256  data/path" per payload file (also `sha256sum -c` format)
        tagmanifest-sha256.txt    sha256 of the three tag files above

Unpacked with plain ``tar``, ``bagit.Bag(<top>).validate()`` passes. The tar is deterministic: payload
sorted by name, then the tag files in the order above; mtime fixed, uid/gid 0, no user names, gzip
header without name or time.

Verify reads the archive once as a stream and checks it as bag validation does (every payload file
against the manifest, no file missing or extra, the tag files against the tag manifest,
Payload-Oxum), plus what only an archive can get wrong: unsafe or duplicate member names, members
that are not regular files, members appended after the tar's end, a bad gzip CRC. No member is held
in memory: each is hashed (and, when unpacking, written) in blocks of READ_BLOCK bytes; the tag
files, read only at their one place ``<top>/<name>``, are kept up to MAX_MANIFEST_BYTES each. The
sha256 of ``tagmanifest-sha256.txt`` is the bag's fingerprint: it covers the manifest (so every
payload byte) and bag-info.txt, and is what a reference kept outside the archive (``expect``) holds.
Unpacking checks the written bag again with the ``bagit`` library.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

PAYLOAD_DIR = "data"
BAGIT_NAME = "bagit.txt"
BAG_INFO_NAME = "bag-info.txt"
MANIFEST_NAME = "manifest-sha256.txt"
TAGMANIFEST_NAME = "tagmanifest-sha256.txt"
TAG_FILES = (BAGIT_NAME, BAG_INFO_NAME, MANIFEST_NAME, TAGMANIFEST_NAME)  # their order in the tar
BAGIT_TEXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
# Verify and unpack read every member in blocks of this size and hold no member whole; the tag files
# (the manifest: about 100 bytes a file) are the members kept in memory, and only up to this size.
READ_BLOCK = 1 << 20
MAX_MANIFEST_BYTES = 8 << 20
# tarfile reads a PAX or GNU long-name header whole, at the size the archive declares.
MAX_HEADER_BYTES = 1 << 20
# Deflate is the cost of writing (~30 MiB/s a core); posteriors are compressed NetCDF already, and
# levels 1 and 6 run about as fast on them, so the default level keeps text and logs small.
GZIP_LEVEL = 6
_DIGEST_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+(.+)")


class BagFormatError(ValueError):
    """A bag cannot be written or a tag file cannot be read; the message names the problem."""


@dataclass(frozen=True)
class Member:
    """One payload file: its path below ``data/`` and its bytes (a file, or the bytes themselves)."""

    path: str
    source: Path | bytes
    executable: bool = False


@dataclass(frozen=True)
class WrittenBag:
    n_files: int
    total_bytes: int
    tagmanifest_sha256: str


@dataclass
class VerifyReport:
    """Outcome of checking an archive as a bag (paths relative to the bag's top directory)."""

    archive: Path
    top: str | None = None
    manifest_sha256: str | None = None  # of tagmanifest-sha256.txt: the bag's fingerprint
    n_files: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered or self.problems)

    def lines(self) -> list[str]:
        """One line per finding, for printing."""
        out = [f"PROBLEM  {p}" for p in self.problems]
        out += [f"MISSING  {p}" for p in self.missing]
        out += [f"EXTRA    {p}" for p in self.extra]
        out += [f"ALTERED  {p}" for p in self.altered]
        return out


# ---------------------------------------------------------------------------------------------
# tag files


def check_member_path(path: str) -> None:
    """Names that a manifest line holds as they are: no newline, backslash or percent sign (which
    RFC 8493 would percent-encode, and `sha256sum -c` would then not find)."""
    if any(c in path for c in "\n\r\\%"):
        raise BagFormatError(f"cannot bag {path!r}: newlines, backslashes and % are not allowed in names")


def manifest_text(digests: dict[str, str]) -> str:
    """A manifest (or tag manifest): ``sha256  path`` per ``{path: sha256}`` entry, sorted by path."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(digests.items()))


def _decode_path(path: str) -> str:
    """RFC 8493 percent-decoding of a manifest path (%0A, %0D, %25)."""
    return re.sub(r"%(0[aAdD]|25)", lambda m: chr(int(m.group(1), 16)), path)


def parse_manifest(text: str) -> dict[str, str]:
    """``{path: sha256}`` of a manifest or tag manifest; raises :class:`BagFormatError` on a
    malformed line or a path listed twice."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _DIGEST_LINE.fullmatch(line)
        if match is None:
            raise BagFormatError(f"manifest line {number} is not 'sha256  path': {line!r}")
        path = _decode_path(match.group(2))
        if path in entries:
            raise BagFormatError(f"manifest lists {path} twice")
        entries[path] = match.group(1).lower()
    return entries


def bag_info_text(info: dict[str, str], total_bytes: int, n_files: int) -> str:
    """bag-info.txt: ``Label: value`` lines in the given order, then Payload-Oxum."""
    lines = []
    for label, value in info.items():
        if not label or any(c in label for c in ":\n\r") or label != label.strip():
            raise BagFormatError(f"bag-info label {label!r} is not a single word-like label")
        if any(c in str(value) for c in "\n\r"):
            raise BagFormatError(f"bag-info value for {label} holds a newline")
        lines.append(f"{label}: {value}\n")
    return "".join(lines) + f"Payload-Oxum: {total_bytes}.{n_files}\n"


def parse_bag_info(text: str) -> dict[str, str]:
    """``{label: value}`` of bag-info.txt (continuation lines, which start with whitespace, joined)."""
    info: dict[str, str] = {}
    label = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and label is not None:
            info[label] += " " + line.strip()
        elif ":" in line:
            label, _, value = line.partition(":")
            label = label.strip()
            info[label] = value.strip()
    return info


# ---------------------------------------------------------------------------------------------
# writing


class _HashingReader:
    """File wrapper that hashes what tarfile reads from it."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


def _tarinfo(name: str, size: int, mtime: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_bag_tar(path: Path | str, top: str, members: list[Member], info: dict[str, str],
                  mtime: int) -> WrittenBag:
    """Stream ``members`` (sorted by path) as the payload of a bag named ``top`` into a
    deterministic tar.gz at ``path``, then its tag files; ``info`` are bag-info.txt's labels."""
    digests: dict[str, str] = {}
    total = 0
    with open(path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL
    ) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = READ_BLOCK
        for member in sorted(members, key=lambda m: m.path):
            check_member_path(member.path)
            name = f"{PAYLOAD_DIR}/{member.path}"
            if name in digests:
                raise BagFormatError(f"two files would be bagged as {name}")
            if isinstance(member.source, bytes):
                opened, size = io.BytesIO(member.source), len(member.source)
            else:
                opened = open(member.source, "rb")  # noqa: SIM115 (closed by the with below)
                size = os.fstat(opened.fileno()).st_size
            with opened as handle:
                reader = _HashingReader(handle)
                tar.addfile(_tarinfo(f"{top}/{name}", size, mtime, member.executable), reader)
            digests[name] = reader.digest.hexdigest()
            total += reader.size
        manifest = manifest_text(digests).encode()
        if len(manifest) > MAX_MANIFEST_BYTES:  # verify would refuse it
            raise BagFormatError(f"the manifest of {len(digests)} files would be {len(manifest)} bytes, more "
                                 f"than the {MAX_MANIFEST_BYTES} that verify reads")
        tags = {BAGIT_NAME: BAGIT_TEXT.encode(), BAG_INFO_NAME: bag_info_text(info, total, len(digests)).encode(),
                MANIFEST_NAME: manifest}
        tags[TAGMANIFEST_NAME] = manifest_text({name: hashlib.sha256(data).hexdigest()
                                                for name, data in tags.items()}).encode()
        for name in TAG_FILES:
            tar.addfile(_tarinfo(f"{top}/{name}", len(tags[name]), mtime, False), io.BytesIO(tags[name]))
    return WrittenBag(len(digests), total, hashlib.sha256(tags[TAGMANIFEST_NAME]).hexdigest())


# ---------------------------------------------------------------------------------------------
# reading


def _safe_relative(name: str) -> bool:
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts and name == path.as_posix()


_WHOLE_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                       tarfile.GNUTYPE_LONGLINK)


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses PAX and GNU long-name headers larger than MAX_HEADER_BYTES, which tarfile would
    otherwise read into memory whole at whatever size the archive declares."""

    def _proc_member(self, tarfile_):
        if self.type in _WHOLE_HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            raise tarfile.SubsequentHeaderError(  # tarfile turns it into ReadError: unreadable
                f"{self.type!r} header of {self.size} bytes, more than the {MAX_HEADER_BYTES} allowed"
            )
        return super()._proc_member(tarfile_)


@dataclass
class _Scan:
    found: dict[str, tuple[int, str]] = field(default_factory=dict)  # member name: (size, sha256)
    modes: dict[str, int] = field(default_factory=dict)
    tags: dict[str, bytes] = field(default_factory=dict)  # <top>/<tag file>: its bytes
    problems: list[str] = field(default_factory=list)


def _scan(archive: Path, extract_to: Path | None = None) -> _Scan:
    """One streaming pass over ``archive``: every regular member hashed (and written under
    ``extract_to``, top directory stripped, when given) in blocks of READ_BLOCK bytes; the tag files
    at ``<top>/`` kept, each up to MAX_MANIFEST_BYTES (a larger one is a problem)."""
    scan = _Scan()
    try:
        # ignore_zeros: read on past end-of-archive blocks and corrupt headers, which tarfile would
        # otherwise take as the end, so appended or hidden members are seen (and reported)
        with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz, tarfile.open(
            fileobj=gz, mode="r|", ignore_zeros=True, tarinfo=_BoundedTarInfo
        ) as tar:
            for member in tar:
                if not member.isreg():
                    if not member.isdir():
                        scan.problems.append(f"{member.name}: not a regular file (type {member.type!r})")
                    continue
                if not _safe_relative(member.name):
                    scan.problems.append(f"{member.name}: unsafe path")
                    continue
                if member.name in scan.found:
                    scan.problems.append(f"{member.name}: stored twice")
                    continue
                handle = tar.extractfile(member)
                digest = hashlib.sha256()
                parts = Path(member.name).parts
                # the tag files count only at their one place, <top>/<name>
                keep = len(parts) == 2 and parts[1] in TAG_FILES
                if keep and member.size > MAX_MANIFEST_BYTES:
                    scan.problems.append(f"{parts[1]} is {member.size} bytes, more than the "
                                         f"{MAX_MANIFEST_BYTES} allowed: not read")
                    keep = False
                kept = io.BytesIO() if keep else None
                target = None
                if extract_to is not None and len(parts) > 1:
                    target = extract_to.joinpath(*parts[1:])
                    target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") if target is not None else contextlib.nullcontext() as sink:
                    while block := handle.read(READ_BLOCK):
                        digest.update(block)
                        if kept is not None:
                            kept.write(block)
                        if sink is not None:
                            sink.write(block)
                scan.found[member.name] = (member.size, digest.hexdigest())
                scan.modes[member.name] = member.mode
                if kept is not None:
                    scan.tags[member.name] = kept.getvalue()
            while gz.read(READ_BLOCK):  # to the end, where gzip checks its CRC and length
                pass
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, ValueError) as error:
        scan.problems.append(f"archive unreadable: {type(error).__name__}: {error}")
    return scan


def _read_tag(report: VerifyReport, tags: dict[str, bytes], name: str, parse):
    """A tag file parsed, or None (too large, absent or unreadable: a problem says so)."""
    data = tags.get(f"{report.top}/{name}")
    if data is None:
        return None
    try:
        return parse(data.decode("utf-8"))
    except (BagFormatError, UnicodeDecodeError) as error:
        report.problems.append(f"{name} unreadable: {error}")
        return None


def _check(archive: Path, scan: _Scan, expect: str | None) -> VerifyReport:
    report = VerifyReport(archive=archive, problems=list(scan.problems))
    tops = sorted({name.split("/", 1)[0] for name in scan.found
                   if name.count("/") == 1 and name.endswith("/" + MANIFEST_NAME)})
    if len(tops) != 1:
        report.problems.append(
            f"expected one <top>/{MANIFEST_NAME}, found {len(tops)}" + (f": {tops}" if tops else "")
        )
        report.extra = sorted(scan.found)
        return report
    top = report.top = tops[0]
    stored: dict[str, tuple[int, str]] = {}
    for name, value in scan.found.items():
        if name.startswith(top + "/"):
            stored[name[len(top) + 1:]] = value
        else:
            report.extra.append(name)
    if f"{top}/{MANIFEST_NAME}" not in scan.tags:  # too large to read: nothing to check against
        return report

    if BAGIT_NAME not in stored:
        report.problems.append(f"{BAGIT_NAME} missing: not a BagIt bag")
    elif "BagIt-Version" not in (_read_tag(report, scan.tags, BAGIT_NAME, parse_bag_info) or {}):
        report.problems.append(f"{BAGIT_NAME} does not declare a BagIt-Version")

    tag_listed = None
    if TAGMANIFEST_NAME not in stored:
        report.problems.append(f"{TAGMANIFEST_NAME} missing")
    elif f"{top}/{TAGMANIFEST_NAME}" in scan.tags:
        report.manifest_sha256 = hashlib.sha256(scan.tags[f"{top}/{TAGMANIFEST_NAME}"]).hexdigest()
        tag_listed = _read_tag(report, scan.tags, TAGMANIFEST_NAME, parse_manifest)
    if tag_listed is not None:
        if MANIFEST_NAME not in tag_listed:
            report.problems.append(f"{TAGMANIFEST_NAME} does not list {MANIFEST_NAME}")
        for rel, digest in sorted(tag_listed.items()):
            if rel not in stored:
                report.missing.append(rel)
            elif stored[rel][1] != digest:
                report.problems.append(
                    f"{rel} altered: its sha256 {stored[rel][1]} differs from {TAGMANIFEST_NAME}")
    if expect is not None and expect.strip().lower() != report.manifest_sha256:
        report.problems.append(
            f"{TAGMANIFEST_NAME} sha256 {report.manifest_sha256} is not the expected {expect.strip().lower()}"
        )

    listed = _read_tag(report, scan.tags, MANIFEST_NAME, parse_manifest)
    if listed is None:
        return report
    report.n_files = len(listed)
    payload = {rel: value for rel, value in stored.items() if rel.startswith(PAYLOAD_DIR + "/")}
    for rel, digest in sorted(listed.items()):
        if not rel.startswith(PAYLOAD_DIR + "/"):
            report.problems.append(f"{MANIFEST_NAME} lists {rel}, which is not in {PAYLOAD_DIR}/")
        elif rel not in payload:
            report.missing.append(rel)
        elif payload[rel][1] != digest:
            report.altered.append(rel)
    tag_names = set(TAG_FILES) | set(tag_listed or ())
    report.extra += sorted(rel for rel in stored if rel not in listed and rel not in tag_names)

    info = _read_tag(report, scan.tags, BAG_INFO_NAME, parse_bag_info) or {}
    if "Payload-Oxum" in info:
        found = f"{sum(size for size, _ in payload.values())}.{len(payload)}"
        if info["Payload-Oxum"] != found:
            report.problems.append(f"Payload-Oxum of {BAG_INFO_NAME} is {info['Payload-Oxum']} (bytes.files), "
                                   f"the payload holds {found}")
    return report


def verify_bag_tar(archive: Path | str, expect: str | None = None) -> VerifyReport:
    """Check ``archive`` as a bag in one streaming pass (and its tag manifest's sha256 against
    ``expect``, a reference kept outside the archive)."""
    archive = Path(archive)
    return _check(archive, _scan(archive), expect)


def unpack_bag_tar(archive: Path | str, target: Path, expect: str | None) -> VerifyReport:
    """Write the bag in ``archive`` to ``target`` (an empty directory; the top directory stripped),
    checking the stream as :func:`verify_bag_tar` does; then check the written bag with the
    ``bagit`` library (findings in the report's problems). Modes: 0755 where the member was
    executable, else 0644."""
    archive = Path(archive)
    scan = _scan(archive, extract_to=target)
    report = _check(archive, scan, expect)
    if not report.ok:
        return report
    for name, mode in scan.modes.items():
        target.joinpath(*Path(name).parts[1:]).chmod(0o755 if mode & 0o111 else 0o644)
    report.problems += validate_unpacked(target)
    return report


def validate_unpacked(path: Path | str) -> list[str]:
    """Findings of ``bagit.Bag(path).validate()`` (empty when the bag is valid), one per line."""
    import bagit

    try:
        bagit.Bag(str(path)).validate(processes=1)
    except bagit.BagValidationError as error:
        details = [str(detail) for detail in getattr(error, "details", None) or ()]
        return [f"bag validation: {detail}" for detail in details] or [f"bag validation: {error}"]
    except bagit.BagError as error:
        return [f"bag validation: {error}"]
    return []
