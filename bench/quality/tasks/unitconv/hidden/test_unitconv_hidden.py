"""Hidden acceptance suite for the `unitconv` library."""

import unittest

from unitconv import category_of, convert, units


class Case(unittest.TestCase):
    def assertClose(self, actual, expected):
        self.assertIsInstance(actual, float)
        self.assertAlmostEqual(actual, expected, delta=1e-9 * max(1.0, abs(expected)))


class LengthTest(Case):
    def test_miles_to_kilometres(self):
        self.assertClose(convert(1, "mi", "km"), 1.609344)

    def test_mile_in_feet_and_yards(self):
        self.assertClose(convert(1, "mi", "ft"), 5280.0)
        self.assertClose(convert(1, "mi", "yd"), 1760.0)

    def test_inches_feet_and_yards(self):
        self.assertClose(convert(12, "in", "ft"), 1.0)
        self.assertClose(convert(3, "ft", "yd"), 1.0)
        self.assertClose(convert(1, "in", "cm"), 2.54)

    def test_yard_and_foot_in_metres(self):
        self.assertClose(convert(1, "yd", "m"), 0.9144)
        self.assertClose(convert(10, "ft", "m"), 3.048)

    def test_metric_lengths(self):
        self.assertClose(convert(1, "m", "cm"), 100.0)
        self.assertClose(convert(1, "cm", "mm"), 10.0)
        self.assertClose(convert(2.5, "km", "m"), 2500.0)
        self.assertClose(convert(1, "mm", "km"), 1e-6)

    def test_negative_and_zero_lengths(self):
        self.assertClose(convert(-2, "m", "cm"), -200.0)
        self.assertClose(convert(0, "km", "in"), 0.0)


class MassTest(Case):
    def test_pound_is_sixteen_ounces(self):
        self.assertClose(convert(1, "lb", "oz"), 16.0)

    def test_kilogram_in_pounds(self):
        self.assertClose(convert(1, "kg", "lb"), 2.2046226218487757)

    def test_ounce_in_grams(self):
        self.assertClose(convert(1, "oz", "g"), 28.349523125)

    def test_tonne_and_milligrams(self):
        self.assertClose(convert(1, "t", "kg"), 1000.0)
        self.assertClose(convert(1, "g", "mg"), 1000.0)
        self.assertClose(convert(2500, "mg", "g"), 2.5)
        self.assertClose(convert(3, "t", "lb"), 3_000_000 / 453.59237)


class TemperatureTest(Case):
    def test_boiling_point(self):
        self.assertClose(convert(100, "C", "F"), 212.0)
        self.assertClose(convert(212, "F", "K"), 373.15)

    def test_freezing_point(self):
        self.assertClose(convert(32, "F", "C"), 0.0)
        self.assertClose(convert(0, "C", "K"), 273.15)
        self.assertClose(convert(273.15, "K", "C"), 0.0)

    def test_minus_forty_is_the_same_in_both_scales(self):
        self.assertClose(convert(-40, "C", "F"), -40.0)
        self.assertClose(convert(-40, "F", "C"), -40.0)

    def test_kelvin_to_fahrenheit(self):
        self.assertClose(convert(300, "K", "F"), 80.33)

    def test_body_temperature(self):
        self.assertClose(convert(98.6, "F", "C"), 37.0)

    def test_absolute_zero_is_valid(self):
        self.assertClose(convert(-273.15, "C", "K"), 0.0)
        self.assertAlmostEqual(convert(-459.67, "F", "K"), 0.0, delta=1e-9)
        self.assertClose(convert(0, "K", "F"), -459.67)
        self.assertClose(convert(0.5, "K", "C"), -272.65)

    def test_below_absolute_zero(self):
        for value, unit in [(-273.16, "C"), (-459.68, "F"), (-0.01, "K"), (-300, "C")]:
            with self.subTest(value=value, unit=unit):
                with self.assertRaises(ValueError) as caught:
                    convert(value, unit, "K")
                self.assertEqual(str(caught.exception), "below absolute zero")


class SameUnitTest(Case):
    def test_same_unit_returns_the_value_as_float(self):
        self.assertClose(convert(5, "K", "K"), 5.0)
        self.assertClose(convert(3, "kg", "kg"), 3.0)
        self.assertClose(convert(20, "C", "C"), 20.0)

    def test_integer_input_gives_a_float(self):
        self.assertIsInstance(convert(2, "km", "m"), float)
        self.assertIsInstance(convert(2, "g", "g"), float)


class ErrorTest(unittest.TestCase):
    def assertValueError(self, message, *args):
        with self.assertRaises(ValueError) as caught:
            convert(*args)
        self.assertEqual(str(caught.exception), message)

    def test_unknown_units(self):
        self.assertValueError("unknown unit: furlong", 1, "furlong", "m")
        self.assertValueError("unknown unit: stone", 1, "kg", "stone")

    def test_unit_symbols_are_case_sensitive(self):
        self.assertValueError("unknown unit: KM", 1, "KM", "m")
        self.assertValueError("unknown unit: c", 1, "c", "F")

    def test_different_categories(self):
        self.assertValueError("cannot convert kg to m", 1, "kg", "m")
        self.assertValueError("cannot convert C to mm", 1, "C", "mm")
        self.assertValueError("cannot convert mi to lb", 1, "mi", "lb")

    def test_non_numbers_are_a_type_error(self):
        for value in ["10", None, True, [1]]:
            with self.subTest(value=value):
                with self.assertRaises(TypeError):
                    convert(value, "m", "cm")


class CategoryTest(unittest.TestCase):
    def test_category_of_every_unit(self):
        for unit in ["mm", "cm", "m", "km", "in", "ft", "yd", "mi"]:
            self.assertEqual(category_of(unit), "length", unit)
        for unit in ["mg", "g", "kg", "t", "oz", "lb"]:
            self.assertEqual(category_of(unit), "mass", unit)
        for unit in ["C", "F", "K"]:
            self.assertEqual(category_of(unit), "temperature", unit)

    def test_category_of_unknown_unit(self):
        with self.assertRaises(ValueError) as caught:
            category_of("parsec")
        self.assertEqual(str(caught.exception), "unknown unit: parsec")

    def test_units_sorted(self):
        self.assertEqual(units("length"), ["cm", "ft", "in", "km", "m", "mi", "mm", "yd"])
        self.assertEqual(units("mass"), ["g", "kg", "lb", "mg", "oz", "t"])
        self.assertEqual(units("temperature"), ["C", "F", "K"])

    def test_units_of_unknown_category(self):
        with self.assertRaises(ValueError) as caught:
            units("volume")
        self.assertEqual(str(caught.exception), "unknown category: volume")


if __name__ == "__main__":
    unittest.main()
