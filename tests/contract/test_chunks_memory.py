"""The ChunkSource contract against the in-memory chunk store."""

from __future__ import annotations

import hashlib

import pytest

from kubesolo_adapters.fakes.chunks import MemoryChunkSource, index_for
from kubesolo_core.chunks import DEFAULT_PARAMS, ChunkIndex, parse_index
from kubesolo_core.release import ChunksSpec
from tests.contract.chunks_suite import ChunkRig, ChunkSourceContract

URL = "https://updates.example.invalid/stable/release.json"


class TestMemoryChunkSource(ChunkSourceContract):
    @pytest.fixture
    def rig(self) -> ChunkRig:
        source = MemoryChunkSource()

        def publish(image: bytes, name: str) -> tuple[ChunksSpec, ChunkIndex]:
            index = index_for(image, DEFAULT_PARAMS)
            spec = ChunksSpec(
                index=f"{name}.chunks",
                sha256=hashlib.sha256(index).hexdigest(),
                size=len(index),
            )
            source.publish(URL, spec, index, image)
            return spec, parse_index(index)

        def damage(sha: bytes, how: str) -> None:
            (source.missing if how == "missing" else source.corrupt).add(sha)

        return ChunkRig(source=source, release_url=URL, publish=publish, damage=damage)
