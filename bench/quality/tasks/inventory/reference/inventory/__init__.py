"""Stock tracking for a small shop."""

from inventory.core import InsufficientStock, Inventory
