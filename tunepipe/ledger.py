"""The ledger: every input record ends in the output or in the rejects file, with its place and reason."""
from __future__ import annotations

from collections import Counter
from typing import Any

from tunepipe.errors import StageError

REJECT_KEEP_CHARS = 100_000


class Ledger:
    """Counts records read, written, rejected and dropped, and keeps every record not written with its place.

    rejected: bad input (counts toward the reject-rate limit). dropped: good input left out on purpose, such
    as rows down-sampled to reach a class ratio (kept with its reason, not an error). synthesized: rows made
    by the converter with no raw record behind them. The books balance when
    read + synthesized = written + rejected + dropped.
    """

    def __init__(self, name: str):
        self.name = name
        self.read = 0
        self.synthesized = 0
        self.written = Counter()  # by split
        self.rejected: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []

    def reject(self, where: str, reason: str, record: Any = None) -> None:
        """`where` is 'file:line' or 'file#id' and the raw record is kept, so nothing is lost.

        A raw line past REJECT_KEEP_CHARS (a 50 MB garbage line) keeps its start and says how long it
        was; `where` still points at the whole of it in the raw file.
        """
        entry = {"where": where, "reason": reason, "record": record}
        if isinstance(record, str) and len(record) > REJECT_KEEP_CHARS:
            entry.update(record=record[:REJECT_KEEP_CHARS], truncated_from_chars=len(record))
        self.rejected.append(entry)

    def drop(self, where: str, reason: str, record: Any = None) -> None:
        self.dropped.append({"where": where, "reason": reason, "record": record, "dropped": True})

    def reasons(self, entries: list[dict[str, Any]] | None = None) -> dict[str, int]:
        entries = self.rejected if entries is None else entries
        return dict(sorted(Counter(r["reason"].split(":")[0] for r in entries).items()))

    def summary(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "synthesized": self.synthesized,
            "written": sum(self.written.values()),
            "written_by_split": dict(sorted(self.written.items())),
            "rejected": len(self.rejected),
            "rejected_by_reason": self.reasons(),
            "dropped": len(self.dropped),
            "dropped_by_reason": self.reasons(self.dropped),
        }

    def check(self, max_reject_rate: float, max_drop_rate: float = 0.5) -> None:
        """Print the ledger; fail when records went missing, the reject rate passes its threshold, or options
        would leave out (drop) more than `max_drop_rate` of the good input: no default should discard most
        of a user's data quietly."""
        info = self.summary()
        extra = f" + synthesized {info['synthesized']}" if info["synthesized"] else ""
        dropped = f", dropped {info['dropped']} {info['dropped_by_reason']}" if info["dropped"] else ""
        print(f"[{self.name}] read {info['read']}{extra}, written {info['written']} {info['written_by_split']}, "
              f"rejected {info['rejected']} {info['rejected_by_reason']}{dropped}")
        if info["read"] + info["synthesized"] != info["written"] + info["rejected"] + info["dropped"]:
            raise StageError(f"{self.name}: ledger does not balance: read {info['read']} + synthesized "
                             f"{info['synthesized']} != written {info['written']} + rejected {info['rejected']} "
                             f"+ dropped {info['dropped']}")
        rate = info["rejected"] / info["read"] if info["read"] else 0.0
        if rate > max_reject_rate:
            first = self.rejected[0]
            raise StageError(f"{self.name}: {rate:.1%} of records rejected (limit {max_reject_rate:.1%}); "
                             f"first: {first['where']}: {first['reason']}")
        good = info["read"] + info["synthesized"] - info["rejected"]
        dropped = info["dropped"] / good if good else 0.0
        if dropped > max_drop_rate:
            raise StageError(f"{self.name}: the options leave out {info['dropped']} of {good} good records "
                             f"({dropped:.0%}, limit max_drop_rate {max_drop_rate:.0%}): {self.dropped[0]['reason']}; "
                             f"change the options or raise max_drop_rate (every dropped record is in the rejects file)")
