"""The statistics functions."""

import math
from collections import Counter


def _values(data):
    values = list(data)
    if not values:
        raise ValueError("data must not be empty")
    for x in values:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise TypeError(f"not a number: {x!r}")
    return values


def mean(data):
    values = _values(data)
    return sum(values) / len(values)


def median(data):
    values = sorted(_values(data))
    middle = len(values) // 2
    if len(values) % 2 == 1:
        return float(values[middle])
    return (values[middle - 1] + values[middle]) / 2


def modes(data):
    counts = Counter(_values(data))
    top = max(counts.values())
    return sorted(x for x, count in counts.items() if count == top)


def variance(data, sample=True):
    values = _values(data)
    n = len(values)
    if sample and n < 2:
        raise ValueError("sample variance needs at least two values")
    m = sum(values) / n
    squares = sum((x - m) ** 2 for x in values)
    return squares / (n - 1 if sample else n)


def stdev(data, sample=True):
    return math.sqrt(variance(data, sample))


def percentile(data, p):
    values = sorted(_values(data))
    if not 0 <= p <= 100:
        raise ValueError("p must be between 0 and 100")
    rank = p / 100 * (len(values) - 1)
    low = math.floor(rank)
    if low == len(values) - 1:
        return float(values[low])
    return values[low] + (values[low + 1] - values[low]) * (rank - low)


def zscores(data):
    values = _values(data)
    sd = stdev(values, sample=False)
    if sd == 0:
        raise ValueError("all values are equal")
    m = mean(values)
    return [(x - m) / sd for x in values]


def summary(data):
    values = _values(data)
    return {
        "count": len(values),
        "min": min(values),
        "max": max(values),
        "mean": mean(values),
        "median": median(values),
    }
