"""Hidden acceptance suite for the `inventory` package."""

import unittest

from inventory import InsufficientStock, Inventory


class InventoryTest(unittest.TestCase):
    def setUp(self):
        self.inv = Inventory()

    def stocked(self):
        self.inv.add("apple", 10, 0.5)
        self.inv.add("pear", 4, 0.75)
        self.inv.add("fig", 5, 2)
        return self.inv

    def assertValueError(self, message, call, *args):
        with self.assertRaises(ValueError) as caught:
            call(*args)
        self.assertEqual(str(caught.exception), message)

    # a new inventory

    def test_new_inventory_is_empty(self):
        self.assertEqual(len(self.inv), 0)
        self.assertEqual(self.inv.items(), [])
        self.assertEqual(self.inv.total_value(), 0)
        self.assertEqual(self.inv.low_stock(), [])
        self.assertNotIn("apple", self.inv)

    def test_instances_are_independent(self):
        self.inv.add("apple", 1, 1.0)
        other = Inventory()
        self.assertEqual(len(other), 0)
        self.assertNotIn("apple", other)

    # add

    def test_add_new_item(self):
        self.inv.add("apple", 10, 0.5)
        self.assertEqual(self.inv.quantity("apple"), 10)
        self.assertEqual(self.inv.price("apple"), 0.5)
        self.assertIn("apple", self.inv)
        self.assertEqual(len(self.inv), 1)

    def test_add_to_existing_item_keeps_the_price(self):
        self.inv.add("apple", 10, 0.5)
        self.inv.add("apple", 3)
        self.assertEqual(self.inv.quantity("apple"), 13)
        self.assertEqual(self.inv.price("apple"), 0.5)
        self.assertEqual(len(self.inv), 1)

    def test_add_with_a_new_price_replaces_it(self):
        self.inv.add("apple", 10, 0.5)
        self.inv.add("apple", 1, 0.6)
        self.assertEqual(self.inv.quantity("apple"), 11)
        self.assertEqual(self.inv.price("apple"), 0.6)

    def test_free_items_are_allowed(self):
        self.inv.add("sticker", 100, 0)
        self.assertEqual(self.inv.price("sticker"), 0)
        self.inv.add("sticker", 1, 0)
        self.assertEqual(self.inv.quantity("sticker"), 101)

    def test_new_item_needs_a_price(self):
        self.assertValueError("unit price required for a new item", self.inv.add, "apple", 3)
        self.assertNotIn("apple", self.inv)
        self.assertEqual(len(self.inv), 0)

    def test_negative_price_is_rejected(self):
        self.assertValueError("unit price must not be negative", self.inv.add, "apple", 3, -0.01)
        self.assertNotIn("apple", self.inv)
        self.inv.add("pear", 2, 1.0)
        self.assertValueError("unit price must not be negative", self.inv.add, "pear", 2, -1)
        self.assertEqual((self.inv.quantity("pear"), self.inv.price("pear")), (2, 1.0))

    def test_invalid_quantities_are_rejected(self):
        self.inv.add("apple", 5, 1.0)
        for bad in [0, -1, 1.5, True, "3"]:
            with self.subTest(quantity=bad):
                self.assertValueError("quantity must be a positive integer", self.inv.add, "apple", bad, 1.0)
                self.assertValueError("quantity must be a positive integer", self.inv.remove, "apple", bad)
        self.assertEqual(self.inv.quantity("apple"), 5)

    def test_empty_names_are_rejected(self):
        for name in ["", "   "]:
            self.assertValueError("name must not be empty", self.inv.add, name, 1, 1.0)
        self.assertEqual(len(self.inv), 0)

    def test_names_are_case_sensitive(self):
        self.inv.add("Apple", 1, 1.0)
        self.inv.add("apple", 2, 2.0)
        self.assertEqual(len(self.inv), 2)
        self.assertEqual(self.inv.quantity("Apple"), 1)
        self.assertEqual(self.inv.quantity("apple"), 2)
        self.assertEqual(self.inv.quantity("APPLE"), 0)

    # remove

    def test_remove_takes_units_out(self):
        self.stocked().remove("apple", 3)
        self.assertEqual(self.inv.quantity("apple"), 7)
        self.inv.remove("apple", 1)
        self.assertEqual(self.inv.quantity("apple"), 6)

    def test_remove_everything_keeps_the_item(self):
        self.stocked().remove("pear", 4)
        self.assertEqual(self.inv.quantity("pear"), 0)
        self.assertIn("pear", self.inv)
        self.assertEqual(len(self.inv), 3)
        self.assertEqual(self.inv.price("pear"), 0.75)

    def test_remove_more_than_in_stock(self):
        self.stocked()
        with self.assertRaises(InsufficientStock) as caught:
            self.inv.remove("pear", 5)
        self.assertEqual(str(caught.exception), "only 4 pear in stock")
        self.assertEqual(self.inv.quantity("pear"), 4)
        self.assertTrue(issubclass(InsufficientStock, Exception))

    def test_remove_from_empty_stock(self):
        self.inv.add("fig", 1, 1.0)
        self.inv.remove("fig", 1)
        with self.assertRaises(InsufficientStock) as caught:
            self.inv.remove("fig", 1)
        self.assertEqual(str(caught.exception), "only 0 fig in stock")

    def test_unknown_names(self):
        self.stocked()
        with self.assertRaises(KeyError):
            self.inv.remove("kiwi", 1)
        with self.assertRaises(KeyError):
            self.inv.price("kiwi")
        with self.assertRaises(KeyError):
            self.inv.discontinue("kiwi")
        self.assertEqual(self.inv.quantity("kiwi"), 0)
        self.assertEqual(len(self.inv), 3)

    # reports

    def test_total_value(self):
        self.stocked()
        self.assertAlmostEqual(self.inv.total_value(), 10 * 0.5 + 4 * 0.75 + 5 * 2)

    def test_total_value_follows_changes(self):
        self.stocked()
        self.inv.remove("fig", 5)
        self.inv.add("apple", 2, 1.0)
        self.assertAlmostEqual(self.inv.total_value(), 12 * 1.0 + 4 * 0.75)

    def test_low_stock_default_threshold(self):
        self.stocked()
        self.inv.add("kiwi", 1, 0.2)
        self.inv.remove("kiwi", 1)
        self.assertEqual(self.inv.low_stock(), ["kiwi", "pear"])

    def test_low_stock_custom_threshold(self):
        self.stocked()
        self.assertEqual(self.inv.low_stock(6), ["fig", "pear"])
        self.assertEqual(self.inv.low_stock(threshold=11), ["apple", "fig", "pear"])
        self.assertEqual(self.inv.low_stock(4), [])

    def test_items_sorted_by_name(self):
        self.stocked()
        self.assertEqual(self.inv.items(), [("apple", 10, 0.5), ("fig", 5, 2), ("pear", 4, 0.75)])

    def test_discontinue(self):
        self.stocked().discontinue("fig")
        self.assertNotIn("fig", self.inv)
        self.assertEqual(len(self.inv), 2)
        self.assertEqual(self.inv.quantity("fig"), 0)
        self.assertValueError("unit price required for a new item", self.inv.add, "fig", 1)


if __name__ == "__main__":
    unittest.main()
