"""Hidden acceptance suite for the `lrucache` package."""

import unittest

from lrucache import LRUCache


def filled(capacity, *keys):
    cache = LRUCache(capacity)
    for i, key in enumerate(keys):
        cache.put(key, i)
    return cache


class ConstructionTest(unittest.TestCase):
    def test_invalid_capacity(self):
        for bad in [0, -1, 1.5, True, "2", None]:
            with self.subTest(capacity=bad):
                with self.assertRaises(ValueError) as caught:
                    LRUCache(bad)
                self.assertEqual(str(caught.exception), "capacity must be a positive integer")

    def test_new_cache(self):
        cache = LRUCache(3)
        self.assertEqual(cache.capacity, 3)
        self.assertEqual(len(cache), 0)
        self.assertEqual(cache.keys(), [])
        self.assertEqual(cache.stats(), {"hits": 0, "misses": 0, "evictions": 0})

    def test_instances_are_independent(self):
        a, b = LRUCache(2), LRUCache(2)
        a.put("x", 1)
        a.get("x")
        self.assertNotIn("x", b)
        self.assertEqual(b.stats(), {"hits": 0, "misses": 0, "evictions": 0})


class GetPutTest(unittest.TestCase):
    def test_put_then_get(self):
        cache = LRUCache(2)
        self.assertIsNone(cache.put("a", 1))
        self.assertEqual(cache.get("a"), 1)
        self.assertEqual(len(cache), 1)

    def test_get_missing_key(self):
        cache = filled(2, "a")
        self.assertIsNone(cache.get("zzz"))
        self.assertEqual(cache.get("zzz", "fallback"), "fallback")

    def test_stored_falsy_values_are_returned(self):
        cache = LRUCache(3)
        cache.put("zero", 0)
        cache.put("none", None)
        self.assertEqual(cache.get("zero", 99), 0)
        self.assertIsNone(cache.get("none", "fallback"))
        self.assertIn("none", cache)

    def test_least_recently_used_is_evicted(self):
        cache = filled(2, "a", "b")
        self.assertEqual(cache.put("c", 3), "a")
        self.assertEqual(cache.keys(), ["b", "c"])
        self.assertNotIn("a", cache)
        self.assertEqual(len(cache), 2)

    def test_the_example(self):
        cache = LRUCache(2)
        cache.put("a", 1)
        cache.put("b", 2)
        cache.get("a")
        self.assertEqual(cache.put("c", 3), "b")
        self.assertEqual(cache.keys(), ["a", "c"])

    def test_put_existing_key_replaces_and_refreshes(self):
        cache = filled(2, "a", "b")
        self.assertIsNone(cache.put("a", "new"))
        self.assertEqual(cache.keys(), ["b", "a"])
        self.assertEqual(cache.peek("a"), "new")
        self.assertEqual(cache.put("c", 3), "b")
        self.assertEqual(len(cache), 2)

    def test_capacity_one(self):
        cache = LRUCache(1)
        self.assertIsNone(cache.put(1, "x"))
        self.assertEqual(cache.put(2, "y"), 1)
        self.assertIsNone(cache.put(2, "z"))
        self.assertEqual(cache.keys(), [2])
        self.assertEqual(cache.get(2), "z")

    def test_any_hashable_key(self):
        cache = LRUCache(3)
        cache.put((1, 2), "tuple")
        cache.put(7, "int")
        cache.put(frozenset({1}), "set")
        self.assertEqual(cache.get((1, 2)), "tuple")
        self.assertEqual(cache.keys(), [7, frozenset({1}), (1, 2)])


