"""The two system slots."""

from __future__ import annotations

import enum


class Slot(enum.Enum):
    """A system slot. The value is what the bootloader env and the kernel command line carry."""

    A = "A"
    B = "B"

    def other(self) -> Slot:
        """The opposite slot: the passive one when this one runs."""
        return Slot.B if self is Slot.A else Slot.A

    @classmethod
    def parse(cls, text: str) -> Slot | None:
        """``"A"``/``"B"`` (any case, surrounding blanks ignored) or None for anything else."""
        cleaned = text.strip().upper()
        return cls(cleaned) if cleaned in ("A", "B") else None


#: default partition labels (DESIGN.md 2.1)
DEFAULT_LABELS = {Slot.A: "KSOLOA", Slot.B: "KSOLOB"}
DATA_LABEL = "KSOLODATA"
ESP_LABEL = "KSOLOEFI"
