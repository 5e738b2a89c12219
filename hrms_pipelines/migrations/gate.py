"""The safety gate in front of `apply_migrations`: the analyzer's verdict on the pending files.

Until the analyzer lands (hrms_pipelines.migrations.check) every migration passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Verdict:
    refused: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {"refused": len(self.refused)}

    def refusal_message(self) -> str:
        return "refusing pending migrations with failing safety findings:\n" + "\n".join(self.refused)


def check_pending(pending, *, strict: bool, database, log) -> Verdict:
    return Verdict()
