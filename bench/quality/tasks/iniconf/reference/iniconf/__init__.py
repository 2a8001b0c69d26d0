"""A strict parser and writer for INI-style configuration text."""

from iniconf.core import ParseError, dumps, get, get_bool, get_int, parse
