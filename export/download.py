"""Checked, resumable downloads of published files (the thesis' Git LFS objects, its demo files).

A file is fetched into `<dest>.partial` and renamed to `dest` only after its size and sha256 match the pin,
so nothing under the final name is ever incomplete. An interrupted download keeps its `.partial` and the
next call resumes it with an HTTP Range request (a server that ignores the range restarts it). Hand-written
on urllib rather than `requests`: the runtime does not depend on requests, and resuming plus hashing while
streaming is a few lines. Progress is a tqdm bar on a terminal, log lines otherwise.

Every failure is a `DownloadError` whose message is one line naming the file and what went wrong.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

log = logging.getLogger(__name__)
CHUNK = 1 << 20
TIMEOUT = 30.0  # seconds without data before a download counts as interrupted


class DownloadError(RuntimeError):
    """A download that failed; the message is one line for the user."""


@dataclass(frozen=True)
class PinnedFile:
    path: str  # inside the repository
    sha256: str | None  # None: not pinned (the hash is computed and reported, not checked)
    size: int | None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(dest: Path, pin: PinnedFile) -> bool:
    """`dest` exists with the pinned size (the sha256 was checked before it got this name)."""
    return dest.is_file() and (pin.size is None or dest.stat().st_size == pin.size)


def download(url: str, dest: Path, pin: PinnedFile, progress: bool = True) -> Path:
    """Fetch `url` into `dest`, checked against `pin`; resumes `<dest>.partial`. Returns `dest`."""
    if is_complete(dest, pin):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest, have = hashlib.sha256(), 0
    if partial.exists():
        have = partial.stat().st_size
        if pin.size is not None and have > pin.size:
            partial.unlink()
            have = 0
        else:
            with open(partial, "rb") as stream:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    digest.update(chunk)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have == pin.size:  # the partial file is already whole
            return _finish(partial, dest, pin, digest, url)
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot reach {url} ({reason}); check the network or the base URL") from None
    with response:
        if have and response.status != 206:  # the server sent the whole file: start again
            digest, have = hashlib.sha256(), 0
        total = pin.size or (have + int(response.headers.get("Content-Length") or 0)) or None
        bar = _progress(dest.name, total, have, progress)
        try:
            with open(partial, "ab" if have else "wb") as stream:
                while chunk := response.read(CHUNK):
                    stream.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise DownloadError(f"no space left on the disk for {dest} ({have} of {total} bytes written; "
                                    f"free space and run again to resume)") from None
            raise DownloadError(f"{url}: download interrupted after {have} bytes ({error}); run again to resume") from None
        except HTTPException as error:
            raise DownloadError(f"{url}: download interrupted after {have} bytes ({type(error).__name__}); "
                                "run again to resume") from None
        finally:
            bar.close()
    if pin.size is not None and have < pin.size:
        raise DownloadError(f"{url}: download interrupted after {have} of {pin.size} bytes; run again to resume")
    return _finish(partial, dest, pin, digest, url)


def _finish(partial: Path, dest: Path, pin: PinnedFile, digest, url: str) -> Path:
    size = partial.stat().st_size
    if pin.size is not None and size != pin.size:
        partial.unlink()
        raise DownloadError(f"{url}: got {size} bytes, the pin says {pin.size}; the partial file was removed")
    got = digest.hexdigest()
    if pin.sha256 is not None and got != pin.sha256:
        partial.unlink()
        raise DownloadError(f"{url}: sha256 {got} does not match the pinned {pin.sha256}; the file was removed")
    os.replace(partial, dest)
    os.chmod(dest, 0o644)
    return dest


class _LogProgress:
    """Log lines every 10 % when stderr is not a terminal (tqdm's bar would fill a log with carriage returns)."""

    def __init__(self, name: str, total: int | None, done: int):
        self.name, self.total, self.done, self.next = name, total, done, 0.1

    def update(self, n: int) -> None:
        self.done += n
        if self.total and self.done / self.total >= self.next:
            log.info("%s: %d%% of %.1f MB", self.name, int(100 * self.done / self.total), self.total / 1e6)
            self.next += 0.1

    def close(self) -> None:
        pass


def _progress(name: str, total: int | None, done: int, enabled: bool):
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=name)
        except ImportError:
            pass
    return _LogProgress(name, total, done)
