"""Descriptive statistics without numpy."""

from quickstats.core import mean, median, modes, percentile, stdev, summary, variance, zscores
