"""Conversions between units of length, mass and temperature."""

from unitconv.convert import category_of, convert, units
