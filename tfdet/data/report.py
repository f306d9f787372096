"""What a data reader dropped or repaired, counted by reason, for one summary at start-up.

A reader never drops or repairs a record silently: it calls `DataReport.add(kind, reason, example)`,
where `kind` says what was done ("dropped_annotations", "corrupt_images", ...: the keys of
`CocoReader.stats`), `reason` why ("unknown category_id"), and `example` names the record ("annotation
id 7 in 000012.jpg"). `summary()` is one message: the counts by kind and reason, each with its first few
examples. A data set with nothing usable raises `DataError` with that summary.
"""

import collections
import logging

log = logging.getLogger(__name__)

MAX_EXAMPLES = 3
# Kinds that are no problem of the data: the reader chose to skip them, or counts them at run time.
NOT_PROBLEMS = ("skipped_empty_images", "box_masks")


class DataError(ValueError):
    """The data set has nothing usable; the message holds the reader's summary."""


class DataReport:
    """Counts of dropped or repaired records by kind and reason, with the first examples of each."""

    def __init__(self, source):
        self.source = source
        self.counts = collections.Counter()   # kind -> count (a reader's `stats`)
        self.reasons = collections.Counter()  # (kind, reason) -> count
        self.examples = collections.defaultdict(list)
        self.images = 0                       # image entries read / usable, set by the reader
        self.usable = 0

    def add(self, kind, reason, example):
        self.counts[kind] += 1
        self.reasons[kind, reason] += 1
        if len(self.examples[kind, reason]) < MAX_EXAMPLES:
            self.examples[kind, reason].append(example)
        log.debug("%s: %s: %s (%s)", self.source, kind.replace("_", " "), reason, example)

    def problems(self):
        """{kind: count} of the kinds that are problems of the data (see NOT_PROBLEMS)."""
        return {k: v for k, v in self.counts.items() if v and k not in NOT_PROBLEMS}

    def examples_of(self, kind):
        """The recorded examples of `kind`, over all its reasons."""
        return [e for (k, _), found in self.examples.items() if k == kind for e in found]

    def summary(self, one_line=False):
        """One message: usable images, then a line per kind with its count by reason and examples (all on
        one line with `one_line`, for an error message)."""
        lines = [f"{self.source}: {self.usable} of {self.images} images usable"]
        for kind, count in self.counts.items():
            if not count:
                continue
            parts = []
            for (k, reason), n in self.reasons.items():
                if k == kind:
                    shown = self.examples[k, reason]
                    more = ", ..." if n > len(shown) else ""
                    parts.append(f"{n} {reason} (e.g. {', '.join(shown)}{more})")
            lines.append(f"  {count} {kind.replace('_', ' ')}: " + "; ".join(parts))
        return ". ".join(line.strip() for line in lines) if one_line else "\n".join(lines)

    def log(self):
        """Logs the summary: a warning when the data has problems, else at info level."""
        (log.warning if self.problems() else log.info)("%s", self.summary())
