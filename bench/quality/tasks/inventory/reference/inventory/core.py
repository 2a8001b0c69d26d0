"""The Inventory class."""


class InsufficientStock(Exception):
    """Raised when more units are removed than are in stock."""


def _check_quantity(quantity):
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise ValueError("quantity must be a positive integer")


class Inventory:
    def __init__(self):
        self._stock = {}  # name -> [quantity, unit price]

    def add(self, name, quantity, unit_price=None):
        if not name.strip():
            raise ValueError("name must not be empty")
        _check_quantity(quantity)
        if unit_price is not None and unit_price < 0:
            raise ValueError("unit price must not be negative")
        if name not in self._stock:
            if unit_price is None:
                raise ValueError("unit price required for a new item")
            self._stock[name] = [0, unit_price]
        item = self._stock[name]
        item[0] += quantity
        if unit_price is not None:
            item[1] = unit_price

    def remove(self, name, quantity):
        _check_quantity(quantity)
        item = self._stock[name]
        if quantity > item[0]:
            raise InsufficientStock(f"only {item[0]} {name} in stock")
        item[0] -= quantity

    def quantity(self, name):
        item = self._stock.get(name)
        if item is None:
            return 0
        return item[0]

    def price(self, name):
        return self._stock[name][1]

    def total_value(self):
        return sum(quantity * price for quantity, price in self._stock.values())

    def low_stock(self, threshold=5):
        return sorted(name for name, (quantity, _) in self._stock.items() if quantity < threshold)

    def items(self):
        return [(name, quantity, price) for name, (quantity, price) in sorted(self._stock.items())]

    def discontinue(self, name):
        del self._stock[name]

    def __len__(self):
        return len(self._stock)

    def __contains__(self, name):
        return name in self._stock
