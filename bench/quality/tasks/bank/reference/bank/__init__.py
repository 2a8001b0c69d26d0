"""A small bank: accounts, deposits, withdrawals, transfers."""

from bank.core import AccountClosed, Bank, InsufficientFunds, UnknownAccount
