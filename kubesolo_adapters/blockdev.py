"""Block devices and plain image files as slots: find, size, read the version, write verified.

A slot spec is ``PARTLABEL=X`` (a GPT partition name), ``LABEL=X`` (a
filesystem label), a path to a block device, or a path to a plain image file
(the file *is* the slot: its size is the slot's size and it is never
truncated or extended). Names are found with ``blkid`` and no udev; when
blkid is missing or fails, through /sys/class/block (the partition's uevent
PARTNAME, or the superblocks).

``PARTLABEL=`` is the default and the safe choice: a GPT partition name lives
in the partition table and stays with the slot, while a filesystem label
lives inside the image and travels with it, so after one image was written
to both slots two filesystems carry the same label. The resolver refuses a
name found on two devices rather than guess.

The writer is the one place that destroys data, so it is careful:

* it resolves the slot once and writes only that device or file;
* it refuses before the first byte when the image does not fit, and opens a
  block device with ``O_EXCL`` so a mounted (or otherwise claimed) slot is
  refused with EBUSY instead of being overwritten under a live filesystem;
* it decompresses on the fly with a bounded output per step (a zero-filled
  filesystem image compresses ~1000:1 with gzip and far more with zstd, so an
  unbounded decompress of one 1 MiB network chunk could need gigabytes);
* it holds the first MiB of the image back and writes it last, after the rest
  is on the disk: the superblocks and labels live there, so a write cut short
  leaves the slot's old head (and label) in place instead of a new label on a
  torn filesystem;
* it fsyncs, drops the page cache (BLKFLSBUF for a device, fadvise for a
  file), reads back exactly ``raw_size`` bytes from the medium and compares
  their SHA-256 with the release's ``raw_sha256``.

``read_version`` needs no root where it can: ``debugfs`` reads ext2/3/4 and
``mtype`` (mtools) reads vfat, on image files and on devices, even mounted
ones. Only other filesystems (or missing tools) fall back to a read-only
mount into a temporary directory, which needs root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from kubesolo_adapters.inputs import open_input
from kubesolo_adapters.streams import raw_chunks, tapped
from kubesolo_core.errors import SlotError, VerifyError
from kubesolo_core.ports import Progress, SlotInfo, WriteResult
from kubesolo_core.release import ImageSpec
from kubesolo_core.slots import Slot

__all__ = [
    "BlockSlotStore",
    "Resolver",
    "blkid_resolver",
    "default_resolver",
    "probe_filesystem",
    "raw_chunks",
    "sysfs_resolver",
]

#: ioctl numbers from <linux/fs.h> (BOOTLOADER-FACTS.md section 4)
BLKGETSIZE64 = 0x80081272
BLKFLSBUF = 0x1261

#: bytes at the start of the image written last (superblocks, boot sector, labels)
HEAD_BYTES = 1 << 20

#: a version file longer than this is not a version file
_VERSION_LIMIT = 4096
_TOOL_TIMEOUT = 30.0

#: label -> the devices carrying it
#: (name, kind) -> devices; kind is "LABEL" (filesystem) or "PARTLABEL" (GPT partition name)
Resolver = Callable[..., Sequence[str]]


# --------------------------------------------------------------------------- filesystems


@attrs.frozen(kw_only=True)
class FsProbe:
    """What the first bytes of a slot say: a filesystem kind and its label."""

    kind: str | None  # "ext" or "vfat"; None for anything else
    label: str | None


def probe_filesystem(head: bytes) -> FsProbe:
    """Recognise ext2/3/4 and FAT from the first 4 KiB of a slot (no tools needed)."""
    if len(head) >= 1024 + 0x88 and head[1024 + 0x38 : 1024 + 0x3A] == b"\x53\xef":
        label = head[1024 + 0x78 : 1024 + 0x88].split(b"\0", 1)[0]
        return FsProbe(kind="ext", label=label.decode("utf-8", "replace") or None)
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        fat_sectors16 = struct.unpack_from("<H", head, 0x16)[0]
        if fat_sectors16 and head[0x36:0x39] == b"FAT":
            raw = head[0x2B:0x36]
        elif not fat_sectors16 and head[0x52:0x57] == b"FAT32":
            raw = head[0x47:0x52]
        else:
            return FsProbe(kind=None, label=None)
        text = raw.decode("ascii", "replace").rstrip(" ")
        return FsProbe(kind="vfat", label=None if text in ("", "NO NAME") else text)
    return FsProbe(kind=None, label=None)


def _read_head(path: str, size: int = 4096) -> bytes | None:
    try:
        with Path(path).open("rb", buffering=0) as fh:
            return fh.read(size)
    except OSError:
        return None


# --------------------------------------------------------------------------- resolvers


def blkid_resolver(label: str, kind: str = "LABEL") -> list[str]:
    """Devices whose filesystem label (or GPT partition name) is ``label``, asked of blkid.

    ``-c /dev/null`` makes blkid probe the devices now rather than trust a
    cache file written before the last image write changed a label.
    Raises OSError when blkid is missing or fails (other than "none found").
    """
    proc = subprocess.run(
        ["blkid", "-c", "/dev/null", "-t", f"{kind}={label}", "-o", "device"],
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT,
        check=False,
    )
    if proc.returncode == 2:  # blkid: nothing matched
        return []
    if proc.returncode != 0:
        raise OSError(f"blkid exited {proc.returncode}: {proc.stderr.strip()}")
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def sysfs_resolver(label: str, kind: str = "LABEL") -> list[str]:
    """Devices whose ext/FAT label (or GPT partition name) is ``label``, via /sys/class/block."""
    found = []
    try:
        names = sorted(entry.name for entry in Path("/sys/class/block").iterdir())
    except OSError:
        return []
    for name in names:
        # Optical and floppy drives can block for seconds on a read; slots are never there.
        if name.startswith(("sr", "fd")):
            continue
        dev = f"/dev/{name}"
        if kind == "PARTLABEL":
            if _partname(name) == label:
                found.append(dev)
            continue
        head = _read_head(dev)
        if head and probe_filesystem(head).label == label:
            found.append(dev)
    return found


def _partname(name: str) -> str | None:
    try:
        uevent = Path(f"/sys/class/block/{name}/uevent").read_text()
    except OSError:
        return None
    for line in uevent.splitlines():
        if line.startswith("PARTNAME="):
            return line[len("PARTNAME=") :]
    return None


def default_resolver(label: str, kind: str = "LABEL") -> list[str]:
    """blkid when it is installed and works; the sysfs scan otherwise."""
    if shutil.which("blkid") or Path("/usr/sbin/blkid").exists() or Path("/sbin/blkid").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return blkid_resolver(label, kind)
    return sysfs_resolver(label, kind)


# --------------------------------------------------------------------------- slots


@attrs.frozen(kw_only=True)
class _Target:
    spec: str
    path: str | None = None
    kind: str | None = None  # "block" | "file"; None when missing or unusable
    problem: str = ""


def _version_text(data: bytes | None) -> str | None:
    if not data or len(data) > _VERSION_LIMIT:
        return None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    line = text.splitlines()[0].strip() if text else ""
    if not line or len(line) > 128 or not line.isprintable():
        return None
    return line


def _run_capped(argv: list[str], *, env: Mapping[str, str] | None = None) -> bytes | None:
    """stdout of a tool, or None when it fails, times out or says more than a version file."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or len(proc.stdout) > _VERSION_LIMIT:
        return None
    return proc.stdout


