"""A least-recently-used cache with statistics."""

from lrucache.core import LRUCache
