"""Integer number-theory helpers."""

from numtheory.core import divisors, gcd, is_perfect, is_prime, lcm, prime_factors, primes_up_to, totient
