"""The number-theory functions."""

import math


def _check_ints(*values):
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an int, got {type(value).__name__}")


def _check_positive(n):
    _check_ints(n)
    if n < 1:
        raise ValueError("n must be positive")


def is_prime(n):
    _check_ints(n)
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def primes_up_to(n):
    _check_ints(n)
    if n < 2:
        return []
    sieve = [True] * (n + 1)
    sieve[0] = sieve[1] = False
    for i in range(2, math.isqrt(n) + 1):
        if sieve[i]:
            for multiple in range(i * i, n + 1, i):
                sieve[multiple] = False
    return [i for i, prime in enumerate(sieve) if prime]


def prime_factors(n):
    _check_positive(n)
    factors = []
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors


def gcd(a, b):
    _check_ints(a, b)
    a, b = abs(a), abs(b)
    while b:
        a, b = b, a % b
    return a


def lcm(a, b):
    divisor = gcd(a, b)  # checks the arguments
    if divisor == 0:
        return 0
    return abs(a * b) // divisor


def divisors(n):
    _check_positive(n)
    return [d for d in range(1, n + 1) if n % d == 0]


def totient(n):
    _check_positive(n)
    return sum(1 for k in range(1, n + 1) if gcd(k, n) == 1)


def is_perfect(n):
    return sum(divisors(n)) - n == n
