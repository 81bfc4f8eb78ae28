"""What the service has done, in files and samples: saved in every checkpoint, shown in the status file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """One object per worker, shared by reference with its checkpointing and heartbeat (so restored in place)."""

    files_processed: int = 0
    files_failed: int = 0
    samples: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"files_processed": self.files_processed, "files_failed": self.files_failed, "samples": self.samples}

    def restore(self, saved: dict[str, int]) -> None:
        """Continue from a checkpoint's counts (an unknown key is refused, as the constructor refuses it)."""
        restored = Counters(**saved)
        self.files_processed, self.files_failed, self.samples = restored.files_processed, restored.files_failed, restored.samples
