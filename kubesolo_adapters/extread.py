"""One small file from the root directory of an ext2/3/4 filesystem, read without tools.

``status`` shows the version in each slot, and asking ``debugfs`` for it
costs a process per slot at every start. This module reads ``/version``
itself along the one path a slot image takes in practice: the superblock,
a group descriptor, the root directory's inode and blocks (searched entry by
entry, as debugfs does, so an indexed directory works too), the file's inode
and its data, through block maps (ext2/3) or extent trees (ext4). Each
answer is read from the slot at the moment it is asked, so it is never
stale, whoever wrote the slot.

It is deliberately not a filesystem driver: anything off that path returns
None and the caller asks debugfs. That covers a journal that still needs
recovery (the on-disk blocks may be old), features it does not know (meta
block groups, compression, case folding, encryption), inline data, a
``version`` that is not a regular file, holes, and any metadata that does
not add up. tests/contract/test_extread.py holds the answers equal to
debugfs's on filesystems made by mkfs.ext2/3/4 with the common options.
"""

from __future__ import annotations

import os
import struct

__all__ = ["read_root_file"]

_SUPERBLOCK = 1024
_MAGIC = 0xEF53
_ROOT_INO = 2

# incompat features that change nothing on the path read here (the others refuse)
_FILETYPE = 0x2
_RECOVER = 0x4
_EXTENTS = 0x40
_64BIT = 0x80
_KNOWN_INCOMPAT = (
    _FILETYPE | _EXTENTS | _64BIT | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000
)  # + MMP, FLEX_BG, EA_INODE, CSUM_SEED, LARGEDIR, INLINE_DATA (refused per inode)

# inode flags
_EXTENTS_FL = 0x80000
#: compression (ext2), encryption, an xattr-value inode, inline data, case folding
_REFUSED_FL = 0x4 | 0x200 | 0x800 | 0x200000 | 0x10000000 | 0x40000000

_S_IFMT = 0xF000
_S_IFREG = 0x8000
_S_IFDIR = 0x4000

_EXTENT_MAGIC = 0xF30A
_MAX_DEPTH = 5
#: blocks of the root directory searched at most (a slot's root lists a few dozen names)
_MAX_DIR_BLOCKS = 256
#: the largest file read (the caller's limit is at most this)
_MAX_READ = 1 << 20
#: ext4's limit on a block size
_MAX_BLOCK = 65536


class _Unsure(Exception):
    """Something off the common path: the caller asks debugfs instead."""


def read_root_file(path: str, name: str, limit: int) -> bytes | None:
    """The first ``limit`` bytes of ``/name`` in the ext filesystem at ``path``.

    ``b""`` when the root directory has no entry ``name`` (as debugfs prints
    nothing then); None when this reader cannot be sure (see the module
    docstring) or ``path`` cannot be read.
    """
    if not 0 <= limit <= _MAX_READ:
        raise ValueError(f"limit {limit} out of range")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return _Ext(fd).root_file(name.encode(), limit)
    except (_Unsure, OSError, struct.error, IndexError):
        return None
    finally:
        os.close(fd)


