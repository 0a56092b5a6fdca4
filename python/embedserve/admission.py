"""Who gets a 429: admission by estimated wait against a target that follows the service time.

Pure policy, no threads and no clock of its own: the batcher calls it under its lock with the
time and the waits it computed, so every rule here is tested by feeding numbers
(tests/reliability/test_admission_policy.py).

Why a moving target. A fixed `--max-wait-seconds` of 10 s admits about 5 s of queued work at 10x
offered load (320 closed-loop clients), so admitted latency is queueing time; 1.5 s met the
latency goal on one machine, but the right number depends on the model's speed on the hardware
at hand. The unit that does not depend on either is one model run: `service_seconds` is a full
batch's token budget at the measured throughput. The target is TARGET_BATCHES of them (3: at 10x
load on the 2-core bench machine, 4 gave an admitted p99 of 2.9x the unloaded one and 3 gave 2.7x
at 95 % goodput; bench/NOTES.md), within [MIN_TARGET_SECONDS, TARGET_SHARE_OF_CEILING x
max_wait_seconds]: an admitted request waits about a target and a half under overload (the
target, then its window), so on a machine slow enough to reach the bound it still finishes within
the ceiling.

When the target applies (CoDel's idea: a good queue drains, a standing one does not). Bursts and
closed-loop traffic at capacity make queues too: 32 clients x 32 texts keep about 12 full model
runs queued, and refusing them would only lose throughput. So the ceiling (`max_wait_seconds`)
applies until the wait an interactive request meets has stayed above DETECT_BATCHES full model
runs (at most DETECT_SHARE_OF_CEILING of the ceiling, which admission keeps every wait under) for
a whole interval (one target, at least MIN_INTERVAL_SECONDS), sampled at each arrival. The
detection level is counted in model runs, not targets, because it must stay above what such a
closed loop keeps queued while the target should be low. The server is then *overloaded*:
interactive work is admitted up to the target, the batching window shrinks to
OVERLOADED_WINDOW_SHARE of it, and the batcher sheds the queued requests that would still finish
past the limit (429 with Retry-After, like a refusal at arrival): a jump from idle to 10x load
admits a burst up to the ceiling before the interval has passed, and serving that burst would set
the admitted tail for seconds. An admitted request then waits about one target plus half a window.
It stays overloaded until nothing was refused for QUIET_SECONDS (at least QUIET_TARGETS targets):
clients told to retry come back after whole seconds, and leaving at the first short queue would
let their return fill the queue to the ceiling again.

Priorities. Batch work is admitted up to BATCH_SHARE of the interactive limit, and against all
queued work, while interactive work counts only the interactive work ahead of it (the batcher
serves it first): under pressure batch is refused first, and a batch flood never makes an
interactive request wait in admission.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

# The target, in full model runs: what an admitted request may wait under overload.
TARGET_BATCHES = 3
MIN_TARGET_SECONDS = 0.1
TARGET_SHARE_OF_CEILING = 0.5
# A standing queue: the interactive wait stayed above this many full model runs for an interval
# (above the ~12 that 32 closed-loop clients x 32 short texts keep queued at capacity).
DETECT_BATCHES = 16
DETECT_SHARE_OF_CEILING = 0.75
MIN_INTERVAL_SECONDS = 0.1
# Overloaded until nothing was refused for this long (Retry-After is in whole seconds).
QUIET_SECONDS = 3.0
QUIET_TARGETS = 4.0
# Batch work is admitted up to this share of the interactive limit.
BATCH_SHARE = 0.5
# Not overloaded, a window holds at most this share of the ceiling (at least
# MIN_WINDOW_SECONDS): long windows pad less (bench/NOTES.md, "Window length follows the
# admitted wait"). Overloaded, at most this share of the target.
WINDOW_SHARE_OF_WAIT = 0.25
MIN_WINDOW_SECONDS = 0.5
OVERLOADED_WINDOW_SHARE = 0.5
# Weight of the newest batch in the throughput estimate: a few batches adapt it to a new mix.
RATE_SMOOTHING = 0.2
# Retry-After never says more than this: a client should come back and look again.
MAX_RETRY_AFTER = 60


class Priority(str, enum.Enum):
    """Interactive work (the default) is served first; batch work fills idle capacity."""

    INTERACTIVE = "interactive"
    BATCH = "batch"

    @classmethod
    def parse(cls, value: str | None) -> Priority | None:
        """A header's or field's value (case-insensitive); None when absent. Raises ValueError
        naming the allowed values."""
        if value is None:
            return None
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"priority must be one of {allowed}, got {value!r}") from None


@dataclass(frozen=True)
class Refusal:
    """A request that would finish in `wait` seconds against a `limit`: answer 429."""

    wait: float
    limit: float

    @property
    def retry_after(self) -> int:
        return min(MAX_RETRY_AFTER, max(1, math.ceil(self.wait - self.limit)))


class AdmissionPolicy:
    """The measured throughput, the target it gives, and the overload state."""

    def __init__(self, max_wait_seconds: float, batch_tokens: int) -> None:
        if max_wait_seconds <= 0:
            raise ValueError("max_wait_seconds must be > 0")
        self.max_wait_seconds = max_wait_seconds
        self.batch_tokens = batch_tokens
        self.rate: float | None = None  # real tokens per second of model time; None: unmeasured
        self.overloaded = False
        self._above_since: float | None = None  # first arrival of the current standing queue
        self._last_refusal = -math.inf

    def record_batch(self, tokens: int, seconds: float) -> None:
        """Fold one batch (`tokens` real tokens in `seconds` of model time) into the rate."""
        measured = tokens / max(seconds, 1e-6)
        self.rate = (
            measured if self.rate is None else self.rate + RATE_SMOOTHING * (measured - self.rate)
        )

    def seconds_for(self, tokens: int) -> float:
        """Model time for `tokens` at the measured rate (0 while unmeasured)."""
        return tokens / self.rate if self.rate else 0.0

    @property
    def service_seconds(self) -> float | None:
        """One full batch at the measured rate."""
        return self.batch_tokens / self.rate if self.rate else None

    @property
    def target(self) -> float:
        service = self.service_seconds
        ceiling = TARGET_SHARE_OF_CEILING * self.max_wait_seconds
        if service is None:
            return ceiling
        return min(ceiling, max(MIN_TARGET_SECONDS, TARGET_BATCHES * service))

    @property
    def detect_seconds(self) -> float:
        """A wait above this, standing for an interval, is overload."""
        ceiling = DETECT_SHARE_OF_CEILING * self.max_wait_seconds
        service = self.service_seconds
        return ceiling if service is None else min(ceiling, DETECT_BATCHES * service)

    def limit(self, priority: Priority = Priority.INTERACTIVE) -> float:
        """The longest estimated wait admitted now for `priority`."""
        limit = self.target if self.overloaded else self.max_wait_seconds
        return limit * BATCH_SHARE if priority is Priority.BATCH else limit

    @property
    def window_seconds(self) -> float:
        """The most work one batching window may hold now."""
        if self.overloaded:
            return OVERLOADED_WINDOW_SHARE * self.target
        return max(MIN_WINDOW_SECONDS, WINDOW_SHARE_OF_WAIT * self.max_wait_seconds)

    def observe(self, now: float, interactive_wait: float) -> bool:
        """An arrival met `interactive_wait` seconds of interactive work ahead of it. True when
        this arrival confirms overload: the caller sheds what is queued past the new limit."""
        target = self.target
        if self.overloaded:
            if now - self._last_refusal >= max(QUIET_SECONDS, QUIET_TARGETS * target):
                self.overloaded = False
                self._above_since = None
            return False
        if interactive_wait <= self.detect_seconds:
            self._above_since = None
        elif self._above_since is None:
            self._above_since = now
        elif now - self._above_since >= max(MIN_INTERVAL_SECONDS, target):
            self.overloaded = True
            self._last_refusal = now  # the quiet period starts now
            return True
        return False

    def decide(
        self, now: float, priority: Priority, wait: float, own: float = 0.0
    ) -> Refusal | None:
        """Admit (None) or refuse a request that would finish in `wait` seconds, `own` of them
        its own compute: a request is never refused for its own size alone."""
        limit = self.limit(priority)
        if wait > max(limit, own):
            self.refused(now, priority)
            return Refusal(wait, limit)
        return None

    def refused(self, now: float, priority: Priority) -> None:
        """A request of `priority` was refused at `now` (here or before its body was read)."""
        if priority is Priority.INTERACTIVE:  # refused batch work alone is no overload
            self._last_refusal = now