@attrs.define
class BlockSlotStore:
    """The SlotStore port over block devices (found by label or path) and image files."""

    specs: Mapping[Slot, str]
    chunk_size: int = attrs.field(default=4 << 20, kw_only=True)
    resolver: Resolver = attrs.field(default=default_resolver, kw_only=True)

    # ----------------------------------------------------------------- finding

    def _resolve(self, slot: Slot) -> _Target:
        spec = self.specs.get(slot)
        if not spec:
            return _Target(spec="", problem=f"no spec configured for slot {slot.value}")
        path = spec
        key, _, label = spec.partition("=")
        kind = key.upper() if _ else ""
        if kind in ("LABEL", "PARTLABEL"):
            what = "GPT partition named" if kind == "PARTLABEL" else "filesystem labelled"
            try:
                devices = list(self.resolver(label, kind))
            except (OSError, subprocess.SubprocessError) as exc:
                return _Target(spec=spec, problem=f"could not look up {spec!r}: {exc}")
            if not devices:
                return _Target(spec=spec, problem=f"no {what} {label!r} found")
            if len(devices) > 1:
                # Two filesystems with one label: writing either could destroy the wrong one.
                return _Target(
                    spec=spec,
                    problem=f"label {label!r} is carried by {len(devices)} devices "
                    f"({', '.join(devices)}); refusing to guess",
                )
            path = devices[0]
        try:
            st = Path(path).stat()
        except OSError as exc:
            return _Target(spec=spec, path=path, problem=f"{path}: {exc.strerror}")
        if stat.S_ISBLK(st.st_mode):
            return _Target(spec=spec, path=path, kind="block")
        if stat.S_ISREG(st.st_mode):
            return _Target(spec=spec, path=path, kind="file")
        return _Target(
            spec=spec, path=path, problem=f"{path} is neither a block device nor an image file"
        )

    @staticmethod
    def _size(target: _Target) -> int | None:
        assert target.path is not None  # noqa: S101  (callers check kind)
        if target.kind == "file":
            try:
                return Path(target.path).stat().st_size
            except OSError:
                return None
        try:
            fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
                return int(struct.unpack("<Q", buf)[0])
            except OSError:
                pass
            finally:
                os.close(fd)
        # No read permission on the device node: sysfs counts 512-byte sectors for everyone.
        name = Path(os.path.realpath(target.path)).name
        try:
            return int(Path(f"/sys/class/block/{name}/size").read_text()) * 512
        except (OSError, ValueError):
            return None

    def describe(self, slot: Slot) -> SlotInfo:
        """Resolve the slot's spec; a missing, ambiguous or unusable slot has exists=False."""
        target = self._resolve(slot)
        size = self._size(target) if target.kind else None
        return SlotInfo(
            slot=slot,
            spec=target.spec,
            device=target.path if target.kind else None,
            size=size,
            exists=target.kind is not None and size is not None,
            problem=target.problem or None,
        )

    def capacity(self, slot: Slot) -> int | None:
        """The device's size (BLKGETSIZE64) or the image file's size; None when missing."""
        target = self._resolve(slot)
        return self._size(target) if target.kind else None

    # ----------------------------------------------------------------- version

    def read_version(self, slot: Slot) -> str | None:
        """The first line of ``/version`` in the slot's filesystem, None if unreadable."""
        target = self._resolve(slot)
        if target.kind is None or target.path is None:
            return None
        head = _read_head(target.path)
        if head is None:
            return None
        kind = probe_filesystem(head).kind
        data: bytes | None = None
        if kind == "ext" and shutil.which("debugfs"):
            # debugfs opens read-only and works on image files and mounted devices.
            data = _run_capped(["debugfs", "-R", "cat /version", target.path])
        elif kind == "vfat" and shutil.which("mtype"):
            data = _run_capped(
                ["mtype", "-i", target.path, "::/version"],
                env={"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"},
            )
        version = _version_text(data)
        if version is None and data is None and os.geteuid() == 0:
            version = _version_text(self._mount_read(target, kind))
        return version

    @staticmethod
    def _mount_read(target: _Target, kind: str | None) -> bytes | None:
        """Mount read-only into a temporary directory, read /version, unmount (root only)."""
        assert target.path is not None  # noqa: S101
        options = ["ro"]
        if kind == "ext":
            options.append("noload")  # a read-only look must not replay the journal
        if target.kind == "file":
            options.append("loop")
        mnt = tempfile.mkdtemp(prefix="kubesolo-slot-")
        try:
            proc = subprocess.run(
                ["mount", "-o", ",".join(options), target.path, mnt],
                capture_output=True,
                timeout=_TOOL_TIMEOUT,
                check=False,
            )
            if proc.returncode != 0:
                return None
            try:
                # an image's /version may be a FIFO or a device: never block on it
                with open_input(Path(mnt) / "version") as fh:
                    return fh.read(_VERSION_LIMIT + 1)
            except OSError:
                return None
            finally:
                subprocess.run(
                    ["umount", mnt], capture_output=True, timeout=_TOOL_TIMEOUT, check=False
                )
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            with contextlib.suppress(OSError):
                Path(mnt).rmdir()

    # ----------------------------------------------------------------- writing

    def write_image(
        self,
        slot: Slot,
        chunks: Iterator[bytes],
        image: ImageSpec,
        progress: Progress | None = None,
    ) -> WriteResult:
        """Stream ``chunks`` onto ``slot``, decompressed, then read back and verify.

        Raises SlotError when the slot is missing, too small or in use (before
        any byte is written), VerifyError when the stream is corrupt, too long
        or too short, or the read-back hash differs; errors of the ``chunks``
        iterator (FetchError) pass through unchanged.
        """
        target = self._resolve(slot)
        if target.kind is None or target.path is None:
            raise SlotError(
                f"slot {slot.value} ({target.spec or 'no spec'}) not found: {target.problem}",
                way_out="check --slot-a/--slot-b (slot_a=/slot_b= in update.conf)",
            )
        path = target.path
        capacity = self._size(target)
        if capacity is None:
            raise SlotError(f"slot {slot.value} ({path}): its size could not be read")
        if image.raw_size > capacity:
            raise SlotError(
                f"slot {slot.value} ({path}) holds {capacity} bytes, the image needs "
                f"{image.raw_size}; nothing was written",
                way_out="publish an image that fits the slot or repartition",
            )
        fd = self._open_for_write(slot, target)
        try:
            served, written = self._stream(fd, path, chunks, image, progress)
            self._drop_cache(fd, target)
            digest = self._read_back(path, target, image.raw_size)
        finally:
            os.close(fd)  # after the read-back: the O_EXCL claim keeps mounts away meanwhile
        if digest != image.raw_sha256:
            raise VerifyError(
                f"slot {slot.value} ({path}) reads back SHA-256 {digest} over "
                f"{image.raw_size} bytes, the release says {image.raw_sha256}",
                way_out="the slot is not staged; check the disk (dmesg) and the release",
            )
        return WriteResult(written=written, raw_sha256=digest, served_sha256=served)

    @staticmethod
    def _open_for_write(slot: Slot, target: _Target) -> int:
        assert target.path is not None  # noqa: S101
        # No O_CREAT and no O_TRUNC: the slot exists and keeps its size.
        flags = os.O_WRONLY | os.O_CLOEXEC
        if target.kind == "block":
            flags |= os.O_EXCL  # on a block device: EBUSY when mounted or claimed
        try:
            return os.open(target.path, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise SlotError(
                    f"slot {slot.value} ({target.path}) is mounted/in use (EBUSY on an "
                    "exclusive open); nothing was written",
                    way_out="unmount the passive slot; it must not be in use during an update",
                ) from None
            raise SlotError(
                f"slot {slot.value} ({target.path}) could not be opened for writing: "
                f"{exc.strerror}; nothing was written"
            ) from None

    def _stream(
        self,
        fd: int,
        path: str,
        chunks: Iterator[bytes],
        image: ImageSpec,
        progress: Progress | None,
    ) -> tuple[str, int]:
        served = hashlib.sha256()
        plain = image.compression == "none"
        sink = _Sink(
            fd,
            path,
            head_len=min(HEAD_BYTES, image.raw_size),
            chunk_size=self.chunk_size,
            # Uncompressed, the raw pieces are the served bytes: hash them on the
            # writer thread, off the thread that reads the network.
            hasher=served if plain else None,
        )
        written = 0
        try:
            # 1 MiB pieces through the queue; the sink batches them into chunk_size writes.
            piece = min(self.chunk_size, 1 << 20)
            served_stream = chunks if plain else tapped(chunks, served)
            for raw in raw_chunks(served_stream, image.compression, piece):
                if written + len(raw) > image.raw_size:
                    raise VerifyError(
                        f"image decompresses to more than its raw_size {image.raw_size} bytes; "
                        f"nothing past byte {image.raw_size} was written",
                        way_out="the release document does not match its image",
                    )
                sink.put(raw)
                written += len(raw)
                if progress is not None:
                    progress(written, image.raw_size)
            if written != image.raw_size:
                raise VerifyError(
                    f"image ended after {written} raw bytes, the release says raw_size "
                    f"{image.raw_size} (truncated or corrupt {image.compression} stream)",
                    way_out="the slot is not staged; retry the apply",
                )
        except BaseException:
            sink.abort()  # no head: the slot keeps its old superblock and label
            raise
        sink.finish()
        return served.hexdigest(), written

    @staticmethod
    def _drop_cache(fd: int, target: _Target) -> None:
        # The read-back must come from the medium, not from the pages just written.
        if target.kind == "block":
            try:
                fcntl.ioctl(fd, BLKFLSBUF, 0)
                return
            except OSError:
                pass  # BLKFLSBUF needs CAP_SYS_ADMIN; fadvise is the best effort left
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def _read_back(self, path: str, target: _Target, size: int) -> str:
        try:
            rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SlotError(f"{path} could not be reopened for read-back: {exc.strerror}") from None
        digest = hashlib.sha256()
        length = min(self.chunk_size, max(size, 1))
        # Two buffers: the medium fills one while the other is hashed (both drop the GIL).
        bufs = (bytearray(length), bytearray(length))

        def read(index: int, offset: int) -> int:
            want = min(length, size - offset)
            return os.preadv(rfd, [memoryview(bufs[index])[:want]], offset)

        try:
            if target.kind == "file":
                with contextlib.suppress(OSError):
                    os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_DONTNEED)
            with ThreadPoolExecutor(1, thread_name_prefix="kubesolo-readback") as pool:
                done = 0
                index = 0
                pending = pool.submit(read, 0, 0)
                while done < size:
                    got = pending.result()
                    if got == 0:
                        raise VerifyError(f"{path} read back only {done} of {size} bytes")
                    if done + got < size:
                        pending = pool.submit(read, 1 - index, done + got)
                    digest.update(memoryview(bufs[index])[:got])
                    done += got
                    index = 1 - index
        except OSError as exc:
            raise SlotError(f"{path}: read-back failed: {exc.strerror}") from None
        finally:
            os.close(rfd)
        return digest.hexdigest()


