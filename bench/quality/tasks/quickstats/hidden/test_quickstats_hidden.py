"""Hidden acceptance suite for the `quickstats` library."""

import math
import unittest

from quickstats import mean, median, modes, percentile, stdev, summary, variance, zscores

EVERY_FUNCTION = [
    ("mean", lambda d: mean(d)),
    ("median", lambda d: median(d)),
    ("modes", lambda d: modes(d)),
    ("variance", lambda d: variance(d)),
    ("population variance", lambda d: variance(d, sample=False)),
    ("stdev", lambda d: stdev(d)),
    ("percentile", lambda d: percentile(d, 50)),
    ("zscores", lambda d: zscores(d)),
    ("summary", lambda d: summary(d)),
]


class Case(unittest.TestCase):
    def assertClose(self, actual, expected):
        self.assertIsInstance(actual, float)
        self.assertAlmostEqual(actual, expected, delta=1e-9)

    def assertValueError(self, message, function, *args, **kwargs):
        with self.assertRaises(ValueError) as caught:
            function(*args, **kwargs)
        self.assertEqual(str(caught.exception), message)


class MeanTest(Case):
    def test_mean_of_integers(self):
        self.assertClose(mean([1, 2, 3, 4]), 2.5)

    def test_mean_of_floats_and_negatives(self):
        self.assertClose(mean([-1.5, 0.5, 4.0]), 1.0)
        self.assertClose(mean((7,)), 7.0)


class MedianTest(Case):
    def test_median_odd_count(self):
        self.assertClose(median([5, 1, 3]), 3.0)
        self.assertClose(median([9]), 9.0)

    def test_median_even_count(self):
        self.assertClose(median([4, 1, 3, 2]), 2.5)
        self.assertClose(median([10, 20]), 15.0)

    def test_median_does_not_modify_the_data(self):
        data = [3, 1, 2, 5, 4]
        median(data)
        percentile(data, 30)
        summary(data)
        self.assertEqual(data, [3, 1, 2, 5, 4])


class ModesTest(Case):
    def test_single_mode(self):
        self.assertEqual(modes([1, 2, 2, 3]), [2])

    def test_several_modes_ascending(self):
        self.assertEqual(modes([5, 1, 5, 1, 3]), [1, 5])

    def test_all_values_unique(self):
        self.assertEqual(modes([3, -1, 2.5]), [-1, 2.5, 3])


class VarianceTest(Case):
    DATA = [2, 4, 4, 4, 5, 5, 7, 9]

    def test_sample_variance_is_the_default(self):
        self.assertClose(variance(self.DATA), 32 / 7)
        self.assertClose(variance(self.DATA, sample=True), 32 / 7)

    def test_population_variance(self):
        self.assertClose(variance(self.DATA, sample=False), 4.0)

    def test_two_values(self):
        self.assertClose(variance([1, 3]), 2.0)
        self.assertClose(variance([1, 3], sample=False), 1.0)

    def test_single_value(self):
        self.assertClose(variance([5], sample=False), 0.0)
        self.assertClose(stdev([5], sample=False), 0.0)
        self.assertValueError("sample variance needs at least two values", variance, [5])
        self.assertValueError("sample variance needs at least two values", stdev, [5])

    def test_stdev(self):
        self.assertClose(stdev(self.DATA, sample=False), 2.0)
        self.assertClose(stdev(self.DATA), math.sqrt(32 / 7))
        self.assertClose(stdev([1.5, 2.5, 3.5]), 1.0)


class PercentileTest(Case):
    def test_ends(self):
        self.assertClose(percentile([3, 1, 2], 0), 1.0)
        self.assertClose(percentile([3, 1, 2], 100), 3.0)

    def test_interpolation(self):
        self.assertClose(percentile([1, 2, 3, 4], 25), 1.75)
        self.assertClose(percentile([10, 20, 30, 40, 50], 90), 46.0)
        self.assertClose(percentile([50, 10, 40, 20, 30], 10), 14.0)

    def test_fiftieth_is_the_median(self):
        self.assertClose(percentile([4, 1, 3, 2], 50), 2.5)
        self.assertClose(percentile([7, 1, 3], 50), 3.0)

    def test_one_value(self):
        self.assertClose(percentile([8], 0), 8.0)
        self.assertClose(percentile([8], 37.5), 8.0)
        self.assertClose(percentile([8], 100), 8.0)

    def test_p_out_of_range(self):
        for p in (-1, -0.001, 100.5, 1000):
            with self.subTest(p=p):
                self.assertValueError("p must be between 0 and 100", percentile, [1, 2, 3], p)


class ZscoresTest(Case):
    def test_zscores(self):
        result = zscores([2, 4, 4, 4, 5, 5, 7, 9])
        self.assertEqual(len(result), 8)
        for actual, expected in zip(result, [-1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 1.0, 2.0]):
            self.assertClose(actual, expected)

    def test_zscores_keep_the_order(self):
        result = zscores([3, 1])
        self.assertClose(result[0], 1.0)
        self.assertClose(result[1], -1.0)

    def test_all_values_equal(self):
        self.assertValueError("all values are equal", zscores, [3, 3, 3])
        self.assertValueError("all values are equal", zscores, [3])


class SummaryTest(Case):
    def test_summary(self):
        result = summary([4, 8, 1, 5])
        self.assertEqual(set(result), {"count", "min", "max", "mean", "median"})
        self.assertEqual(result["count"], 4)
        self.assertEqual(result["min"], 1)
        self.assertEqual(result["max"], 8)
        self.assertClose(result["mean"], 4.5)
        self.assertClose(result["median"], 4.5)


class ErrorTest(Case):
    def test_empty_data(self):
        for name, function in EVERY_FUNCTION:
            with self.subTest(function=name):
                self.assertValueError("data must not be empty", function, [])
                self.assertValueError("data must not be empty", function, ())

    def test_non_numbers(self):
        for bad in (["1", 2], [1, None], [True, 1], [1, 2, [3]]):
            for name, function in EVERY_FUNCTION:
                with self.subTest(function=name, data=bad):
                    with self.assertRaises(TypeError):
                        function(bad)

    def test_tuples_are_accepted(self):
        self.assertClose(mean((1, 2)), 1.5)
        self.assertEqual(modes((2, 1, 2)), [2])
        self.assertClose(percentile((1, 3), 50), 2.0)


if __name__ == "__main__":
    unittest.main()
