"""The Fetcher contract against the in-memory fake (kubesolo_adapters.fakes)."""

from __future__ import annotations

import pytest

from kubesolo_adapters.fakes import MemoryFetcher
from tests.contract.fetch_suite import FetcherFaultContract, FetchRig

BASE = "https://updates.example.invalid/stable/"


class TestMemoryFetcher(FetcherFaultContract):
    @pytest.fixture
    def rig(self) -> FetchRig:
        fetcher = MemoryFetcher()

        def publish(name: str, data: bytes) -> str:
            url = BASE + name
            fetcher.documents[url] = data
            fetcher.images[url] = data
            return url

        def inject(kind: str, size: int) -> None:
            if kind == "fail":
                fetcher.fail_next = 1000
            elif kind == "truncate":
                fetcher.truncate_next = 1000
                fetcher.truncate_at = size // 2
            elif kind == "stall":
                fetcher.stall_next = 1000
            else:
                raise ValueError(kind)

        return FetchRig(
            fetcher=fetcher,
            release_url=BASE + "release.json",
            publish=publish,
            missing_url=BASE + "nothing-here.json",
            inject=inject,
        )