class RecencyTest(unittest.TestCase):
    def test_keys_from_least_to_most_recent(self):
        cache = filled(4, "a", "b", "c")
        cache.get("a")
        cache.put("d", 4)
        cache.get("c")
        self.assertEqual(cache.keys(), ["b", "a", "d", "c"])

    def test_peek_changes_nothing(self):
        cache = filled(2, "a", "b")
        self.assertEqual(cache.peek("a"), 0)
        self.assertEqual(cache.peek("zzz", "d"), "d")
        self.assertIsNone(cache.peek("zzz"))
        self.assertEqual(cache.keys(), ["a", "b"])
        self.assertEqual(cache.stats(), {"hits": 0, "misses": 0, "evictions": 0})
        self.assertEqual(cache.put("c", 2), "a")

    def test_contains_changes_nothing(self):
        cache = filled(2, "a", "b")
        self.assertIn("a", cache)
        self.assertNotIn("c", cache)
        self.assertEqual(cache.keys(), ["a", "b"])
        self.assertEqual(cache.stats(), {"hits": 0, "misses": 0, "evictions": 0})


class DeleteClearTest(unittest.TestCase):
    def test_delete(self):
        cache = filled(2, "a", "b")
        self.assertIs(cache.delete("a"), True)
        self.assertIs(cache.delete("a"), False)
        self.assertIs(cache.delete("zzz"), False)
        self.assertEqual(cache.keys(), ["b"])

    def test_delete_frees_room(self):
        cache = filled(2, "a", "b")
        cache.delete("b")
        self.assertIsNone(cache.put("c", 2))
        self.assertEqual(cache.keys(), ["a", "c"])
        self.assertEqual(cache.stats()["evictions"], 0)

    def test_clear_keeps_capacity_and_stats(self):
        cache = filled(2, "a", "b", "c")
        cache.get("b")
        cache.get("a")
        cache.clear()
        self.assertEqual(len(cache), 0)
        self.assertEqual(cache.keys(), [])
        self.assertEqual(cache.capacity, 2)
        self.assertEqual(cache.stats(), {"hits": 1, "misses": 1, "evictions": 1})
        cache.put("x", 1)
        cache.put("y", 2)
        self.assertEqual(cache.put("z", 3), "x")


class StatsTest(unittest.TestCase):
    def test_hits_and_misses(self):
        cache = filled(3, "a", "b")
        cache.get("a")
        cache.get("a")
        cache.get("b")
        cache.get("nope")
        self.assertEqual(cache.stats(), {"hits": 3, "misses": 1, "evictions": 0})

    def test_evictions_from_put_and_resize(self):
        cache = filled(2, "a", "b", "c", "d")
        self.assertEqual(cache.stats()["evictions"], 2)
        cache.resize(1)
        self.assertEqual(cache.stats(), {"hits": 0, "misses": 0, "evictions": 3})


class ResizeTest(unittest.TestCase):
    def test_shrinking_evicts_least_recent_first(self):
        cache = filled(4, "a", "b", "c", "d")
        cache.get("a")
        self.assertEqual(cache.resize(2), ["b", "c"])
        self.assertEqual(cache.keys(), ["d", "a"])
        self.assertEqual(cache.capacity, 2)
        self.assertEqual(cache.put("e", 5), "d")

    def test_growing_evicts_nothing(self):
        cache = filled(2, "a", "b")
        self.assertEqual(cache.resize(3), [])
        self.assertEqual(cache.capacity, 3)
        self.assertIsNone(cache.put("c", 3))
        self.assertEqual(cache.put("d", 4), "a")

    def test_resize_to_the_current_size(self):
        cache = filled(3, "a", "b", "c")
        self.assertEqual(cache.resize(3), [])
        self.assertEqual(cache.keys(), ["a", "b", "c"])

    def test_invalid_resize_changes_nothing(self):
        cache = filled(3, "a", "b", "c")
        for bad in [0, -2, 2.0, False]:
            with self.subTest(capacity=bad):
                with self.assertRaises(ValueError) as caught:
                    cache.resize(bad)
                self.assertEqual(str(caught.exception), "capacity must be a positive integer")
        self.assertEqual(cache.capacity, 3)
        self.assertEqual(cache.keys(), ["a", "b", "c"])


if __name__ == "__main__":
    unittest.main()
