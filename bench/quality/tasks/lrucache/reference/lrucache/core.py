"""The LRUCache class."""

from collections import OrderedDict


def _check_capacity(capacity):
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError("capacity must be a positive integer")


class LRUCache:
    def __init__(self, capacity):
        _check_capacity(capacity)
        self._capacity = capacity
        self._data = OrderedDict()  # least recently used first
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @property
    def capacity(self):
        return self._capacity

    def get(self, key, default=None):
        if key not in self._data:
            self._misses += 1
            return default
        self._hits += 1
        self._data.move_to_end(key)
        return self._data[key]

    def peek(self, key, default=None):
        return self._data.get(key, default)

    def put(self, key, value):
        if key in self._data:
            self._data.move_to_end(key)
        self._data[key] = value
        if len(self._data) > self._capacity:
            return self._evict()
        return None

    def _evict(self):
        key, _ = self._data.popitem(last=False)
        self._evictions += 1
        return key

    def delete(self, key):
        if key in self._data:
            del self._data[key]
            return True
        return False

    def resize(self, capacity):
        _check_capacity(capacity)
        self._capacity = capacity
        evicted = []
        while len(self._data) > capacity:
            evicted.append(self._evict())
        return evicted

    def keys(self):
        return list(self._data)

    def clear(self):
        self._data.clear()

    def stats(self):
        return {"hits": self._hits, "misses": self._misses, "evictions": self._evictions}

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        return key in self._data
