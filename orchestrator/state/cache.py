"""The records this process last wrote, or was told of by a refused compare-and-set.

``update`` applies its function to the remembered record and sends the write at once,
with the version and value text it started from: the compare-and-set goes in only if
the record still holds exactly those, and is otherwise refused with the record's
current version and value, which become the next attempt's basis. A remembered record
therefore spares the read when no other process wrote the key since, and costs nothing
in correctness when one did: nothing is ever written on the strength of the cache
alone. Least recently used records go first past a byte budget; large records are
not kept (their update reads them).

Where other processes write the same keys as often as this one (many writers over a
wide key space), a remembered record is mostly stale, and its refused compare-and-set
costs more than a plain read. So the cache also tracks how often its records proved
current (a moving average over about the last ``FRESHNESS_WINDOW`` updates that had
one): below ``TRUST_AT`` an update reads first, and the remembered record is only
compared with what was read, which keeps the average current, and trusted again once
it is.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from orchestrator.state.record import Basis

# Per process. A worker touching more records than fit simply reads the others first.
BUDGET_BYTES = 8 * 1024 * 1024
# Past this a record's text is sent twice by a remembered compare-and-set (once as the
# expected value); a read is cheaper than that.
MAX_RECORD_BYTES = 16 * 1024
FRESHNESS_WINDOW = 32
TRUST_AT = 0.5


class RecordCache:
    """State key -> :class:`Basis`, least recently used out first; thread-safe."""

    def __init__(self, budget_bytes: int = BUDGET_BYTES,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.max_record_bytes = max_record_bytes
        self.size = 0
        self.freshness = 1.0  # share of remembered records found current, lately
        self._records: OrderedDict[str, Basis] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> Basis | None:
        with self._lock:
            found = self._records.get(key)
            if found is not None:
                self._records.move_to_end(key)
            return found

    def put(self, key: str, basis: Basis) -> None:
        with self._lock:
            old = self._records.pop(key, None)
            if old is not None:
                self.size -= len(old.text)
            if len(basis.text) > self.max_record_bytes:
                return
            self._records[key] = basis
            self.size += len(basis.text)
            while self.size > self.budget_bytes:
                _, dropped = self._records.popitem(last=False)
                self.size -= len(dropped.text)

    def trusted(self) -> bool:
        """Whether an update should write on a remembered record without reading."""
        return self.freshness >= TRUST_AT

    def observe(self, current: bool) -> None:
        """Count one remembered record found ``current`` (or not)."""
        self.freshness += (float(current) - self.freshness) / FRESHNESS_WINDOW

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self.size = 0