_FINISH = object()
_ABORT = object()
#: a batch of pieces is written with one pwritev; IOV_MAX is 1024 on Linux
_MAX_IOV = 512


class _Sink:
    """The disk side of a slot write, on its own thread, so network and disk work at once.

    Takes raw pieces in stream order through a short queue (its depth bounds
    the memory), holds the first ``head_len`` bytes back, writes the rest in
    batches of about ``chunk_size`` with pwritev (no copy into one buffer),
    and on :meth:`finish` flushes, fsyncs, writes the head and fsyncs again.
    :meth:`abort` stops without writing the head.
    """

    def __init__(
        self,
        fd: int,
        path: str,
        *,
        head_len: int,
        chunk_size: int,
        hasher: hashlib._Hash | None,
        depth: int = 3,
    ) -> None:
        self._fd = fd
        self._path = path
        self._head_len = head_len
        self._chunk_size = chunk_size
        self._hasher = hasher
        self._head = bytearray()
        self._batch: list[memoryview] = []
        self._batch_len = 0
        self._offset = head_len
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kubesolo-slot-writer", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        """Queue a piece (waits while the queue is full); raise the writer's error, if any."""
        if self.error is not None:
            raise self.error
        self._queue.put(data)

    def finish(self) -> None:
        """Write everything and the head, durably; raise the writer's error, if any."""
        self._queue.put(_FINISH)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop after the pieces already queued, leaving the old head in place."""
        self._queue.put(_ABORT)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _FINISH or item is _ABORT:
                if item is _FINISH and self.error is None:
                    try:
                        self._flush()
                        _fsync(self._fd, self._path)
                        # The head last: until now the slot kept its old superblock and label.
                        _pwrite_all(self._fd, self._path, self._head, 0)
                        _fsync(self._fd, self._path)
                    except BaseException as exc:  # handed to the main thread
                        self.error = exc
                return
            if self.error is not None or not isinstance(item, bytes | bytearray):
                continue  # keep draining so the main thread never blocks on a dead writer
            try:
                self._take(item)
            except BaseException as exc:  # handed to the main thread
                self.error = exc

    def _take(self, data: bytes | bytearray) -> None:
        if self._hasher is not None:
            self._hasher.update(data)
        view = memoryview(data)
        if len(self._head) < self._head_len:
            take = self._head_len - len(self._head)
            self._head += view[:take]
            view = view[take:]
        if view:
            self._batch.append(view)
            self._batch_len += len(view)
        if self._batch_len >= self._chunk_size or len(self._batch) >= _MAX_IOV:
            self._flush()

    def _flush(self) -> None:
        bufs = self._batch
        total = self._batch_len
        done = 0
        try:
            while done < total:
                n = os.pwritev(self._fd, bufs, self._offset + done)
                done += n
                # A short write: drop what went out, keep the rest of a half-written buffer.
                while bufs and n >= len(bufs[0]):
                    n -= len(bufs[0])
                    bufs = bufs[1:]
                if bufs and n:
                    bufs = [bufs[0][n:], *bufs[1:]]
        except OSError as exc:
            raise SlotError(
                f"{self._path}: write at byte {self._offset + done} failed: {exc.strerror}"
            ) from None
        self._offset += total
        self._batch = []
        self._batch_len = 0


def _pwrite_all(fd: int, path: str, data: bytearray, offset: int) -> int:
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError as exc:
        raise SlotError(f"{path}: write at byte {offset + done} failed: {exc.strerror}") from None
    finally:
        view.release()
    return done


def _fsync(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SlotError(f"{path}: fsync failed: {exc.strerror}") from None
