"""Hidden acceptance suite for the `numtheory` library."""

import unittest

from numtheory import divisors, gcd, is_perfect, is_prime, lcm, prime_factors, primes_up_to, totient

PRIMES_BELOW_100 = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61,
                    67, 71, 73, 79, 83, 89, 97]


class Case(unittest.TestCase):
    def assertInt(self, actual, expected):
        self.assertIs(type(actual), int)
        self.assertEqual(actual, expected)

    def assertInts(self, actual, expected):
        self.assertIsInstance(actual, list)
        self.assertEqual(actual, expected)
        for item in actual:
            self.assertIs(type(item), int)

    def assertNotPositive(self, function, n):
        with self.assertRaises(ValueError) as caught:
            function(n)
        self.assertEqual(str(caught.exception), "n must be positive")


class IsPrimeTest(Case):
    def test_small_primes(self):
        for n in [2, 3, 5, 7, 11, 13, 97]:
            self.assertIs(is_prime(n), True, n)

    def test_small_composites(self):
        for n in [4, 6, 8, 9, 15, 21, 25, 49, 91, 100]:
            self.assertIs(is_prime(n), False, n)

    def test_below_two_is_not_prime(self):
        for n in [1, 0, -1, -7]:
            self.assertIs(is_prime(n), False, n)

    def test_larger_numbers(self):
        self.assertIs(is_prime(7919), True)
        self.assertIs(is_prime(7917), False)
        self.assertIs(is_prime(10403), False)  # 101 * 103


class PrimesUpToTest(Case):
    def test_up_to_100(self):
        self.assertInts(primes_up_to(100), PRIMES_BELOW_100)

    def test_bound_is_included(self):
        self.assertInts(primes_up_to(2), [2])
        self.assertInts(primes_up_to(3), [2, 3])
        self.assertInts(primes_up_to(13), [2, 3, 5, 7, 11, 13])

    def test_composite_bounds(self):
        self.assertInts(primes_up_to(4), [2, 3])
        self.assertInts(primes_up_to(25), [2, 3, 5, 7, 11, 13, 17, 19, 23])
        self.assertInts(primes_up_to(49), PRIMES_BELOW_100[:15])

    def test_below_two(self):
        for n in [1, 0, -5]:
            self.assertEqual(primes_up_to(n), [], n)

    def test_agrees_with_is_prime(self):
        self.assertEqual(primes_up_to(500), [n for n in range(500 + 1) if is_prime(n)])


class PrimeFactorsTest(Case):
    def test_examples(self):
        self.assertInts(prime_factors(12), [2, 2, 3])
        self.assertInts(prime_factors(360), [2, 2, 2, 3, 3, 5])
        self.assertInts(prime_factors(97), [97])
        self.assertInts(prime_factors(1), [])

    def test_squares_and_large_prime_factors(self):
        self.assertInts(prime_factors(4), [2, 2])
        self.assertInts(prime_factors(49), [7, 7])
        self.assertInts(prime_factors(2 * 7919), [2, 7919])
        self.assertInts(prime_factors(1024), [2] * 10)

    def test_product_is_n(self):
        for n in range(1, 300):
            product = 1
            for f in prime_factors(n):
                product *= f
            self.assertEqual(product, n)

    def test_not_positive(self):
        self.assertNotPositive(prime_factors, 0)
        self.assertNotPositive(prime_factors, -12)


class GcdLcmTest(Case):
    def test_gcd(self):
        self.assertInt(gcd(12, 18), 6)
        self.assertInt(gcd(17, 5), 1)
        self.assertInt(gcd(100, 10), 10)

    def test_gcd_with_negatives_and_zero(self):
        self.assertInt(gcd(-12, 18), 6)
        self.assertInt(gcd(12, -18), 6)
        self.assertInt(gcd(-4, -6), 2)
        self.assertInt(gcd(0, 5), 5)
        self.assertInt(gcd(-5, 0), 5)
        self.assertInt(gcd(0, 0), 0)

    def test_lcm(self):
        self.assertInt(lcm(4, 6), 12)
        self.assertInt(lcm(3, 5), 15)
        self.assertInt(lcm(7, 7), 7)
        self.assertInt(lcm(-4, 6), 12)
        self.assertInt(lcm(4, -6), 12)
        self.assertInt(lcm(1, 9), 9)
        self.assertInt(lcm(9, 1), 9)

    def test_lcm_with_zero(self):
        self.assertInt(lcm(0, 5), 0)
        self.assertInt(lcm(5, 0), 0)
        self.assertInt(lcm(0, 0), 0)


class DivisorsTest(Case):
    def test_divisors(self):
        self.assertInts(divisors(12), [1, 2, 3, 4, 6, 12])
        self.assertInts(divisors(1), [1])
        self.assertInts(divisors(13), [1, 13])
        self.assertInts(divisors(36), [1, 2, 3, 4, 6, 9, 12, 18, 36])

    def test_not_positive(self):
        self.assertNotPositive(divisors, 0)
        self.assertNotPositive(divisors, -6)


class TotientTest(Case):
    def test_totient(self):
        expected = {1: 1, 2: 1, 6: 2, 9: 6, 10: 4, 12: 4, 13: 12, 36: 12, 97: 96}
        for n, phi in expected.items():
            self.assertInt(totient(n), phi)

    def test_not_positive(self):
        self.assertNotPositive(totient, 0)
        self.assertNotPositive(totient, -3)


class PerfectTest(Case):
    def test_perfect_numbers(self):
        for n in [6, 28, 496, 8128]:
            self.assertIs(is_perfect(n), True, n)

    def test_other_numbers(self):
        for n in [1, 2, 12, 27, 100, 495]:
            self.assertIs(is_perfect(n), False, n)

    def test_not_positive(self):
        self.assertNotPositive(is_perfect, 0)
        self.assertNotPositive(is_perfect, -6)


class TypeTest(unittest.TestCase):
    def test_non_integers_are_rejected(self):
        calls = [is_prime, primes_up_to, prime_factors, divisors, totient, is_perfect,
                 lambda x: gcd(x, 4), lambda x: gcd(4, x), lambda x: lcm(x, 4), lambda x: lcm(4, x),
                 lambda x: lcm(x, 0), lambda x: lcm(0, x)]
        for bad in [7.0, True, "7", None]:
            for call in calls:
                with self.subTest(call=call, value=bad):
                    with self.assertRaises(TypeError):
                        call(bad)


if __name__ == "__main__":
    unittest.main()