class _Ext:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        sb = self._pread(_SUPERBLOCK, 1024)
        (magic,) = struct.unpack_from("<H", sb, 0x38)
        if magic != _MAGIC:
            raise _Unsure("not ext2/3/4")
        log_block = struct.unpack_from("<I", sb, 0x18)[0]
        if log_block > 6:
            raise _Unsure("block size")
        self.block = 1024 << log_block
        self.inodes_per_group = struct.unpack_from("<I", sb, 0x28)[0]
        self.inodes_count = struct.unpack_from("<I", sb, 0x00)[0]
        rev = struct.unpack_from("<I", sb, 0x4C)[0]
        incompat = struct.unpack_from("<I", sb, 0x60)[0] if rev >= 1 else 0
        if incompat & ~_KNOWN_INCOMPAT or incompat & _RECOVER:
            raise _Unsure("features")
        self.filetype = bool(incompat & _FILETYPE)
        self.inode_size = struct.unpack_from("<H", sb, 0x58)[0] if rev >= 1 else 128
        self.desc_size = struct.unpack_from("<H", sb, 0xFE)[0] if incompat & _64BIT else 32
        if (
            self.inodes_per_group == 0
            or self.inode_size < 128
            or self.inode_size & (self.inode_size - 1)
            or self.inode_size > self.block
            or self.desc_size < 32
            or self.desc_size & (self.desc_size - 1)
            or self.desc_size > self.block
        ):
            raise _Unsure("geometry")

    def _pread(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise _Unsure("short read")
        return data

    def _read_block(self, number: int) -> bytes:
        if number == 0:
            raise _Unsure("a hole")
        return self._pread(number * self.block, self.block)

    def _inode(self, ino: int) -> bytes:
        if not 1 <= ino <= self.inodes_count:
            raise _Unsure("inode number")
        group, index = divmod(ino - 1, self.inodes_per_group)
        # the descriptors follow the superblock's block (block 1 with 1 KiB blocks,
        # even when bigalloc makes s_first_data_block 0)
        desc_at = (_SUPERBLOCK // self.block + 1) * self.block + group * self.desc_size
        desc = self._pread(desc_at, self.desc_size)
        table = struct.unpack_from("<I", desc, 0x8)[0]
        if self.desc_size >= 64:
            table |= struct.unpack_from("<I", desc, 0x28)[0] << 32
        flags = struct.unpack_from("<H", desc, 0x12)[0]
        if flags & 0x1:  # INODE_UNINIT: the table was never written
            raise _Unsure("uninitialised inode table")
        inode = self._pread(table * self.block + index * self.inode_size, 128)
        (links,) = struct.unpack_from("<H", inode, 0x1A)
        (iflags,) = struct.unpack_from("<I", inode, 0x20)
        if links == 0 or iflags & _REFUSED_FL:
            raise _Unsure("inode flags")
        return inode

    def _blocks(self, inode: bytes, count: int) -> list[int]:
        """The physical numbers of the first ``count`` logical blocks (no holes allowed)."""
        iblock = inode[0x28 : 0x28 + 60]
        if struct.unpack_from("<I", inode, 0x20)[0] & _EXTENTS_FL:
            found: dict[int, int] = {}
            self._extents(iblock, count, found, _MAX_DEPTH)
            try:
                return [found[n] for n in range(count)]
            except KeyError:
                raise _Unsure("a hole") from None
        pointers = list(struct.unpack("<15I", iblock))
        direct = pointers[:12]
        if count > 12:
            per_block = self.block // 4
            if count > 12 + per_block:
                raise _Unsure("a large block-mapped file")
            indirect = self._read_block(pointers[12])
            direct += list(struct.unpack(f"<{per_block}I", indirect))
        blocks = direct[:count]
        if 0 in blocks:
            raise _Unsure("a hole")
        return blocks

    def _extents(self, node: bytes, count: int, found: dict[int, int], depth_left: int) -> None:
        magic, entries, most, depth = struct.unpack_from("<4H", node, 0)
        if magic != _EXTENT_MAGIC or entries > most or 12 + 12 * entries > len(node):
            raise _Unsure("extent header")
        if depth > 0:
            if depth_left <= 0:
                raise _Unsure("extent depth")
            for n in range(entries):
                first, lo, hi = struct.unpack_from("<IIH", node, 12 + 12 * n)
                if first < count:
                    child = self._read_block(hi << 32 | lo)
                    self._extents(child, count, found, depth_left - 1)
            return
        for n in range(entries):
            first, length, hi, lo = struct.unpack_from("<IHHI", node, 12 + 12 * n)
            if length > 32768:  # an unwritten extent reads as zeros: leave it to debugfs
                raise _Unsure("unwritten extent")
            start = hi << 32 | lo
            for k in range(min(length, max(count - first, 0))):
                found[first + k] = start + k

    def _find(self, dir_ino: int, name: bytes) -> int | None:
        inode = self._inode(dir_ino)
        if struct.unpack_from("<H", inode, 0)[0] & _S_IFMT != _S_IFDIR:
            raise _Unsure("not a directory")
        size = struct.unpack_from("<I", inode, 0x04)[0]
        count, rest = divmod(size, self.block)
        if rest or not 0 < count <= _MAX_DIR_BLOCKS:
            raise _Unsure("directory size")
        for number in self._blocks(inode, count):
            block = self._read_block(number)
            pos = 0
            while pos < self.block:
                if pos + 8 > self.block:
                    raise _Unsure("directory entry")
                ino, rec_len, name_len = struct.unpack_from("<IHH", block, pos)
                if self.filetype:
                    name_len &= 0xFF  # the high byte is the entry's file type
                if rec_len < 8 or rec_len % 4 or pos + rec_len > self.block:
                    raise _Unsure("directory entry")
                if ino and name_len:
                    if 8 + name_len > rec_len:
                        raise _Unsure("directory entry")
                    if block[pos + 8 : pos + 8 + name_len] == name:
                        return int(ino)
                pos += rec_len
        return None

    def root_file(self, name: bytes, limit: int) -> bytes:
        ino = self._find(_ROOT_INO, name)
        if ino is None:
            return b""
        inode = self._inode(ino)
        if struct.unpack_from("<H", inode, 0)[0] & _S_IFMT != _S_IFREG:
            raise _Unsure("not a regular file")
        size = struct.unpack_from("<I", inode, 0x04)[0]
        size |= struct.unpack_from("<I", inode, 0x6C)[0] << 32
        want = min(size, limit)
        count = -(-want // self.block)
        data = b"".join(self._read_block(n) for n in self._blocks(inode, count))
        return data[:want]
