"""Conversion tables and functions."""

# Size of each unit in the category's base unit (metre, gram).
FACTORS = {
    "length": {
        "mm": 0.001,
        "cm": 0.01,
        "m": 1.0,
        "km": 1000.0,
        "in": 0.0254,
        "ft": 0.3048,
        "yd": 0.9144,
        "mi": 1609.344,
    },
    "mass": {
        "mg": 0.001,
        "g": 1.0,
        "kg": 1000.0,
        "t": 1000000.0,
        "oz": 28.349523125,
        "lb": 453.59237,
    },
}

# Absolute zero in each temperature unit.
ABSOLUTE_ZERO = {"C": -273.15, "F": -459.67, "K": 0.0}


def category_of(unit):
    for category, table in FACTORS.items():
        if unit in table:
            return category
    if unit in ABSOLUTE_ZERO:
        return "temperature"
    raise ValueError(f"unknown unit: {unit}")


def units(category):
    if category == "temperature":
        return sorted(ABSOLUTE_ZERO)
    if category not in FACTORS:
        raise ValueError(f"unknown category: {category}")
    return sorted(FACTORS[category])


def _to_celsius(value, unit):
    if unit == "F":
        return (value - 32) * 5 / 9
    if unit == "K":
        return value - 273.15
    return value


def _from_celsius(celsius, unit):
    if unit == "F":
        return celsius * 9 / 5 + 32
    if unit == "K":
        return celsius + 273.15
    return celsius


def convert(value, from_unit, to_unit):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a number, not {type(value).__name__}")
    source = category_of(from_unit)
    if source != category_of(to_unit):
        raise ValueError(f"cannot convert {from_unit} to {to_unit}")
    if source == "temperature":
        if value < ABSOLUTE_ZERO[from_unit]:
            raise ValueError("below absolute zero")
        return float(_from_celsius(_to_celsius(value, from_unit), to_unit))
    table = FACTORS[source]
    return float(value * table[from_unit] / table[to_unit])
